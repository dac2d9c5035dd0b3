//! Exactly once across crashes and across command hosts, on real PostgreSQL and
//! the real broker.
//!
//! - A host that dies after appending a keyed write and before recording its
//!   answer: the retry, on another host, gets the first outcome and appends
//!   nothing. The first host's records fail the completion, which leaves the
//!   stores exactly as a host killed at that point leaves them.
//! - Two hosts on the same stores: neither answers from a cached post state that
//!   the other has moved on (a repeated like, a 412, a refusal).
//! - A keyed write stuck behind a lock for longer than the stale window, and
//!   its retry: the write gives up at its deadline, so one event carries the key.

mod support;

use hyper::{Method, StatusCode};
use serde_json::json;
use support::{Answer, HookedRecords, TestApp, ok_version};

/// Two hosts on one fresh schema and topic; the first one's records never
/// record an answer when `dying`.
async fn two_hosts(dying: bool) -> (TestApp, TestApp) {
    let (pool, schema) = testkit::fresh_pg_schema("once").await;
    let topic = testkit::fresh_topic("once", 1).await;
    let brokers = testkit::kafka_brokers();
    let first = if dying {
        let records = HookedRecords::new(support::migrated_records(&pool).await);
        support::spawn_app_with(
            pool.clone(),
            schema.clone(),
            topic.clone(),
            brokers.clone(),
            records.failing_completions(),
        )
        .await
    } else {
        support::spawn_app_on(pool.clone(), schema.clone(), topic.clone(), brokers.clone()).await
    };
    let second = support::spawn_app_on(pool, schema, topic, brokers).await;
    (first, second)
}

/// How many events carry `key` in their metadata.
async fn events_with_key(app: &TestApp, key: &str) -> i64 {
    let mut conn = app.pool.get().await.expect("connection");
    conn.client()
        .query_one(
            "SELECT count(*) FROM events WHERE metadata->>'idempotency_key' = $1",
            &[&key],
        )
        .await
        .expect("count keyed events")
        .get(0)
}

/// Makes the claim of `key` look as old as a dead host's claim is after a while.
async fn age_claim(app: &TestApp, key: &str) {
    let mut conn = app.pool.get().await.expect("connection");
    let aged = conn
        .client()
        .execute(
            "UPDATE idempotency_keys SET claimed_at = claimed_at - interval '1 hour'
             WHERE idem_key = $1 AND NOT completed",
            &[&key],
        )
        .await
        .expect("age the claim");
    assert_eq!(aged, 1, "one unfinished claim of {key}");
}

/// A host that dies between appending a keyed write and recording its answer,
/// and another one on the same stores, to retry on.
struct Crashing {
    dying: TestApp,
    other: TestApp,
}

impl Crashing {
    async fn start() -> Self {
        let (dying, other) = two_hosts(true).await;
        Self { dying, other }
    }

    /// A keyed write goes through the dying host, then is retried on the other
    /// one while the claim is fresh, after it went stale, and once more: every
    /// retry gets the same answer, and the key's one event is never appended
    /// again. Returns the first retry's answer.
    async fn crash_then_retry(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let (dying, other) = (&self.dying, &self.other);
        let key = testkit::unique_name("key");
        let first = dying
            .send_keyed(method.clone(), path, "alice", &key, body.clone())
            .await;
        assert_eq!(
            first.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            first.body
        );
        assert_eq!(events_with_key(other, &key).await, 1, "appended once");

        // While the claim is fresh: the first outcome, rebuilt from the event.
        let fresh = other
            .send_keyed(method.clone(), path, "alice", &key, body.clone())
            .await;
        assert_eq!(
            fresh.header("idempotent-replayed"),
            Some("true"),
            "{}",
            fresh.body
        );

        // After the claim went stale: the same, and nothing runs a second time.
        age_claim(other, &key).await;
        let stale = other
            .send_keyed(method.clone(), path, "alice", &key, body.clone())
            .await;
        assert_eq!(stale.expect_json(fresh.status), fresh.json());
        assert_eq!(stale.header("location"), fresh.header("location"));

        // The answer is now recorded: a third retry is a plain replay.
        let recorded = other.send_keyed(method, path, "alice", &key, body).await;
        assert_eq!(recorded.expect_json(fresh.status), fresh.json());
        assert_eq!(
            events_with_key(other, &key).await,
            1,
            "never appended twice"
        );
        fresh
    }
}

#[tokio::test]
async fn a_retry_after_a_crash_between_append_and_answer_gets_the_first_outcome() {
    let crashing = Crashing::start().await;
    let other = &crashing.other;

    // A create: the retry names the post the first attempt created, and no
    // second post exists.
    let created = crashing
        .crash_then_retry(Method::POST, "/posts", Some(json!({"message": "once"})))
        .await
        .expect_json(StatusCode::CREATED);
    let post = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["version"], 1);
    let mut conn = other.pool.get().await.expect("connection");
    let creates: i64 = conn
        .client()
        .query_one(
            "SELECT count(*) FROM events WHERE event_type = 'PostCreated'",
            &[],
        )
        .await
        .expect("count creates")
        .get(0);
    assert_eq!(creates, 1, "no orphan post");

    // An edit.
    let message = Some(json!({"message": "edited once"}));
    let edited = crashing
        .crash_then_retry(Method::PUT, &format!("/posts/{post}/message"), message)
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(edited, json!({"id": post, "version": 2}));

    // A comment: the retry names the comment the first attempt added.
    let text = Some(json!({"text": "first!"}));
    let commented = crashing
        .crash_then_retry(Method::POST, &format!("/posts/{post}/comments"), text)
        .await
        .expect_json(StatusCode::CREATED);
    assert_eq!(commented["version"], 3);
    let events = other.history(&post).await;
    assert_eq!(events[2]["type"], "CommentAdded");
    assert_eq!(commented["comment_id"], events[2]["data"]["comment_id"]);

    // A like, retried after others moved the post on: the version is the
    // like's own, not the post's latest.
    let liked = crashing
        .crash_then_retry(Method::POST, &format!("/posts/{post}/likes"), None)
        .await
        .expect_json(StatusCode::OK);
    assert_eq!(liked["version"], 4);
    for fan in ["bob", "carol"] {
        ok_version(&other.like(&post, fan).await);
    }
    let events = other.history(&post).await;
    assert_eq!(events.len(), 6, "{events:#?}");
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "PostCreated",
            "MessageEdited",
            "CommentAdded",
            "PostLiked",
            "PostLiked",
            "PostLiked"
        ]
    );
    crashing.dying.stop().await;
    crashing.other.stop().await;
}

#[tokio::test]
async fn two_hosts_never_answer_from_state_the_other_moved_on() {
    let (a, b) = two_hosts(false).await;
    let post = a.create_post("alice", "shared").await;

    // Like via A, unlike via B, like again via A: the second like is appended.
    assert_eq!(ok_version(&a.like(&post, "u").await), 2);
    assert_eq!(ok_version(&b.unlike(&post, "u").await), 3);
    assert_eq!(ok_version(&a.like(&post, "u").await), 4);
    let events = a.history(&post).await;
    assert_eq!(events.last().expect("events")["type"], "PostLiked");

    // A repeated like via B sees A's like: a no-op at the current version.
    assert_eq!(ok_version(&b.like(&post, "u").await), 4);

    // Conditional edits alternate between the hosts, each on the version the
    // other just wrote.
    let mut version = 4;
    for (round, host) in [&b, &a, &b, &a].into_iter().enumerate() {
        let etag = format!("\"{version}\"");
        let answer = host
            .edit_if_match(&post, "alice", &etag, &format!("edit {round}"))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "round {round}: {}",
            answer.body
        );
        version += 1;
        assert_eq!(answer.json()["version"], version);
    }
    // A stale precondition is refused with the post's real version.
    let etag = format!("\"{}\"", version - 1);
    let stale = b.edit_if_match(&post, "alice", &etag, "too late").await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert!(
        stale.body.contains(&format!("version {version}")),
        "{}",
        stale.body
    );

    // A comment added via A can be edited via B, whose cached state predates it.
    ok_version(&b.like(&post, "v").await);
    let comment_id = a.add_comment(&post, "carol", "hi").await;
    let edited = b
        .put_json(
            &format!("/posts/{post}/comments/{comment_id}"),
            "carol",
            json!({"text": "hello"}),
        )
        .await;
    assert_eq!(edited.status, StatusCode::OK, "{}", edited.body);

    // Deleted via A: B answers 410, not from its cache.
    let deleted = a.delete_post(&post, "alice").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let gone = b.unlike(&post, "v").await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);

    a.stop().await;
    b.stop().await;
}

/// The events table locked against writes for longer than the stale window,
/// while a keyed comment and, once its claim went stale, its retry are in
/// flight: the first gives up at its deadline (the server cuts its append
/// off), so when the lock goes, exactly one event carries the key and every
/// later retry gets that event's answer.
#[tokio::test]
async fn a_write_stuck_past_the_stale_window_and_its_retry_append_once() {
    let limits = command_host::WriteLimits::default();
    let (app, pool) = support::spawn_app_with_limits("once", limits).await;
    let post = app.create_post("alice", "hello").await;
    let key = "stuck-comment";
    let path = format!("/posts/{post}/comments");
    let send = |app: std::sync::Arc<TestApp>, path: String| async move {
        app.send_keyed(Method::POST, &path, "bob", key, Some(json!({"text": "hi"})))
            .await
    };
    let mut locker = pool.get().await.expect("connection");
    let lock = locker.client().transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    let first = tokio::spawn(send(std::sync::Arc::clone(&app), path.clone()));
    tokio::time::sleep(limits.claim_stale_after + std::time::Duration::from_millis(500)).await;
    let retry = tokio::spawn(send(std::sync::Arc::clone(&app), path.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    lock.commit().await.expect("unlock");
    let first = first.await.expect("first");
    let retry = retry.await.expect("retry");
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "the first attempt gave up at its deadline: {}",
        first.body
    );
    let last = send(std::sync::Arc::clone(&app), path.clone()).await;
    assert_eq!(
        events_with_key(&app, key).await,
        1,
        "one event carries the key"
    );
    let comment = last.expect_json(StatusCode::CREATED)["comment_id"].clone();
    if retry.status == StatusCode::CREATED {
        assert_eq!(retry.json()["comment_id"], comment);
    }
}
