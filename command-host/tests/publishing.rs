//! Publishing without loss: every appended event reaches Kafka exactly once, in
//! version order per key, also when the broker is down while writes go on. The
//! outage test runs a private broker of its own, so stopping it disturbs no
//! other test.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use domain::EventEnvelope;
use event_store::{EventStore, ReadAllCursor};
use hyper::StatusCode;
use rdkafka::message::{Headers, Message};
use support::{TestApp, ok_version, spawn_app, spawn_app_on};

/// Every message on `topic`, read from the start until `expected` arrived and
/// nothing more came for a second. Returns (key, envelope, type header) in
/// arrival order per partition.
async fn consume_all(
    brokers: &str,
    topic: &str,
    expected: usize,
) -> Vec<(String, EventEnvelope, String)> {
    let consumer = testkit::verifying_consumer(brokers, topic);
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let quiet = if seen.len() >= expected {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        match tokio::time::timeout(quiet, consumer.recv()).await {
            Ok(Ok(message)) => {
                let key =
                    String::from_utf8(message.key().expect("key").to_vec()).expect("utf-8 key");
                let envelope: EventEnvelope =
                    serde_json::from_slice(message.payload().expect("payload"))
                        .expect("envelope JSON");
                let headers = message.headers().expect("headers");
                let type_header = headers
                    .iter()
                    .find(|h| h.key == "type")
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("type header");
                assert!(
                    headers
                        .iter()
                        .any(|h| h.key == "schema" && h.value == Some(b"1"))
                );
                seen.push((key, envelope, type_header));
            }
            Ok(Err(error)) => panic!("consume failed: {error}"),
            Err(_) if seen.len() >= expected => break,
            Err(_) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {expected} messages arrived",
            seen.len()
        );
    }
    seen
}

async fn all_stored(app: &TestApp) -> Vec<EventEnvelope> {
    let mut cursor = ReadAllCursor::default();
    let mut all = Vec::new();
    loop {
        let page = app.store.read_all(&cursor, 1_000).await.expect("read all");
        all.extend(page.events);
        match page.next {
            Some(next) => cursor = next,
            None => return all,
        }
    }
}

/// Each stored event arrived exactly once, keyed by its stream, and each key's
/// versions arrived in ascending order.
fn assert_published_exactly_once_in_order(
    stored: &[EventEnvelope],
    seen: &[(String, EventEnvelope, String)],
) {
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for (key, envelope, type_header) in seen {
        assert_eq!(key, &envelope.stream_id.to_string(), "key = stream id");
        assert_eq!(type_header, &envelope.event_type);
        *counts
            .entry((key.clone(), envelope.version.get()))
            .or_default() += 1;
        let last = last_version.entry(key.as_str()).or_default();
        assert!(
            envelope.version.get() > *last,
            "{key}: v{} after v{last}",
            envelope.version
        );
        *last = envelope.version.get();
    }
    for envelope in stored {
        let count = counts.get(&(envelope.stream_id.to_string(), envelope.version.get()));
        assert_eq!(
            count,
            Some(&1),
            "{} v{} published {count:?} times",
            envelope.stream_id,
            envelope.version
        );
    }
    assert_eq!(
        seen.len(),
        stored.len(),
        "nothing was published that is not stored"
    );
    let first = &seen
        .iter()
        .find(|(_, e, _)| e.version.get() == 1)
        .expect("a first event")
        .1;
    let stored_first = stored
        .iter()
        .find(|e| e.event_id == first.event_id)
        .expect("stored");
    assert_eq!(
        first, stored_first,
        "the published value is the stored envelope"
    );
}

async fn outbox_drained(app: &TestApp, within: Duration) {
    let store = &app.store;
    testkit::eventually(within, || async move {
        matches!(store.unpublished_count().await, Ok(0)).then_some(())
    })
    .await
    .expect("the outbox drains");
}

async fn write_some(app: &TestApp, posts: usize, likes_each: usize) -> usize {
    let mut acknowledged = 0;
    for p in 0..posts {
        let post = app.create_post(&format!("author{p}"), "hello").await;
        acknowledged += 1;
        for l in 0..likes_each {
            ok_version(&app.like(&post, &format!("fan{l}")).await);
            acknowledged += 1;
        }
    }
    acknowledged
}

#[tokio::test]
async fn every_appended_event_is_published_once_in_order_per_key() {
    let app = spawn_app().await;
    let acknowledged = write_some(&app, 10, 5).await;
    let edited = app.create_post("editor", "v1").await;
    app.edit_message(&edited, "editor", "v2").await;
    outbox_drained(&app, Duration::from_secs(30)).await;
    let stored = all_stored(&app).await;
    assert_eq!(stored.len(), acknowledged + 2);
    let seen = consume_all(&app.brokers, &app.topic, stored.len()).await;
    assert_published_exactly_once_in_order(&stored, &seen);
    app.stop().await;
}

/// A broker of the test's own, and the host on a fresh schema and a topic on
/// that broker.
async fn app_on_a_private_broker(name: &str) -> (testkit::PrivateKafka, TestApp) {
    let broker = testkit::PrivateKafka::start().await;
    let topic = testkit::unique_name(name).replace('_', "-");
    testkit::create_topic(&broker.brokers(), &topic, 3)
        .await
        .expect("create topic");
    let (pool, schema) = testkit::fresh_pg_schema(&format!("cmd_{name}")).await;
    let app = spawn_app_on(pool, schema, topic, broker.brokers()).await;
    (broker, app)
}

#[tokio::test]
async fn writes_during_a_broker_outage_are_published_when_it_returns() {
    let (mut broker, app) = app_on_a_private_broker("outage").await;

    let before = write_some(&app, 3, 2).await;
    outbox_drained(&app, Duration::from_secs(30)).await;

    broker.stop().await;
    let during = write_some(&app, 4, 3).await;
    assert!(
        app.store.unpublished_count().await.expect("count") > 0,
        "with the broker down, new events wait in the outbox"
    );
    broker.restart().await;
    outbox_drained(&app, Duration::from_secs(90)).await;

    let stored = all_stored(&app).await;
    assert_eq!(
        stored.len(),
        before + during,
        "every acknowledged write is stored"
    );
    let seen = consume_all(&broker.brokers(), &app.topic, stored.len()).await;
    assert_published_exactly_once_in_order(&stored, &seen);
    app.stop().await;
    broker.stop().await;
}

#[tokio::test]
async fn the_relay_recovers_when_the_broker_restarts_with_sends_in_flight() {
    let (mut broker, app) = app_on_a_private_broker("inflight").await;
    let app = std::sync::Arc::new(app);

    // Writers keep going while the broker stops and comes back.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                let mut acknowledged = 0;
                let end = tokio::time::Instant::now() + Duration::from_secs(4);
                while tokio::time::Instant::now() < end {
                    let answer = app.create(&format!("writer{w}"), "in flight").await;
                    if answer.status == StatusCode::CREATED {
                        acknowledged += 1;
                    }
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    broker.terminate().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().await;
    let mut acknowledged = 0;
    for writer in writers {
        acknowledged += writer.await.expect("writer");
    }
    outbox_drained(&app, Duration::from_secs(90)).await;

    let stored = all_stored(&app).await;
    assert_eq!(
        stored.len(),
        acknowledged,
        "every acknowledged write is stored"
    );
    // Whatever was in flight may arrive twice; nothing may be missing, and each
    // post's first arrivals keep version order.
    let seen = consume_all(&broker.brokers(), &app.topic, stored.len()).await;
    let arrived: std::collections::HashSet<_> = seen
        .iter()
        .map(|(_, e, _)| (e.stream_id, e.version))
        .collect();
    for envelope in &stored {
        assert!(
            arrived.contains(&(envelope.stream_id, envelope.version)),
            "{} v{} never published",
            envelope.stream_id,
            envelope.version
        );
    }
    let mut firsts = std::collections::HashSet::new();
    let mut newest: HashMap<String, u64> = HashMap::new();
    for (key, envelope, _) in &seen {
        if !firsts.insert((key.clone(), envelope.version.get())) {
            continue;
        }
        let last = newest.entry(key.clone()).or_default();
        assert!(
            envelope.version.get() > *last,
            "{key}: v{} first arrived after v{last}",
            envelope.version
        );
        *last = envelope.version.get();
    }
    std::sync::Arc::into_inner(app)
        .expect("writers are done")
        .stop()
        .await;
    broker.stop().await;
}
