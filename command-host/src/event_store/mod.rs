//! The event store port: the source of truth. Streams of [`EventEnvelope`]s keyed
//! by (stream_id, version), plus the outbox marks the relay uses to publish every
//! appended event to Kafka without loss.

use std::future::Future;

use domain::{EventEnvelope, PostId, Version};

/// Why the event store refused or failed a call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else appended first: the stream is no longer at `expected`.
    #[error("stream {stream_id} is no longer at version {expected}")]
    Conflict {
        stream_id: PostId,
        expected: Version,
    },
    /// A stored document could not be read back as an envelope.
    #[error("stored event is unreadable: {0}")]
    Corrupt(String),
    /// The store could not be reached or failed the call.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Where a full read stopped. Opaque to callers; pass it back to continue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAllCursor {
    pub(crate) after: Option<(PostId, Version)>,
}

/// One page of a full read, ordered by (stream_id, version).
#[derive(Debug)]
pub struct ReadAllPage {
    pub events: Vec<EventEnvelope>,
    /// `None` once the last page was read.
    pub next: Option<ReadAllCursor>,
}

/// What the hosts need from an event store. Both adapters keep the same contract,
/// held to it by one conformance suite.
pub trait EventStore: Send + Sync {
    /// Appends `events` (versions `expected + 1 ..`) to `stream_id` all or nothing.
    /// Fails with [`StoreError::Conflict`] when the stream is not at `expected`,
    /// including when another writer appends the same version concurrently.
    fn append_to_stream(
        &self,
        stream_id: PostId,
        expected: Version,
        events: &[EventEnvelope],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stream's events with `version >= from`, in version order.
    fn load_stream(
        &self,
        stream_id: PostId,
        from: Version,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Reads every stream, a page at a time, ordered by (stream_id, version), so a
    /// replay never holds more than one page in memory.
    fn read_all(
        &self,
        cursor: &ReadAllCursor,
        limit: usize,
    ) -> impl Future<Output = Result<ReadAllPage, StoreError>> + Send;

    /// Every stream's current version, for a replay's catch-up pass.
    fn stream_heads(
        &self,
    ) -> impl Future<Output = Result<Vec<(PostId, Version)>, StoreError>> + Send;

    /// Up to `limit` events not yet marked published, in append order (so
    /// ascending version within each stream).
    fn unpublished(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Marks the given events as published. Marking twice is harmless.
    fn mark_published(
        &self,
        events: &[(PostId, Version)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many events wait to be published (the outbox backlog).
    fn unpublished_count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Cheap reachability check for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
