//! Sourcegram's read model, owned in one place. The projection host writes it
//! (live and by replay), the query host reads it; both take its tables, rows
//! and statements from here, so a column is added in this crate alone.
//!
//! - [`schema`]: the tables, and [`SchemaName`], the names of the schemas
//!   they live in.
//! - [`rows`]: a post's rows, decoded from PostgreSQL and folded from events.
//! - [`live`]: how each event changes the tables, as the projector applies it.
#![forbid(unsafe_code)]

pub mod live;
pub mod rows;
pub mod schema;

pub use schema::SchemaName;
