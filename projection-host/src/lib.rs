//! Sourcegram's projection host: builds the PostgreSQL read model from Kafka.
//!
//! - [`schema`]: the read-model and notification tables.
#![forbid(unsafe_code)]

pub mod schema;
