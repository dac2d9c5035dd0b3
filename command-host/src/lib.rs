//! Sourcegram's command host: the write side.
//!
//! - [`event_store`]: the `EventStore` port (PostgreSQL and MongoDB adapters).
//! - [`records`]: the `CommandRecords` port (PostgreSQL and SQL Server adapters).
//! - [`pg`]: the PostgreSQL connection pool every PostgreSQL adapter uses.
//! - [`testkit`]: fresh schemas and topics on the real services, for tests.
#![forbid(unsafe_code)]

pub mod event_store;
pub mod pg;
pub mod records;
pub mod testkit;
