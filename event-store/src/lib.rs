//! The event store port: the source of truth. Streams of [`EventEnvelope`]s keyed
//! by (stream_id, version), plus the outbox marks the relay uses to publish every
//! appended event to Kafka without loss.

pub mod mongo;
pub mod postgres;

use std::future::Future;

use domain::{EventEnvelope, PostId, UserId, Version};

/// Why the event store refused or failed a call.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The store could not be reached or failed the call; it may or may not
    /// have done what was asked.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The server cut the call off and rolled it back (a statement timeout, a
    /// deadlock that kept recurring): certainly nothing of it was written.
    #[error("event store rolled the call back: {0}")]
    RolledBack(String),
    /// The caller handed in envelopes that cannot follow `expected` (a bug, not a race).
    #[error("invalid append: {0}")]
    InvalidAppend(String),
}

/// What every adapter checks before appending: the envelopes belong to the stream
/// and continue it without gaps from `expected`.
pub(crate) fn check_append(
    stream_id: PostId,
    expected: Version,
    events: &[EventEnvelope],
) -> Result<(), StoreError> {
    let mut next = expected.next();
    for event in events {
        if event.stream_id != stream_id || event.version != next {
            return Err(StoreError::InvalidAppend(format!(
                "event {} is {} v{}, expected {stream_id} v{next}",
                event.event_id, event.stream_id, event.version
            )));
        }
        next = next.next();
    }
    Ok(())
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

/// A post's state saved beside its events: the version it was folded to, the
/// layout of the state (the domain's `SNAPSHOT_SCHEMA` when it was taken) and
/// the state's bytes. The events stay the truth; a snapshot only spares
/// reading them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub stream_id: PostId,
    pub version: Version,
    pub schema: u32,
    pub data: Vec<u8>,
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

    /// At most `limit` of the stream's events with `version >= from`, in
    /// version order: one page of its history, read without loading the rest.
    fn load_stream_page(
        &self,
        stream_id: PostId,
        from: Version,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// The stream's events with `version >= from`, in version order.
    fn load_stream(
        &self,
        stream_id: PostId,
        from: Version,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send {
        self.load_stream_page(stream_id, from, usize::MAX)
    }

    /// The events `user` appended under idempotency key `key`, in stream and
    /// version order: one command's events, since a key names one request.
    /// This is how a retry learns that its first attempt was appended, even
    /// when the host died before it could record the answer.
    fn find_by_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
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

    /// Up to `limit` events not yet marked published, oldest first where the
    /// store can tell (PostgreSQL: append order; MongoDB: by stream), and always
    /// in ascending version within each stream. Events in `skip` are left out:
    /// the relay's published events whose mark is still under way.
    fn unpublished(
        &self,
        limit: usize,
        skip: &[(PostId, Version)],
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Marks the given events as published. Marking twice is harmless.
    fn mark_published(
        &self,
        events: &[(PostId, Version)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// How many events wait to be published (the outbox backlog); adapters may
    /// stop counting at a cap of theirs, so a scrape stays cheap.
    fn unpublished_count(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Saves the stream's snapshot unless one of the same or a later version is
    /// there already: snapshots only move forward.
    fn save_snapshot(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stream's latest snapshot, if any.
    fn load_snapshot(
        &self,
        stream_id: PostId,
    ) -> impl Future<Output = Result<Option<Snapshot>, StoreError>> + Send;

    /// Cheap reachability check for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The event store chosen by configuration. A closed enum rather than a trait
/// object: every adapter is known, and dispatch is a `match`.
#[derive(Debug, Clone)]
pub enum AnyEventStore {
    Postgres(postgres::PostgresEventStore),
    Mongo(mongo::MongoEventStore),
}

impl AnyEventStore {
    /// Connects by URL scheme (`postgres://` or `mongodb://`) and creates tables
    /// or indexes.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::connect_bounded(url, pool_size, None).await
    }

    /// [`AnyEventStore::connect`], with every PostgreSQL statement cut off by
    /// the server after `statement_timeout` (a write must not outlive its
    /// deadline).
    pub async fn connect_bounded(
        url: &str,
        pool_size: usize,
        statement_timeout: Option<std::time::Duration>,
    ) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = plumbing::pg::PgPool::from_url(url, pool_size)
                .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
            let pool = match statement_timeout {
                Some(timeout) => plumbing::pg::with_statement_timeout(&pool, timeout),
                None => pool,
            };
            let store = postgres::PostgresEventStore::new(plumbing::pg::keyed(&pool));
            store.migrate().await?;
            return Ok(Self::Postgres(store));
        }
        if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            let store = mongo::MongoEventStore::connect(url).await?;
            store.migrate().await?;
            return Ok(Self::Mongo(store));
        }
        Err(StoreError::Unavailable(
            "EVENT_STORE_URL must start with postgres://, postgresql://, mongodb:// or mongodb+srv://".to_owned(),
        ))
    }
}

/// Each method of [`EventStore`], forwarded to the adapter inside.
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                Self::Postgres(store) => store.$name($($arg),*).await,
                Self::Mongo(store) => store.$name($($arg),*).await,
            }
        })*
    };
}

impl EventStore for AnyEventStore {
    forward! {
        fn append_to_stream(&self, stream_id: PostId, expected: Version, events: &[EventEnvelope])
            -> Result<(), StoreError>;
        fn load_stream_page(&self, stream_id: PostId, from: Version, limit: usize)
            -> Result<Vec<EventEnvelope>, StoreError>;
        fn find_by_idempotency_key(&self, user: &UserId, key: &str)
            -> Result<Vec<EventEnvelope>, StoreError>;
        fn read_all(&self, cursor: &ReadAllCursor, limit: usize) -> Result<ReadAllPage, StoreError>;
        fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError>;
        fn unpublished(&self, limit: usize, skip: &[(PostId, Version)])
            -> Result<Vec<EventEnvelope>, StoreError>;
        fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError>;
        fn unpublished_count(&self) -> Result<u64, StoreError>;
        fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
        fn load_snapshot(&self, stream_id: PostId) -> Result<Option<Snapshot>, StoreError>;
        fn ping(&self) -> Result<(), StoreError>;
    }
}
