//! The closed set of reasons a command is refused; hosts map each to a status.

use crate::values::Version;

/// Why raw input could not become a value object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    /// The input's name as a client knows it (`message`, `text`, `user`, ...).
    pub field: &'static str,
    /// A sentence a client can act on.
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Every way the Post aggregate refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The input breaks a value rule (400).
    #[error("invalid input: {0}")]
    Validation(#[from] ValidationError),
    /// The actor may not do this to this post or comment (403).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// The post or comment does not exist (404).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The post was deleted; nothing can be done to it any more (410).
    #[error("the post was deleted")]
    Gone,
    /// The command contradicts the stream's state, e.g. creating a post twice (409).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The post is not at the version the actor expected (412).
    #[error("the post is at version {current}, not the expected one")]
    PreconditionFailed { current: Version },
}
