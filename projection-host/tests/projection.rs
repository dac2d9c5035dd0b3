//! The projector against real PostgreSQL and a real broker: redelivery, a crash
//! between applying and committing, gap healing, two instances in one group,
//! notifications, and replay.

#[path = "../../domain/tests/generator/mod.rs"]
mod generator;
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use domain::{CommentText, PostCommand};
use event_store::EventStore;
use event_store::postgres::PostgresEventStore;
use plumbing::pg::PgPool;
use projection_host::consumer::Projection;
use projection_host::fence;
use projection_host::notifications::Notifications;
use projection_host::projector::ReadModel;
use projection_host::replay::{ReplayError, ReplayState, Replayer};
use support::{actual, world};

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn redelivered_and_reordered_events_apply_once() {
    let mut w = world().await;
    let mut events = w.write(40, 400).await;
    // Every event twice, the second copy in reverse order across keys.
    w.publish(&events).await;
    events.reverse();
    w.publish(&events).await;
    let consumer = w.project(w.open_read_model().await);
    assert!(w.converges(&w.read_model, CONVERGE).await);
    consumer.stop().await;
}

#[tokio::test]
async fn a_crash_between_applying_and_committing_double_applies_nothing() {
    let mut w = world().await;
    let events = w.write_and_publish(20, 200).await;
    // The state a crash leaves: the batch applied, its offsets never committed.
    let model = w.open_read_model().await;
    let outcome = model.apply_batch(&*w.store, &events).await.expect("apply");
    assert_eq!(outcome.applied, events.len());
    let before = actual(&w.pool, &w.read_model).await;
    // The restarted consumer gets everything again from the first offset.
    let consumer = w.project(model);
    assert!(w.converges(&w.read_model, CONVERGE).await);
    assert_eq!(
        actual(&w.pool, &w.read_model).await,
        before,
        "redelivery changed nothing"
    );
    // And a batch applied twice directly also changes nothing.
    let again = w.open_read_model().await;
    let outcome = again.apply_batch(&*w.store, &events).await.expect("apply");
    assert_eq!((outcome.applied, outcome.skipped), (0, events.len()));
    consumer.stop().await;
}

#[tokio::test]
async fn a_missing_event_is_healed_from_the_event_store() {
    let mut w = world().await;
    let (post, created) = w.create("alice").await;
    let mut events = created;
    for user in ["bob", "carol", "dave", "erin"] {
        events.extend(w.command(post, PostCommand::LikePost, user).await);
    }
    events.extend(
        w.command(
            post,
            PostCommand::AddComment {
                text: CommentText::parse("hi").expect("valid"),
            },
            "bob",
        )
        .await,
    );
    let dropped = events.remove(2);
    w.publish(&events).await;
    let consumer = w.project(w.open_read_model().await);
    assert!(w.converges(&w.read_model, CONVERGE).await);
    let rows = actual(&w.pool, &w.read_model).await;
    let post_rows = &rows[&post.as_uuid()];
    assert_eq!(post_rows.post.as_ref().expect("post").likes, 4);
    assert!(
        post_rows.likes.contains(dropped.metadata.user.as_str()),
        "the dropped like is there"
    );
    consumer.stop().await;
}

#[tokio::test]
async fn two_instances_in_one_group_build_the_same_model_as_one() {
    let mut w = world().await;
    w.write_and_publish(60, 600).await;
    let group = testkit::unique_name("g");
    let one = w.open_read_model().await;
    let two = w.open_read_model().await;
    let one = w.spawn_consumer(Projection::ReadModel(one), &group);
    let two = w.spawn_consumer(Projection::ReadModel(two), &group);
    // More events while both run and rebalance.
    w.write_and_publish(10, 200).await;
    assert!(w.converges(&w.read_model, CONVERGE).await);
    tokio::join!(one.stop(), two.stop());
}

#[tokio::test]
async fn authors_are_notified_of_others_likes_and_comments_once() {
    let mut w = world().await;
    let (post, mut events) = w.create("alice").await;
    events.extend(w.command(post, PostCommand::LikePost, "bob").await);
    events.extend(w.command(post, PostCommand::LikePost, "alice").await);
    let text = || CommentText::parse("nice").expect("valid");
    events.extend(
        w.command(post, PostCommand::AddComment { text: text() }, "carol")
            .await,
    );
    events.extend(
        w.command(post, PostCommand::AddComment { text: text() }, "alice")
            .await,
    );
    w.publish(&events).await;
    w.publish(&events).await;
    let notifications = Notifications::open(w.pool.clone(), &w.notifications)
        .await
        .expect("open");
    let consumer = w.spawn_consumer(
        Projection::Notifications(notifications),
        &testkit::unique_name("n"),
    );
    let pool = w.pool.clone();
    let schema = w.notifications.clone();
    let found = testkit::eventually(CONVERGE, || {
        let pool = pool.clone();
        let schema = schema.clone();
        async move {
            let conn = pool.get().await.ok()?;
            let progress: i64 = conn
                .query_opt(
                    &format!("SELECT version FROM {schema}.progress WHERE stream_id = $1"),
                    &[&post.as_uuid()],
                )
                .await
                .ok()??
                .get(0);
            if progress < 5 {
                return None;
            }
            let rows = conn
                .query(
                    &format!(
                        "SELECT recipient, kind, actor FROM {schema}.notifications ORDER BY kind"
                    ),
                    &[],
                )
                .await
                .ok()?;
            Some(
                rows.iter()
                    .map(|r| {
                        (
                            r.get::<_, String>(0),
                            r.get::<_, String>(1),
                            r.get::<_, String>(2),
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        }
    })
    .await
    .expect("notifications projected");
    assert_eq!(
        found,
        vec![
            (
                "alice".to_owned(),
                "commented".to_owned(),
                "carol".to_owned()
            ),
            ("alice".to_owned(), "liked".to_owned(), "bob".to_owned()),
        ]
    );
    consumer.stop().await;
}

#[tokio::test]
async fn a_replay_during_writes_swaps_in_a_model_equal_to_the_store() {
    let mut w = world().await;
    let events = w.write(1_000, 9_500).await;
    assert!(
        events.len() >= 10_000,
        "workload has {} events",
        events.len()
    );
    w.publish(&events).await;
    let model = w.open_read_model().await;
    let consumer = w.spawn_consumer(Projection::ReadModel(model), &testkit::unique_name("g"));
    assert!(
        w.converges(&w.read_model, CONVERGE).await,
        "live model built"
    );

    let replayer = Arc::new(Replayer::new(
        Arc::clone(&w.store),
        w.pool.clone(),
        &w.read_model,
    ));
    let replay = {
        let replayer = Arc::clone(&replayer);
        tokio::spawn(async move { replayer.replay().await })
    };
    // Writes continue while the replay runs, and reach the live model via Kafka.
    let mut written_during = 0;
    while !replay.is_finished() {
        written_during += w.write_and_publish(5, 50).await.len();
    }
    replay.await.expect("replay task").expect("replay succeeds");
    let progress = replayer.progress();
    assert_eq!(progress.state, ReplayState::Succeeded);
    assert!(progress.events_done >= events.len() as u64);
    assert!(written_during > 0);
    // The swapped-in model, kept current by the live projector, equals a fresh fold.
    assert!(
        w.converges(&w.read_model, CONVERGE).await,
        "rebuilt model equals the store"
    );
    let conn = w.pool.get().await.expect("conn");
    let leftovers = conn
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ($1, $2)",
            &[
                &format!("{}_next", w.read_model),
                &format!("{}_retired", w.read_model),
            ],
        )
        .await
        .expect("schemas");
    assert!(leftovers.is_empty(), "temporary schemas are dropped");
    // The swapped-in tables come with statistics (a manual ANALYZE; autovacuum's
    // would show as last_autoanalyze).
    let unanalyzed = conn
        .query(
            "SELECT relname FROM pg_stat_user_tables WHERE schemaname = $1 AND last_analyze IS NULL",
            &[&w.read_model.as_str()],
        )
        .await
        .expect("statistics");
    assert!(
        unanalyzed.is_empty(),
        "tables swapped in without statistics: {:?}",
        unanalyzed
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    );
    consumer.stop().await;
}

#[tokio::test]
async fn a_failed_replay_leaves_the_live_model_untouched() {
    let mut w = world().await;
    let model = w.open_read_model().await;
    let events = w.write(30, 300).await;
    model.apply_batch(&*w.store, &events).await.expect("apply");
    let before = actual(&w.pool, &w.read_model).await;
    // An event store that cannot be reached: the replay fails while reading.
    let unreachable =
        PgPool::from_url("postgres://sourcegram:sourcegram@127.0.0.1:1/sourcegram", 1)
            .expect("url");
    let broken = Arc::new(PostgresEventStore::new(unreachable));
    let replayer = Replayer::new(broken, w.pool.clone(), &w.read_model);
    assert!(replayer.replay().await.is_err());
    assert_eq!(replayer.progress().state, ReplayState::Failed);
    assert!(replayer.progress().error.is_some());
    assert_eq!(actual(&w.pool, &w.read_model).await, before);
    // A later replay with a working store succeeds and changes nothing of substance.
    let replayer = Replayer::new(Arc::clone(&w.store), w.pool.clone(), &w.read_model);
    replayer.replay().await.expect("replay");
    assert_eq!(actual(&w.pool, &w.read_model).await, before);
    let posts: BTreeSet<_> = before.keys().collect();
    assert_eq!(posts.len(), 30);
    assert!(w.store.ping().await.is_ok());
}

/// Two hosts replaying one read model: while a replay runs on one, another
/// host refuses to start one; once it ended, the other can.
#[tokio::test]
async fn one_replay_at_a_time_across_hosts() {
    let mut w = world().await;
    w.write(3, 10).await;
    w.open_read_model().await;
    let host_one = Replayer::new(Arc::clone(&w.store), w.pool.clone(), &w.read_model);
    let host_two = Replayer::new(Arc::clone(&w.store), w.pool.clone(), &w.read_model);
    let lease = host_one.begin().await.expect("the first replay starts");
    assert!(
        matches!(host_two.begin().await, Err(ReplayError::AlreadyRunning)),
        "a second host started a replay of the same read model"
    );
    assert_eq!(host_two.progress().state, ReplayState::Idle);
    host_one.run(lease).await.expect("the first replay");
    host_two
        .replay()
        .await
        .expect("the second starts once the first ended");
}

/// A replay swapping tables on one host pauses the live projector of every
/// other host: a batch waits for the swap, then lands in the swapped-in
/// tables, never in the retired ones.
#[tokio::test]
async fn a_swap_on_one_host_pauses_the_live_projector_of_another() {
    let mut w = world().await;
    let events = w.write(3, 10).await;
    let other_host = w.open_read_model().await;
    let mut swapping = w.pool.dedicated().await.expect("connection");
    let tx = swapping.transaction().await.expect("transaction");
    fence::hold_swap_fence(&tx, &w.read_model)
        .await
        .expect("the swap fence");
    let store = Arc::clone(&w.store);
    let applying = tokio::spawn(async move { other_host.apply_batch(&*store, &events).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !applying.is_finished(),
        "another host applied a batch while a swap held the fence"
    );
    tx.commit().await.expect("swap done");
    let outcome = tokio::time::timeout(CONVERGE, applying)
        .await
        .expect("the batch goes on once the swap is done")
        .expect("task")
        .expect("batch");
    assert!(outcome.applied > 0);
    assert!(w.converges(&w.read_model, CONVERGE).await);
}

/// A read model whose table was analyzed while it held three posts, then grew
/// to 20,000: batches on a connection that had planned its statements back then
/// must still find their rows by key, not read the whole table for each batch.
#[tokio::test]
async fn batches_find_rows_by_key_after_the_table_outgrew_its_statistics() {
    let mut w = world().await;
    // One connection, so every batch runs on the statements it prepared.
    let pool = PgPool::new(w.pool.config().clone(), 1);
    let model = ReadModel::open(pool.clone(), &w.read_model)
        .await
        .expect("open");
    let rm = w.read_model.clone();
    let admin = testkit::pg_client().await;
    let mut posts = Vec::new();
    for author in ["alice", "bob", "carol"] {
        let (id, created) = w.create(author).await;
        model.apply_batch(&*w.store, &created).await.expect("apply");
        posts.push(id);
    }
    testkit::analyze_and_hold_statistics(&admin, rm.as_str(), "posts").await;
    // More than five executions of each statement: the connection now uses
    // generic plans, made for a table of three rows.
    let likers = [
        "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "oscar",
    ];
    for liker in likers {
        let liked = w.command(posts[0], PostCommand::LikePost, liker).await;
        model.apply_batch(&*w.store, &liked).await.expect("apply");
    }
    admin
        .batch_execute(&format!(
            "INSERT INTO {rm}.posts (id, author, message, created_at, version)
             SELECT gen_random_uuid(), 'filler', 'm', now(), 1 FROM generate_series(1, 20000)"
        ))
        .await
        .expect("grow the table");
    let mut conn = pool.get().await.expect("connection");
    let backend: i32 = conn
        .client()
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    drop(conn);
    for liker in likers {
        let liked = w.command(posts[1], PostCommand::LikePost, liker).await;
        model.apply_batch(&*w.store, &liked).await.expect("apply");
    }
    // The backend reports its table statistics when it exits.
    drop(model);
    drop(pool);
    let gone = testkit::eventually(Duration::from_secs(10), || async {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&backend],
            )
            .await
            .expect("activity");
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the pool's connection did not close");
    // Every batch above locks its post: sixteen scans of the table at least.
    testkit::assert_read_by_key(&admin, rm.as_str(), "posts", 16, 20_000).await;
}

/// The live projector's statements and the replay's fold are two writings of
/// each event's effect; they must agree. Scripts from the domain's own command
/// generator (accepted and refused commands in any order, so every event type
/// comes in every state it can meet) go to the store, then through the
/// projector, and the rows must equal the fold of the store. The test fails
/// if the scripts miss an event type, so a new event is covered or noticed.
#[tokio::test]
async fn the_live_projection_and_the_replays_fold_agree_for_every_event_type() {
    use domain::{EventEnvelope, EventMetadata, PostEvent, PostId};
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    let w = world().await;
    let mut runner = TestRunner::deterministic();
    let mut appended = Vec::new();
    let mut types = BTreeSet::new();
    for _ in 0..64 {
        let script = generator::script(80)
            .new_tree(&mut runner)
            .expect("a script")
            .current();
        let post_id = PostId::from_uuid(uuid::Uuid::new_v4());
        let events = generator::run(post_id, &script);
        let envelopes: Vec<EventEnvelope> = events
            .iter()
            .enumerate()
            .map(|(i, (event, context))| {
                types.insert(event.event_type());
                let metadata = EventMetadata {
                    user: context.actor.clone(),
                    request_id: uuid::Uuid::new_v4(),
                    idempotency_key: None,
                };
                let version = domain::Version::new(i as u64 + 1);
                EventEnvelope::new(
                    post_id,
                    version,
                    event,
                    uuid::Uuid::new_v4(),
                    context.now,
                    metadata,
                )
            })
            .collect();
        if envelopes.is_empty() {
            continue;
        }
        w.store
            .append_to_stream(post_id, domain::Version::new(0), &envelopes)
            .await
            .expect("append");
        appended.push(envelopes);
    }
    assert_eq!(
        types,
        PostEvent::TYPES.iter().copied().collect::<BTreeSet<_>>(),
        "the scripts wrote every event type"
    );
    // As the consumer sees them: the posts' events interleaved, in batches.
    let longest = appended.iter().map(Vec::len).max().unwrap_or(0);
    let interleaved: Vec<EventEnvelope> = (0..longest)
        .flat_map(|i| {
            appended
                .iter()
                .filter_map(move |stream| stream.get(i).cloned())
        })
        .collect();
    let model = w.open_read_model().await;
    for batch in interleaved.chunks(100) {
        model.apply_batch(&*w.store, batch).await.expect("apply");
    }
    let (live, folded) = (actual(&w.pool, &w.read_model).await, w.expected().await);
    assert_eq!(live.len(), folded.len(), "one entry per post");
    for (post, rows) in &folded {
        assert_eq!(live.get(post), Some(rows), "post {post}");
    }
}
