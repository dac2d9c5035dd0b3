//! Sourcegram's domain: the Post aggregate and everything it speaks in.
//!
//! - [`values`]: value objects that parse raw input once (`UserId`, `Message`, ...).
//! - [`time`]: a plain UTC timestamp; the domain never reads a clock.
//! - [`event`]: `PostEvent`, its stable type names, schemas and upcasting.
//! - [`envelope`]: the one JSON envelope events travel in (store, Kafka, replay).
//! - [`post`]: the aggregate: `decide` holds every rule, `apply` folds events.
//! - [`error`]: `DomainError`, the closed set of ways a command is refused.
//!
//! **Architecture invariant:** this crate does no I/O and has no clock and no
//! randomness. Time and new ids arrive as arguments, so every rule can be tested
//! with plain values.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod error;
pub mod event;
pub mod likes;
pub mod post;
pub mod time;
pub mod values;

pub use envelope::{EventEnvelope, EventMetadata, STREAM_TYPE_POST};
pub use error::{DomainError, ValidationError};
pub use event::{DecodeError, PostEvent};
pub use post::{
    CommandContext, Comment, Post, PostCommand, SNAPSHOT_SCHEMA, SnapshotError, apply, decide,
};
pub use time::Timestamp;
pub use values::{CommentId, CommentText, Message, PostId, UserId, Version};
