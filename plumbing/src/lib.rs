//! What Sourcegram's stores and hosts share that has nothing to do with HTTP:
//!
//! - [`pg`]: the PostgreSQL connection pool, and versions to and from SQL.
//! - [`batch`]: group commit, so concurrent writes share a statement.
//! - [`config`]: configuration from the environment.
//!
//! The event store and the read model depend on this crate and not on
//! `platform`, so neither links an HTTP server.
#![forbid(unsafe_code)]

pub mod batch;
pub mod config;
pub mod pg;
