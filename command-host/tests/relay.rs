//! The outbox relay's rounds overlap: while the store marks one batch as
//! published, the broker already takes the next. Run against real PostgreSQL
//! and the real broker; a thin wrapper around the PostgreSQL store holds the
//! relay at the two points the test needs to control.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use command_host::metrics::CommandMetrics;
use command_host::relay::{RelayConfig, run_relay};
use domain::event::PostLiked;
use domain::{EventEnvelope, EventMetadata, PostEvent, PostId, Timestamp, UserId, Version};
use event_bus::KafkaPublisher;
use event_store::postgres::PostgresEventStore;
use event_store::{EventStore, ReadAllCursor, ReadAllPage, Snapshot, StoreError};
use platform::metrics::Metrics;
use platform::stop::Background;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::Message;
use tokio::sync::Notify;
use uuid::Uuid;

/// The PostgreSQL store, with two holds: the relay's second outbox fetch waits
/// for `second_fetch`, and its first mark of published events waits for
/// `first_mark` (or gives up after a while, so a relay that does not overlap
/// still finishes, just too late for the test).
struct HeldStore {
    inner: PostgresEventStore,
    fetches: AtomicUsize,
    marks: AtomicUsize,
    second_fetch: Notify,
    first_mark: Notify,
}

impl EventStore for HeldStore {
    testkit::forward_to_inner! {
        fn append_to_stream(
            &self, stream_id: PostId, expected: Version, events: &[EventEnvelope]
        ) -> Result<(), StoreError>;
        fn load_stream(
            &self, stream_id: PostId, from: Version
        ) -> Result<Vec<EventEnvelope>, StoreError>;
        fn load_stream_page(
            &self, stream_id: PostId, from: Version, limit: usize
        ) -> Result<Vec<EventEnvelope>, StoreError>;
        fn find_by_idempotency_key(
            &self, user: &UserId, key: &str
        ) -> Result<Vec<EventEnvelope>, StoreError>;
        fn read_all(&self, cursor: &ReadAllCursor, limit: usize) -> Result<ReadAllPage, StoreError>;
        fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError>;
        fn unpublished_count(&self) -> Result<u64, StoreError>;
        fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;
        fn load_snapshot(&self, stream_id: PostId) -> Result<Option<Snapshot>, StoreError>;
        fn ping(&self) -> Result<(), StoreError>;
    }

    async fn unpublished(
        &self,
        limit: usize,
        skip: &[(PostId, Version)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        if self.fetches.fetch_add(1, Ordering::SeqCst) == 1 {
            self.second_fetch.notified().await;
        }
        self.inner.unpublished(limit, skip).await
    }

    async fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError> {
        if !events.is_empty() && self.marks.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = tokio::time::timeout(Duration::from_secs(15), self.first_mark.notified()).await;
        }
        self.inner.mark_published(events).await
    }
}

fn post_liked(stream: PostId) -> EventEnvelope {
    let user = UserId::parse("fan").expect("valid");
    EventEnvelope::new(
        stream,
        Version::new(1),
        &PostEvent::PostLiked(PostLiked { user: user.clone() }),
        Uuid::new_v4(),
        Timestamp::from_unix_millis(1_795_428_000_000),
        EventMetadata {
            user,
            request_id: Uuid::new_v4(),
            idempotency_key: None,
        },
    )
}

/// Waits until a message keyed by `stream` is on the topic.
async fn arrives(consumer: &StreamConsumer, stream: PostId, within: Duration) -> bool {
    let key = stream.to_string();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(message)) = tokio::time::timeout_at(deadline, consumer.recv()).await {
        if message.key() == Some(key.as_bytes()) {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn the_next_batch_is_published_while_the_last_one_is_being_marked() {
    let (inner, _) = support::fresh_event_store("relay").await;
    let store = Arc::new(HeldStore {
        inner,
        fetches: AtomicUsize::new(0),
        marks: AtomicUsize::new(0),
        second_fetch: Notify::new(),
        first_mark: Notify::new(),
    });
    let brokers = testkit::kafka_brokers();
    let topic = testkit::fresh_topic("relay", 1).await;
    let consumer = testkit::verifying_consumer(&brokers, &topic);

    let first = PostId::from_uuid(Uuid::new_v4());
    store
        .append_to_stream(first, Version::EMPTY, &[post_liked(first)])
        .await
        .expect("append the first event");
    let wake = Arc::new(Notify::new());
    let stop = Background::new();
    let relay = tokio::spawn(run_relay(
        Arc::clone(&store),
        KafkaPublisher::new(&brokers, &topic).expect("producer"),
        Arc::clone(&wake),
        CommandMetrics::new(&Metrics::new()),
        RelayConfig {
            poll_interval: Duration::from_millis(50),
            ..RelayConfig::default()
        },
        stop.stopping(),
    ));

    // The relay published the first event and now looks for more: a second
    // event is in the outbox when it looks.
    assert!(
        arrives(&consumer, first, Duration::from_secs(30)).await,
        "the first event is published"
    );
    let second = PostId::from_uuid(Uuid::new_v4());
    store
        .append_to_stream(second, Version::EMPTY, &[post_liked(second)])
        .await
        .expect("append the second event");
    store.second_fetch.notify_one();

    // The first event's mark is held: the second event reaches the broker all
    // the same, and the first is still unmarked when it does.
    assert!(
        arrives(&consumer, second, Duration::from_secs(10)).await,
        "the second event was not published while the first was being marked"
    );
    let still_unmarked = store.inner.unpublished(10, &[]).await.expect("outbox");
    assert!(
        still_unmarked.iter().any(|e| e.stream_id == first),
        "the first event's mark was not under way any more"
    );

    // Once marking goes on, both are marked and nothing is left behind.
    store.first_mark.notify_one();
    let drained = testkit::eventually(Duration::from_secs(10), || {
        let store = Arc::clone(&store);
        async move { matches!(store.inner.unpublished_count().await, Ok(0)).then_some(()) }
    })
    .await;
    assert!(drained.is_some(), "both events end up marked published");
    stop.stop().await;
    relay.await.expect("relay stops");
}
