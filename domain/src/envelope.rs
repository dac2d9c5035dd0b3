//! The envelope every event travels in: the same JSON in the event store, on Kafka
//! and in replay.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::event::{DecodeError, PostEvent};
use crate::time::Timestamp;
use crate::values::{PostId, UserId, Version};

/// The `stream_type` of every Post stream.
pub const STREAM_TYPE_POST: &str = "post";

/// Who caused an event and through which request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub user: UserId,
    pub request_id: Uuid,
    pub idempotency_key: Option<String>,
}

/// One stored event. Field order is the published JSON order, which clients rely on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub stream_id: PostId,
    pub stream_type: String,
    pub version: Version,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema: u32,
    pub occurred_at: Timestamp,
    pub metadata: EventMetadata,
    pub data: Value,
}

impl EventEnvelope {
    /// Wraps `event` as version `version` of `stream_id`.
    pub fn new(
        stream_id: PostId,
        version: Version,
        event: &PostEvent,
        event_id: Uuid,
        occurred_at: Timestamp,
        metadata: EventMetadata,
    ) -> Self {
        Self {
            event_id,
            stream_id,
            stream_type: STREAM_TYPE_POST.to_owned(),
            version,
            event_type: event.event_type().to_owned(),
            schema: event.schema(),
            occurred_at,
            metadata,
            data: event.to_data(),
        }
    }

    /// The payload as the current schema of its event, upcast if it is older.
    pub fn decode(&self) -> Result<PostEvent, DecodeError> {
        PostEvent::from_data(&self.event_type, self.schema, self.data.clone())
    }
}
