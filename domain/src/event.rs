//! The Post stream's events, their stable type names and schema versions, and the
//! upcasting chain that turns an older stored payload into the current one.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Timestamp;
use crate::values::{CommentId, CommentText, Message, PostId, UserId};

/// The table of events: each line is an event, named as its payload struct
/// and stored under that name (the envelope's `type`), with the schema this
/// build writes. The enum, the type names, encoding and decoding all follow
/// from it, so a new event is a struct and one line here; a change to a
/// payload bumps its schema here and adds a step to [`UPCASTERS`]. The
/// matches that handle every event (the fold, the read model, notifications)
/// name each one, with no wildcard arm, so the compiler lists the places a
/// new event must be handled.
macro_rules! post_events {
    ($($name:ident = $schema:literal,)*) => {
        /// Everything that can happen to a post. `apply` folds these; they carry no rules.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum PostEvent {
            $($name($name),)*
        }

        impl PostEvent {
            /// Every event type name, as stored and published, in the table's order.
            pub const TYPES: &'static [&'static str] = &[$(stringify!($name)),*];

            /// The stable type name that identifies the payload (the envelope's `type`).
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(PostEvent::$name(_) => stringify!($name),)*
                }
            }

            /// The schema this build writes for `event_type`, or `None` if the type is unknown.
            pub fn current_schema(event_type: &str) -> Option<u32> {
                match event_type {
                    $(stringify!($name) => Some($schema),)*
                    _ => None,
                }
            }

            /// The schema of this event's payload as this build writes it.
            pub fn schema(&self) -> u32 {
                match self {
                    $(PostEvent::$name(_) => $schema,)*
                }
            }

            /// The payload as JSON (the envelope's `data`).
            pub fn to_data(&self) -> Value {
                let value = match self {
                    $(PostEvent::$name(e) => serde_json::to_value(e),)*
                };
                // These structs hold only strings, uuids and timestamps:
                // serializing them to a `Value` has no failure case.
                value.expect("event payloads always serialize")
            }

            /// A payload at its current schema, or `None` for an unknown type.
            fn decode_current(
                event_type: &str,
                data: Value,
            ) -> Option<Result<Self, serde_json::Error>> {
                Some(match event_type {
                    $(stringify!($name) => serde_json::from_value(data).map(PostEvent::$name),)*
                    _ => return None,
                })
            }
        }
    };
}

post_events! {
    PostCreated = 1,
    MessageEdited = 1,
    PostLiked = 1,
    PostUnliked = 1,
    CommentAdded = 1,
    CommentEdited = 1,
    CommentRemoved = 1,
    PostDeleted = 1,
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
/// schema in the table of events (`post_events!`).
pub const UPCASTERS: &[Upcaster] = &[];

impl PostEvent {
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
        Self::decode_current(event_type, data)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?
            .map_err(bad)
    }
}
