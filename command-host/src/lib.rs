//! Sourcegram's command host: the write side.
//!
//! - [`http`]: the hyper accept loop, problem+json, JSON bodies (shared by all hosts).
//! - [`auth`]: HMAC-signed bearer tokens (shared with the query host).
//! - [`metrics`]: a small Prometheus registry (shared by all hosts).
//! - [`clock`]: where the hosts read the time.
//! - [`event_store`]: the `EventStore` port (PostgreSQL and MongoDB adapters).
//! - [`records`]: the `CommandRecords` port (PostgreSQL and SQL Server adapters).
//! - [`pg`]: the PostgreSQL connection pool every PostgreSQL adapter uses.
//! - [`testkit`]: fresh schemas and topics on the real services, for tests.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod event_store;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod records;
pub mod testkit;
