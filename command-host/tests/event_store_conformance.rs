//! The `EventStore` contract, written once and run against every adapter:
//! PostgreSQL always, MongoDB when `MONGODB_URL` is set (else a SKIPPED line).

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use domain::event::PostLiked;
use domain::{EventEnvelope, EventMetadata, PostEvent, PostId, Timestamp, UserId, Version};
use event_store::postgres::PostgresEventStore;
use event_store::{AnyEventStore, EventStore, ReadAllCursor, StoreError};
use uuid::Uuid;

fn liked(stream: PostId, version: u64, user: &str) -> EventEnvelope {
    EventEnvelope::new(
        stream,
        Version::new(version),
        &PostEvent::PostLiked(PostLiked {
            user: UserId::parse(user).expect("valid"),
        }),
        Uuid::new_v4(),
        Timestamp::from_unix_millis(1_795_428_000_000 + version as i64 * 7),
        EventMetadata {
            user: UserId::parse(user).expect("valid"),
            request_id: Uuid::new_v4(),
            idempotency_key: Some(format!("key-{version}")),
        },
    )
}

fn batch(stream: PostId, from: u64, count: u64) -> Vec<EventEnvelope> {
    (from..from + count)
        .map(|v| liked(stream, v, &format!("u{v}")))
        .collect()
}

fn new_stream() -> PostId {
    PostId::from_uuid(Uuid::new_v4())
}

async fn append_then_load_round_trips(store: &impl EventStore) {
    let stream = new_stream();
    let events = batch(stream, 1, 5);
    store
        .append_to_stream(stream, Version::EMPTY, &events)
        .await
        .expect("append");
    assert_eq!(
        whole_stream(store, stream).await,
        events,
        "exact round trip"
    );
    assert_eq!(
        store
            .load_stream(stream, Version::new(4))
            .await
            .expect("load"),
        events[3..]
    );
    assert!(
        store
            .load_stream(stream, Version::new(6))
            .await
            .expect("load")
            .is_empty()
    );
    assert!(
        store
            .load_stream(new_stream(), Version::new(1))
            .await
            .expect("load")
            .is_empty()
    );
    // Pages: from any version, at most `limit`, across appends of several events.
    let more = batch(stream, 6, 4);
    store
        .append_to_stream(stream, Version::new(5), &more)
        .await
        .expect("append");
    let all: Vec<_> = events.iter().chain(&more).cloned().collect();
    for (from, limit) in [(1, 3), (2, 4), (4, 100), (9, 1), (10, 5), (11, 5)] {
        let page = store
            .load_stream_page(stream, Version::new(from), limit)
            .await
            .expect("page");
        let start = (from as usize - 1).min(all.len());
        let end = (start + limit).min(all.len());
        assert_eq!(page, all[start..end], "from {from}, limit {limit}");
    }
}

/// Appends versions `after + 1 ..= after + count` of `stream` (see [`batch`]),
/// expecting the stream at `after`; the append must go in.
async fn append_batch(store: &impl EventStore, stream: PostId, after: u64, count: u64) {
    let events = batch(stream, after + 1, count);
    store
        .append_to_stream(stream, Version::new(after), &events)
        .await
        .expect("append");
}

/// Every event of `stream`, from its first version.
async fn whole_stream(store: &impl EventStore, stream: PostId) -> Vec<EventEnvelope> {
    store
        .load_stream(stream, Version::new(1))
        .await
        .expect("load")
}

/// Racers `0..racers` append `events(racer)` to `stream` at once, each
/// expecting it at `expected`; returns the racers whose append went in. Every
/// other racer must have lost with a conflict.
async fn race<S: EventStore + 'static>(
    store: &Arc<S>,
    stream: PostId,
    expected: Version,
    racers: usize,
    events: impl Fn(usize) -> Vec<EventEnvelope>,
) -> Vec<usize> {
    let tasks: Vec<_> = (0..racers)
        .map(|racer| {
            let (store, events) = (Arc::clone(store), events(racer));
            tokio::spawn(async move {
                let appended = store.append_to_stream(stream, expected, &events).await;
                appended.map(|()| racer)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            Ok(racer) => winners.push(racer),
            Err(StoreError::Conflict { .. }) => {}
            Err(other) => panic!("expected a conflict, got {other}"),
        }
    }
    winners
}

async fn concurrent_appends_at_one_version_have_one_winner(store: Arc<impl EventStore + 'static>) {
    let stream = new_stream();
    append_batch(&*store, stream, 0, 1).await;
    let winners = race(&store, stream, Version::new(1), 20, |i| {
        vec![liked(stream, 2, &format!("racer{i}"))]
    })
    .await;
    assert_eq!(winners.len(), 1);
    assert_eq!(whole_stream(&*store, stream).await.len(), 2);
}

async fn a_multi_event_append_that_loses_a_race_leaves_nothing(
    store: Arc<impl EventStore + 'static>,
) {
    let stream = new_stream();
    append_batch(&*store, stream, 0, 2).await;
    // Ten racers, each appending three events after version 2.
    let winners = race(&store, stream, Version::new(2), 10, |i| {
        (3..6)
            .map(|v| liked(stream, v, &format!("racer{i}")))
            .collect()
    })
    .await;
    assert_eq!(winners.len(), 1, "one winner");
    let stored = whole_stream(&*store, stream).await;
    let users: Vec<&str> = stored[2..]
        .iter()
        .map(|e| e.metadata.user.as_str())
        .collect();
    let winner = format!("racer{}", winners[0]);
    assert_eq!(
        stored.len(),
        5,
        "the winner's three events and nothing else"
    );
    assert!(users.iter().all(|u| *u == winner), "{users:?}");
}

async fn concurrent_appenders_of_one_stream_interleave_whole_appends(
    store: Arc<impl EventStore + 'static>,
) {
    let stream = new_stream();
    // Eight appenders, five appends each of one to three events, each retried
    // against the stream's head until it goes in.
    let tasks: Vec<_> = (0..8u64)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for append in 0..5u64 {
                    let size = 1 + (writer + append) % 3;
                    loop {
                        let head = whole_stream(&*store, stream)
                            .await
                            .last()
                            .map_or(Version::EMPTY, |e| e.version);
                        let events: Vec<EventEnvelope> = (1..=size)
                            .map(|k| {
                                let mut event =
                                    liked(stream, head.get() + k, &format!("w{writer}"));
                                event.metadata.idempotency_key =
                                    Some(format!("w{writer}-a{append}"));
                                event
                            })
                            .collect();
                        match store.append_to_stream(stream, head, &events).await {
                            Ok(()) => break,
                            Err(StoreError::Conflict { .. }) => continue,
                            Err(other) => panic!("append: {other}"),
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("appender");
    }
    let stored = whole_stream(&*store, stream).await;
    let versions: Vec<u64> = stored.iter().map(|e| e.version.get()).collect();
    let expected_total: u64 = (0..8u64)
        .flat_map(|w| (0..5u64).map(move |a| 1 + (w + a) % 3))
        .sum();
    assert_eq!(
        versions,
        (1..=expected_total).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    // Each append's events sit together, all of them, once.
    let mut runs: Vec<(String, usize)> = Vec::new();
    for event in &stored {
        let key = event.metadata.idempotency_key.clone().expect("keyed");
        match runs.last_mut() {
            Some((last, n)) if *last == key => *n += 1,
            _ => runs.push((key, 1)),
        }
    }
    assert_eq!(runs.len(), 40, "forty appends, none split: {runs:?}");
    for (key, n) in &runs {
        let (writer, append) = key
            .trim_start_matches('w')
            .split_once("-a")
            .expect("key shape");
        let (writer, append): (u64, u64) = (writer.parse().expect("w"), append.parse().expect("a"));
        assert_eq!(*n as u64, 1 + (writer + append) % 3, "{key} whole");
    }
}

async fn a_stale_or_future_expected_version_conflicts_and_appends_nothing(store: &impl EventStore) {
    let stream = new_stream();
    append_batch(store, stream, 0, 3).await;
    // A batch behind the stream's head, and one ahead of it.
    for (expected, from, count) in [(1, 2, 3), (5, 6, 2)] {
        let events = batch(stream, from, count);
        let refused = store
            .append_to_stream(stream, Version::new(expected), &events)
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { .. })),
            "at version {expected}: {refused:?}"
        );
    }
    assert_eq!(
        whole_stream(store, stream).await.len(),
        3,
        "nothing of either batch"
    );
    let gap = store
        .append_to_stream(stream, Version::new(3), &batch(stream, 5, 1))
        .await;
    assert!(matches!(gap, Err(StoreError::InvalidAppend(_))), "{gap:?}");
}

async fn read_all_streams_every_event_once_in_order(store: Arc<impl EventStore + 'static>) {
    // 300 streams of 40 events, each stream in appends of 1 to 7 events, so
    // pages of 500 end inside appends as well as between them: 12,000 events,
    // appended by 8 writers.
    let streams: Vec<PostId> = (0..300).map(|_| new_stream()).collect();
    let chunks: Vec<Vec<PostId>> = streams.chunks(38).map(<[PostId]>::to_vec).collect();
    let writers: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for (n, stream) in chunk.into_iter().enumerate() {
                    let mut head = 0;
                    let mut size = 1 + n as u64 % 7;
                    while head < 40 {
                        let count = size.min(40 - head);
                        store
                            .append_to_stream(
                                stream,
                                Version::new(head),
                                &batch(stream, head + 1, count),
                            )
                            .await
                            .expect("append");
                        head += count;
                        size = 1 + (size + 3) % 7;
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let ours: HashSet<PostId> = streams.iter().copied().collect();
    let mut cursor = ReadAllCursor::default();
    let mut seen = 0;
    let mut last: Option<(PostId, Version)> = None;
    let mut pages = 0;
    loop {
        let page = store.read_all(&cursor, 500).await.expect("read all");
        assert!(page.events.len() <= 500, "a page holds at most the limit");
        pages += 1;
        for event in &page.events {
            let key = (event.stream_id, event.version);
            assert!(
                last < Some(key),
                "ordered by (stream, version) without repeats"
            );
            last = Some(key);
            if ours.contains(&event.stream_id) {
                seen += 1;
            }
        }
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(seen, 12_000);
    assert!(pages >= 24);
    let heads = store.stream_heads().await.expect("heads");
    let our_heads: Vec<_> = heads.iter().filter(|(id, _)| ours.contains(id)).collect();
    assert_eq!(our_heads.len(), 300);
    assert!(our_heads.iter().all(|(_, v)| v.get() == 40));
}

async fn the_outbox_hands_out_unpublished_events_oldest_first(store: &impl EventStore) {
    let before = store.unpublished_count().await.expect("count");
    let a = new_stream();
    let b = new_stream();
    append_batch(store, a, 0, 2).await;
    append_batch(store, b, 0, 1).await;
    append_batch(store, a, 2, 1).await;
    assert_eq!(store.unpublished_count().await.expect("count"), before + 4);
    let pending = store.unpublished(10_000, &[]).await.expect("unpublished");
    let ours: Vec<(PostId, u64)> = pending
        .iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .map(|e| (e.stream_id, e.version.get()))
        .collect();
    let mut sorted = ours.clone();
    sorted.sort();
    let mut expected = vec![(a, 1), (a, 2), (a, 3), (b, 1)];
    expected.sort();
    assert_eq!(sorted, expected, "every unpublished event, once");
    let versions_of_a: Vec<u64> = ours
        .iter()
        .filter(|(s, _)| *s == a)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        versions_of_a,
        [1, 2, 3],
        "ascending version within a stream"
    );
    // Events whose mark is under way are left out, and the limit counts only
    // the rest.
    let skipped = [(a, Version::new(1)), (b, Version::new(1))];
    let rest: Vec<(PostId, u64)> = store
        .unpublished(10_000, &skipped)
        .await
        .expect("unpublished")
        .iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .map(|e| (e.stream_id, e.version.get()))
        .collect();
    assert_eq!(rest, [(a, 2), (a, 3)], "all but the skipped ones");
    let ours_skipped: Vec<(PostId, Version)> = pending
        .iter()
        .filter(|e| e.stream_id != a || e.version.get() != 3)
        .map(|e| (e.stream_id, e.version))
        .collect();
    let last = store
        .unpublished(1, &ours_skipped)
        .await
        .expect("unpublished");
    assert_eq!(
        last.iter()
            .map(|e| (e.stream_id, e.version.get()))
            .collect::<Vec<_>>(),
        [(a, 3)],
        "a limit of one, after the skipped events"
    );
    store
        .mark_published(&[(a, Version::new(1)), (a, Version::new(2))])
        .await
        .expect("mark");
    store
        .mark_published(&[(a, Version::new(1))])
        .await
        .expect("marking twice is harmless");
    assert_eq!(store.unpublished_count().await.expect("count"), before + 2);
    let pending = store.unpublished(10_000, &[]).await.expect("unpublished");
    assert!(
        !pending
            .iter()
            .any(|e| e.stream_id == a && e.version.get() <= 2)
    );
    assert!(store.unpublished(1, &[]).await.expect("limited").len() <= 1);
    store.ping().await.expect("ping");
}

/// Each user's events under a key are found in order; other users' are not.
async fn events_are_found_by_their_user_and_idempotency_key(store: &impl EventStore) {
    let user = |name: &str| UserId::parse(name).expect("valid");
    let key = testkit::unique_name("key");
    let stream = new_stream();
    let keyed = |version: u64, who: &str, key: Option<&str>| {
        let mut event = liked(stream, version, who);
        event.metadata.idempotency_key = key.map(str::to_owned);
        event
    };
    // One command's two events under the key, then others' and unkeyed ones.
    let events = vec![
        keyed(1, "alice", None),
        keyed(2, "alice", Some(&key)),
        keyed(3, "alice", Some(&key)),
        keyed(4, "bob", Some(&key)),
        keyed(5, "alice", Some("another")),
    ];
    store
        .append_to_stream(stream, Version::EMPTY, &events)
        .await
        .expect("append");
    let found = store
        .find_by_idempotency_key(&user("alice"), &key)
        .await
        .expect("find");
    assert_eq!(
        found,
        events[1..3],
        "alice's events under the key, in order"
    );
    assert_eq!(
        store
            .find_by_idempotency_key(&user("bob"), &key)
            .await
            .expect("find"),
        events[3..4]
    );
    assert!(
        store
            .find_by_idempotency_key(&user("carol"), &key)
            .await
            .expect("find")
            .is_empty(),
        "keys are per user"
    );
}

/// Two writers (two hosts) race on 30 streams while each also appends to 30
/// streams of its own: each contested stream has one winner and one conflict,
/// and every uncontested append goes in.
/// A stream's snapshot: absent until saved, read back byte for byte (also one
/// larger than a MongoDB document may be), replaced only by a later version.
async fn snapshots_move_forward_and_read_back_whole(store: &impl EventStore) {
    let stream = new_stream();
    assert_eq!(store.load_snapshot(stream).await.expect("load"), None);
    let snapshot = |version: u64, schema: u32, len: usize| event_store::Snapshot {
        stream_id: stream,
        version: Version::new(version),
        schema,
        data: (0..len).map(|i| (i * 31 % 251) as u8).collect(),
    };
    let first = snapshot(1_000, 1, 1_024);
    store.save_snapshot(&first).await.expect("save");
    assert_eq!(
        store.load_snapshot(stream).await.expect("load"),
        Some(first.clone())
    );
    // An older or equal version does not replace it.
    for stale in [snapshot(999, 2, 10), snapshot(1_000, 3, 10)] {
        store.save_snapshot(&stale).await.expect("save");
        assert_eq!(
            store.load_snapshot(stream).await.expect("load"),
            Some(first.clone())
        );
    }
    // 17 MB: over MongoDB's 16 MB document limit, so stored in chunks there.
    let large = snapshot(2_000, 1, 17 * 1024 * 1024);
    store.save_snapshot(&large).await.expect("save large");
    let loaded = store
        .load_snapshot(stream)
        .await
        .expect("load")
        .expect("some");
    assert_eq!(
        (loaded.version, loaded.schema),
        (large.version, large.schema)
    );
    assert!(
        loaded.data == large.data,
        "the large snapshot reads back whole"
    );
    // Other streams are not affected.
    assert_eq!(store.load_snapshot(new_stream()).await.expect("load"), None);
}

async fn two_writers_racing_on_many_streams<S: EventStore + 'static>(a: Arc<S>, b: Arc<S>) {
    let contested: Vec<PostId> = (0..30).map(|_| new_stream()).collect();
    for stream in &contested {
        append_batch(&*a, *stream, 0, 1).await;
    }
    let mut tasks = Vec::new();
    for (writer, store) in [("a", &a), ("b", &b)] {
        for stream in &contested {
            let (store, stream) = (Arc::clone(store), *stream);
            tasks.push(tokio::spawn(async move {
                let events = [liked(stream, 2, &format!("racer-{writer}"))];
                (
                    stream,
                    true,
                    store
                        .append_to_stream(stream, Version::new(1), &events)
                        .await,
                )
            }));
        }
        for _ in 0..30 {
            let (store, stream) = (Arc::clone(store), new_stream());
            tasks.push(tokio::spawn(async move {
                let events = batch(stream, 1, 2);
                (
                    stream,
                    false,
                    store
                        .append_to_stream(stream, Version::EMPTY, &events)
                        .await,
                )
            }));
        }
    }
    let mut winners: std::collections::HashMap<PostId, usize> = Default::default();
    for task in tasks {
        let (stream, contested, outcome) = task.await.expect("task");
        match outcome {
            Ok(()) => *winners.entry(stream).or_default() += 1,
            Err(StoreError::Conflict { .. }) if contested => {}
            Err(other) => panic!("{stream}: unexpected {other}"),
        }
        let stored = whole_stream(&*a, stream).await;
        assert_eq!(stored.len(), 2, "{stream} holds its two events");
    }
    assert_eq!(winners.len(), 90, "30 contested and 60 uncontested streams");
    assert!(winners.values().all(|&wins| wins == 1));
}

/// Two hosts appending to the same posts, each batch carrying many posts, in
/// opposite orders: no append fails for anything but losing its race (no
/// deadlock between the two hosts' statements), and each post has one winner.
async fn two_writers_in_opposite_orders_never_deadlock<S: EventStore + 'static>(
    a: Arc<S>,
    b: Arc<S>,
) {
    for round in 0..5 {
        let contested: Vec<PostId> = (0..40).map(|_| new_stream()).collect();
        let mut tasks = Vec::new();
        for (writer, store, order) in [
            ("a", &a, contested.clone()),
            ("b", &b, contested.iter().rev().copied().collect()),
        ] {
            for stream in order {
                let store = Arc::clone(store);
                tasks.push(tokio::spawn(async move {
                    let events = [liked(stream, 1, &format!("racer-{writer}"))];
                    let outcome = store
                        .append_to_stream(stream, Version::EMPTY, &events)
                        .await;
                    (stream, outcome)
                }));
            }
        }
        let mut winners: std::collections::HashMap<PostId, usize> = Default::default();
        for task in tasks {
            let (stream, outcome) = task.await.expect("task");
            match outcome {
                Ok(()) => *winners.entry(stream).or_default() += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("round {round}, {stream}: unexpected {other}"),
            }
        }
        assert_eq!(winners.len(), contested.len(), "round {round}");
        assert!(winners.values().all(|&wins| wins == 1), "round {round}");
    }
}

async fn postgres() -> Arc<PostgresEventStore> {
    Arc::new(support::fresh_event_store("es").await.0)
}

async fn mongodb(case: &str) -> Option<Arc<AnyEventStore>> {
    let url = mongodb_database_url(case)?;
    Some(Arc::new(
        AnyEventStore::connect(&url, 4)
            .await
            .expect("connect MongoDB"),
    ))
}

/// A fresh database on the MongoDB of `MONGODB_URL`, if it is set.
fn mongodb_database_url(case: &str) -> Option<String> {
    let url = testkit::mongodb_url(&format!("event store conformance ({case})"))?;
    Some(with_database(&url, &testkit::unique_name("es")))
}

/// The MongoDB URL with its database replaced, so each case has a fresh one.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

testkit::conformance! {
    required postgres_adapter: postgres,
    optional mongodb_adapter: mongodb;
    append_then_load: |store| append_then_load_round_trips(&*store).await;
    concurrent_appends: |store| concurrent_appends_at_one_version_have_one_winner(store).await;
    losing_multi_event_append: |store| {
        a_multi_event_append_that_loses_a_race_leaves_nothing(store).await
    };
    concurrent_appenders: |store| {
        concurrent_appenders_of_one_stream_interleave_whole_appends(store).await
    };
    stale_versions: |store| {
        a_stale_or_future_expected_version_conflicts_and_appends_nothing(&*store).await
    };
    read_all: |store| read_all_streams_every_event_once_in_order(store).await;
    idempotency_keys: |store| events_are_found_by_their_user_and_idempotency_key(&*store).await;
    outbox: |store| the_outbox_hands_out_unpublished_events_oldest_first(&*store).await;
    snapshots: |store| snapshots_move_forward_and_read_back_whole(&*store).await;
}

mod racing_writers {
    use super::*;

    #[tokio::test]
    async fn postgres_adapter() {
        let (a, pool) = support::fresh_event_store("es").await;
        let b = PostgresEventStore::new(pool);
        two_writers_racing_on_many_streams(Arc::new(a), Arc::new(b)).await;
    }

    #[tokio::test]
    async fn mongodb_adapter() {
        let Some(url) = mongodb_database_url("racing_writers") else {
            return;
        };
        let connect = || async {
            AnyEventStore::connect(&url, 4)
                .await
                .expect("connect MongoDB")
        };
        two_writers_racing_on_many_streams(Arc::new(connect().await), Arc::new(connect().await))
            .await;
    }
}

mod opposite_orders {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_adapter() {
        let (a, pool) = support::fresh_event_store("es").await;
        let b = PostgresEventStore::new(pool.clone());
        two_writers_in_opposite_orders_never_deadlock(Arc::new(a), Arc::new(b)).await;
    }
}

/// PostgreSQL group commit: appends that arrive together share statements.
#[tokio::test]
async fn postgres_concurrent_appends_share_statements() {
    let store = postgres().await;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let stream = new_stream();
                store
                    .append_to_stream(stream, Version::EMPTY, &batch(stream, 1, 3))
                    .await
                    .map(|()| stream)
            })
        })
        .collect();
    for task in tasks {
        let stream = task.await.expect("task").expect("append");
        let stored = whole_stream(&*store, stream).await;
        assert_eq!(stored, batch_versions(&stored, stream));
    }
    let statements = store.append_statements();
    assert!(
        statements < 64,
        "64 concurrent appends took {statements} statements"
    );
}

/// The stored events are the three versions of `stream`, in order.
fn batch_versions(stored: &[EventEnvelope], stream: PostId) -> Vec<EventEnvelope> {
    assert!(stored.iter().all(|e| e.stream_id == stream));
    assert_eq!(
        stored.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    stored.to_vec()
}

/// PostgreSQL group commit: when another writer takes a version while a batch
/// is on its way, the batch is refused as a whole; each append is then retried
/// on its own, so only the append that lost reports a conflict.
#[tokio::test]
async fn postgres_a_batch_refused_by_another_writer_is_retried_append_by_append() {
    let (store, pool) = support::fresh_event_store("es").await;
    let store = Arc::new(store);
    let contested = new_stream();
    append_batch(&*store, contested, 0, 1).await;

    // Another writer inserts version 2 and holds its transaction open.
    let mut other = pool.get().await.expect("connection");
    let other = other.client().transaction().await.expect("begin");
    other
        .execute(
            "INSERT INTO events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
             SELECT stream_id, 2, gen_random_uuid(), stream_type, event_type, schema, occurred_at, metadata, data
             FROM events WHERE stream_id = $1 AND version = 1",
            &[&contested.as_uuid()],
        )
        .await
        .expect("insert version 2");

    // One batch: the contested append and ten others. It waits on the other
    // writer's row, then fails as a whole when that writer commits.
    let mut tasks = vec![tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let events = [liked(contested, 2, "loser")];
            (
                contested,
                store
                    .append_to_stream(contested, Version::new(1), &events)
                    .await,
            )
        }
    })];
    for _ in 0..10 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = new_stream();
            (
                stream,
                store
                    .append_to_stream(stream, Version::EMPTY, &batch(stream, 1, 2))
                    .await,
            )
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        store.append_statements(),
        2,
        "the batch is waiting at PostgreSQL"
    );
    other.commit().await.expect("commit");

    for task in tasks {
        let (stream, outcome) = task.await.expect("task");
        let stored = whole_stream(&*store, stream).await;
        if stream == contested {
            assert!(
                matches!(outcome, Err(StoreError::Conflict { .. })),
                "{outcome:?}"
            );
            assert_eq!(
                stored[1].metadata.user.as_str(),
                "u1",
                "the other writer's event"
            );
        } else {
            outcome.expect("an uncontested append goes in");
            assert_eq!(stored.len(), 2);
        }
    }
    // The first append, the refused batch, then eleven on their own.
    assert_eq!(store.append_statements(), 13);
}

#[tokio::test]
async fn postgres_a_store_with_publish_flags_moves_what_it_had_not_published_to_the_outbox() {
    let (store, pool) = support::fresh_event_store("es").await;
    // Four events in a store made before the outbox table: today's events
    // table, but with a `published` flag on each row (two of them still
    // false), and neither the outbox nor the index of idempotency keys.
    let stream = new_stream();
    let events = batch(stream, 1, 4);
    let mut conn = pool.get().await.expect("connection");
    conn.client()
        .batch_execute(
            "DROP TABLE outbox;
             DROP INDEX events_idempotency_key;
             ALTER TABLE events ADD COLUMN published boolean NOT NULL DEFAULT false;
             CREATE INDEX events_unpublished ON events (position) WHERE NOT published;",
        )
        .await
        .expect("the earlier tables");
    for event in &events {
        conn.client()
            .execute(
                "INSERT INTO events (stream_id, version, event_id, stream_type, event_type, schema,
                                     occurred_at, metadata, data, published)
                 VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8, $9)",
                &[
                    &stream.as_uuid(),
                    &(event.version.get() as i64),
                    &event.event_id,
                    &event.stream_type,
                    &event.event_type,
                    &(event.schema as i32),
                    &serde_json::to_value(&event.metadata).expect("metadata"),
                    &event.data,
                    &(event.version.get() <= 2),
                ],
            )
            .await
            .expect("an earlier event");
    }
    drop(conn);

    store.migrate().await.expect("migrate");
    let pending: Vec<u64> = store
        .unpublished(100, &[])
        .await
        .expect("outbox")
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(pending, vec![3, 4], "what was not published, oldest first");
    store
        .mark_published(&[(stream, Version::new(3)), (stream, Version::new(4))])
        .await
        .expect("mark");
    assert_eq!(store.unpublished_count().await.expect("count"), 0);

    // Migrating again changes nothing, and new appends still reach the outbox.
    store.migrate().await.expect("migrate again");
    assert_eq!(store.unpublished_count().await.expect("count"), 0);
    append_batch(&store, stream, 4, 1).await;
    assert_eq!(store.unpublished_count().await.expect("count"), 1);
    assert_eq!(whole_stream(&store, stream).await.len(), 5);
}

/// The PostgreSQL event store as the hosts open it, on a table analyzed while
/// it held three events and then grown to 20,000: appends (whose version check
/// reads the stream's newest version) and loads planned back then must still
/// find a stream's events by key, not read the whole table each time.
#[tokio::test]
async fn postgres_finds_streams_by_key_after_the_table_outgrew_its_statistics() {
    let (url, schema, admin) = testkit::fresh_pg_schema_url("plans").await;
    // One connection, so every call runs on the statements it prepared.
    let store = AnyEventStore::connect(&url, 1).await.expect("connect");
    let streams: Vec<PostId> = (0..3).map(|_| new_stream()).collect();
    for stream in &streams {
        append_batch(&store, *stream, 0, 1).await;
    }
    testkit::analyze_and_hold_statistics(&admin, &schema, "events").await;
    // Eight appends to `stream` (versions 2 to 9), each followed by a load.
    let append_and_load = |stream: PostId| {
        let store = &store;
        async move {
            for version in 2..=9 {
                append_batch(store, stream, version - 1, 1).await;
                whole_stream(store, stream).await;
            }
        }
    };
    // More than five of each: the connection now runs generic plans made for a
    // table of three rows.
    append_and_load(streams[0]).await;
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
             SELECT gen_random_uuid(), 1, gen_random_uuid(), 'post', 'PostLiked', 1, now(), '{{}}', '{{}}'
             FROM generate_series(1, 20000)"
        ))
        .await
        .expect("grow the table");
    append_and_load(streams[1]).await;
    // The backend reports its table statistics when it exits.
    drop(store);
    // Every append and load above reads the table at least once.
    testkit::assert_read_by_key(&admin, &schema, "events", 32, 20_000).await;
}

/// `/metrics` reads the backlog on every scrape: on PostgreSQL it stops
/// counting at a cap, so a backlog of millions (a long broker outage) costs a
/// bounded read, not a scan of the whole outbox.
#[tokio::test]
async fn postgres_counts_the_backlog_up_to_a_cap() {
    let (store, pool) = support::fresh_event_store("es").await;
    let cap = event_store::postgres::UNPUBLISHED_COUNT_CAP;
    let conn = pool.get().await.expect("connection");
    conn.execute(
        "INSERT INTO outbox (position, stream_id, version)
         SELECT n, gen_random_uuid(), 1 FROM generate_series(1, $1::bigint) AS n",
        &[&(i64::try_from(cap).expect("cap") + 50)],
    )
    .await
    .expect("a backlog past the cap");
    assert_eq!(store.unpublished_count().await.expect("count"), cap);
}
