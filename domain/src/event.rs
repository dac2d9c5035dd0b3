//! The Post stream's events, their stable type names and schema versions, and the
//! upcasting chain that turns an older stored payload into the current one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;
use crate::values::{CommentId, CommentText, Message, PostId, UserId};

/// Everything that can happen to a post. `apply` folds these; they carry no rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostEvent {
    PostCreated(PostCreated),
    MessageEdited(MessageEdited),
    PostLiked(PostLiked),
    PostUnliked(PostUnliked),
    CommentAdded(CommentAdded),
    CommentEdited(CommentEdited),
    CommentRemoved(CommentRemoved),
    PostDeleted(PostDeleted),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCreated {
    pub post_id: PostId,
    pub author: UserId,
    pub message: Message,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageEdited {
    pub message: Message,
    pub edited_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostLiked {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostUnliked {
    pub user: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentAdded {
    pub comment_id: CommentId,
    pub author: UserId,
    pub text: CommentText,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentEdited {
    pub comment_id: CommentId,
    pub text: CommentText,
    pub edited_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommentRemoved {
    pub comment_id: CommentId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostDeleted {
    pub deleted_at: Timestamp,
}

/// Why a stored or published payload could not become a [`PostEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("{event_type} has schema {schema}, newer than this build knows ({current})")]
    SchemaTooNew {
        event_type: String,
        schema: u32,
        current: u32,
    },
    #[error("no upcaster takes {event_type} from schema {schema}")]
    NoUpcaster { event_type: String, schema: u32 },
    #[error("{event_type} schema {schema}: {reason}")]
    BadPayload {
        event_type: String,
        schema: u32,
        reason: String,
    },
}

/// One step of schema evolution: turns `event_type` at `from_schema` into
/// `from_schema + 1`. Steps chain until the payload reaches the current schema.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from_schema: u32,
    pub upcast: fn(Value) -> Result<Value, String>,
}

/// The upcasters this build ships. Every event is still at its first schema, so
/// the chain is empty; a change to a payload adds a step here and bumps the
/// schema in [`PostEvent::schema`].
pub const UPCASTERS: &[Upcaster] = &[];

impl PostEvent {
    /// Every event type name, as stored and published.
    pub const TYPES: [&'static str; 8] = [
        "PostCreated",
        "MessageEdited",
        "PostLiked",
        "PostUnliked",
        "CommentAdded",
        "CommentEdited",
        "CommentRemoved",
        "PostDeleted",
    ];

    /// The stable type name that identifies the payload (the envelope's `type`).
    pub fn event_type(&self) -> &'static str {
        match self {
            PostEvent::PostCreated(_) => "PostCreated",
            PostEvent::MessageEdited(_) => "MessageEdited",
            PostEvent::PostLiked(_) => "PostLiked",
            PostEvent::PostUnliked(_) => "PostUnliked",
            PostEvent::CommentAdded(_) => "CommentAdded",
            PostEvent::CommentEdited(_) => "CommentEdited",
            PostEvent::CommentRemoved(_) => "CommentRemoved",
            PostEvent::PostDeleted(_) => "PostDeleted",
        }
    }

    /// The schema this build writes for `event_type`, or `None` if the type is unknown.
    pub fn current_schema(event_type: &str) -> Option<u32> {
        Self::TYPES.contains(&event_type).then_some(1)
    }

    /// The schema of this event's payload as this build writes it.
    pub fn schema(&self) -> u32 {
        // Every type is known to `current_schema`, so this is never the fallback.
        Self::current_schema(self.event_type()).unwrap_or(1)
    }

    /// The payload as JSON (the envelope's `data`).
    pub fn to_data(&self) -> Value {
        let value = match self {
            PostEvent::PostCreated(e) => serde_json::to_value(e),
            PostEvent::MessageEdited(e) => serde_json::to_value(e),
            PostEvent::PostLiked(e) => serde_json::to_value(e),
            PostEvent::PostUnliked(e) => serde_json::to_value(e),
            PostEvent::CommentAdded(e) => serde_json::to_value(e),
            PostEvent::CommentEdited(e) => serde_json::to_value(e),
            PostEvent::CommentRemoved(e) => serde_json::to_value(e),
            PostEvent::PostDeleted(e) => serde_json::to_value(e),
        };
        // These structs hold only strings, uuids and timestamps: serializing them
        // to a `Value` has no failure case.
        value.expect("event payloads always serialize")
    }

    /// Reads a payload of any known schema, upcasting it with [`UPCASTERS`].
    pub fn from_data(event_type: &str, schema: u32, data: Value) -> Result<Self, DecodeError> {
        Self::from_data_with(UPCASTERS, event_type, schema, data)
    }

    /// As [`PostEvent::from_data`], with an explicit upcaster chain.
    pub fn from_data_with(
        upcasters: &[Upcaster],
        event_type: &str,
        schema: u32,
        data: Value,
    ) -> Result<Self, DecodeError> {
        let current = Self::current_schema(event_type)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if schema > current {
            return Err(DecodeError::SchemaTooNew {
                event_type: event_type.to_owned(),
                schema,
                current,
            });
        }
        let mut data = data;
        for from in schema..current {
            let step = upcasters
                .iter()
                .find(|u| u.event_type == event_type && u.from_schema == from)
                .ok_or_else(|| DecodeError::NoUpcaster {
                    event_type: event_type.to_owned(),
                    schema: from,
                })?;
            data = (step.upcast)(data).map_err(|reason| DecodeError::BadPayload {
                event_type: event_type.to_owned(),
                schema: from,
                reason,
            })?;
        }
        let bad = |e: serde_json::Error| DecodeError::BadPayload {
            event_type: event_type.to_owned(),
            schema: current,
            reason: e.to_string(),
        };
        Ok(match event_type {
            "PostCreated" => PostEvent::PostCreated(serde_json::from_value(data).map_err(bad)?),
            "MessageEdited" => PostEvent::MessageEdited(serde_json::from_value(data).map_err(bad)?),
            "PostLiked" => PostEvent::PostLiked(serde_json::from_value(data).map_err(bad)?),
            "PostUnliked" => PostEvent::PostUnliked(serde_json::from_value(data).map_err(bad)?),
            "CommentAdded" => PostEvent::CommentAdded(serde_json::from_value(data).map_err(bad)?),
            "CommentEdited" => PostEvent::CommentEdited(serde_json::from_value(data).map_err(bad)?),
            "CommentRemoved" => {
                PostEvent::CommentRemoved(serde_json::from_value(data).map_err(bad)?)
            }
            "PostDeleted" => PostEvent::PostDeleted(serde_json::from_value(data).map_err(bad)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}
