//! Exactly once across crashes and across command hosts, on real PostgreSQL and
//! the real broker.
//!
//! - A host that dies after appending a keyed write and before recording its
//!   answer: the retry, on another host, gets the first outcome and appends
//!   nothing. The first host's records fail the completion, which leaves the
//!   stores exactly as a host killed at that point leaves them.
//! - Two hosts on the same stores: neither answers from a cached post state that
//!   the other has moved on (a repeated like, a 412, a refusal).

mod support;

use command_host::records::postgres::PostgresCommandRecords;
use command_host::records::{
    CommandRecords, IdempotencyClaim, RecordsError, StoredResponse, StreamHead,
};
use domain::{PostId, Timestamp, UserId};
use hyper::{Method, StatusCode};
use serde_json::json;
use support::{Answer, TestApp};

/// The PostgreSQL records, except that no answer is ever recorded: the host
/// dies, as far as the stores can tell, between the append and the record.
#[derive(Clone)]
struct DyingRecords {
    inner: PostgresCommandRecords,
}

impl CommandRecords for DyingRecords {
    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
        stale_after_ms: i64,
    ) -> Result<IdempotencyClaim, RecordsError> {
        self.inner
            .claim_idempotency_key(user, key, fingerprint, now, stale_after_ms)
            .await
    }

    async fn complete_idempotency_key(
        &self,
        _user: &UserId,
        _key: &str,
        _response: &StoredResponse,
    ) -> Result<(), RecordsError> {
        Err(RecordsError::Unavailable("the host died here".to_owned()))
    }

    async fn release_idempotency_key(&self, user: &UserId, key: &str) -> Result<(), RecordsError> {
        self.inner.release_idempotency_key(user, key).await
    }

    async fn record_stream_head(&self, head: &StreamHead) -> Result<(), RecordsError> {
        self.inner.record_stream_head(head).await
    }

    async fn stream_head(&self, post_id: PostId) -> Result<Option<StreamHead>, RecordsError> {
        self.inner.stream_head(post_id).await
    }

    async fn ping(&self) -> Result<(), RecordsError> {
        self.inner.ping().await
    }
}

/// Two hosts on one fresh schema and topic; the first one's records never
/// record an answer when `dying`.
async fn two_hosts(dying: bool) -> (TestApp, TestApp) {
    let (pool, schema) = testkit::fresh_pg_schema("once").await;
    let topic = testkit::fresh_topic("once", 1).await;
    let brokers = testkit::kafka_brokers();
    let inner = PostgresCommandRecords::new(pool.clone());
    inner.migrate().await.expect("migrate command records");
    let first = if dying {
        support::spawn_app_with(
            pool.clone(),
            schema.clone(),
            topic.clone(),
            brokers.clone(),
            DyingRecords { inner },
        )
        .await
    } else {
        support::spawn_app_on(pool.clone(), schema.clone(), topic.clone(), brokers.clone()).await
    };
    let second = support::spawn_app_on(pool, schema, topic, brokers).await;
    (first, second)
}

async fn send_keyed(
    app: &TestApp,
    method: Method,
    path: &str,
    user: &str,
    key: &str,
    body: Option<serde_json::Value>,
) -> Answer {
    app.send(
        method,
        path,
        Some(user),
        &[("idempotency-key", key)],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
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

/// A keyed write goes through the dying host, then is retried on the other one
/// while the claim is fresh, after it went stale, and once more: every retry
/// gets the same answer, and the key's one event is never appended again.
async fn crash_then_retry(
    dying: &TestApp,
    other: &TestApp,
    path: &str,
    body: Option<serde_json::Value>,
    method: Method,
    expected_status: StatusCode,
) -> serde_json::Value {
    let key = testkit::unique_name("key");
    let first = send_keyed(dying, method.clone(), path, "alice", &key, body.clone()).await;
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.body
    );
    assert_eq!(events_with_key(other, &key).await, 1, "appended once");

    // While the claim is fresh: the first outcome, rebuilt from the event.
    let fresh = send_keyed(other, method.clone(), path, "alice", &key, body.clone()).await;
    assert_eq!(fresh.status, expected_status, "{}", fresh.body);
    assert_eq!(fresh.header("idempotent-replayed"), Some("true"));

    // After the claim went stale: the same, and nothing runs a second time.
    age_claim(other, &key).await;
    let stale = send_keyed(other, method.clone(), path, "alice", &key, body.clone()).await;
    assert_eq!(stale.status, expected_status, "{}", stale.body);
    assert_eq!(stale.json(), fresh.json());
    assert_eq!(stale.header("location"), fresh.header("location"));

    // The answer is now recorded: a third retry is a plain replay.
    let recorded = send_keyed(other, method, path, "alice", &key, body).await;
    assert_eq!(recorded.status, expected_status, "{}", recorded.body);
    assert_eq!(recorded.json(), fresh.json());
    assert_eq!(
        events_with_key(other, &key).await,
        1,
        "never appended twice"
    );

    fresh.json()
}

#[tokio::test]
async fn a_retry_after_a_crash_between_append_and_answer_gets_the_first_outcome() {
    let (dying, other) = two_hosts(true).await;

    // A create: the retry names the post the first attempt created, and no
    // second post exists.
    let created = crash_then_retry(
        &dying,
        &other,
        "/posts",
        Some(json!({"message": "once"})),
        Method::POST,
        StatusCode::CREATED,
    )
    .await;
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
    let edited = crash_then_retry(
        &dying,
        &other,
        &format!("/posts/{post}/message"),
        Some(json!({"message": "edited once"})),
        Method::PUT,
        StatusCode::OK,
    )
    .await;
    assert_eq!(edited, json!({"id": post, "version": 2}));

    // A comment: the retry names the comment the first attempt added.
    let commented = crash_then_retry(
        &dying,
        &other,
        &format!("/posts/{post}/comments"),
        Some(json!({"text": "first!"})),
        Method::POST,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(commented["version"], 3);
    let events = other.history(&post).await;
    assert_eq!(events[2]["type"], "CommentAdded");
    assert_eq!(commented["comment_id"], events[2]["data"]["comment_id"]);

    // A like, retried after others moved the post on: the version is the
    // like's own, not the post's latest.
    let liked = crash_then_retry(
        &dying,
        &other,
        &format!("/posts/{post}/likes"),
        None,
        Method::POST,
        StatusCode::OK,
    )
    .await;
    assert_eq!(liked["version"], 4);
    for fan in ["bob", "carol"] {
        let answer = other
            .send(
                Method::POST,
                &format!("/posts/{post}/likes"),
                Some(fan),
                &[],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
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
    dying.stop().await;
    other.stop().await;
}

async fn like(app: &TestApp, post: &str, user: &str, method: Method) -> Answer {
    let answer = app
        .send(
            method,
            &format!("/posts/{post}/likes"),
            Some(user),
            &[],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer
}

async fn edit_if_match(app: &TestApp, post: &str, version: u64, message: &str) -> Answer {
    let etag = format!("\"{version}\"");
    app.send(
        Method::PUT,
        &format!("/posts/{post}/message"),
        Some("alice"),
        &[("if-match", etag.as_str())],
        Some(json!({ "message": message }).to_string().into_bytes()),
    )
    .await
}

#[tokio::test]
async fn two_hosts_never_answer_from_state_the_other_moved_on() {
    let (a, b) = two_hosts(false).await;
    let post = a.create_post("alice", "shared").await;

    // Like via A, unlike via B, like again via A: the second like is appended.
    assert_eq!(
        like(&a, &post, "u", Method::POST).await.json()["version"],
        2
    );
    assert_eq!(
        like(&b, &post, "u", Method::DELETE).await.json()["version"],
        3
    );
    assert_eq!(
        like(&a, &post, "u", Method::POST).await.json()["version"],
        4
    );
    let events = a.history(&post).await;
    assert_eq!(events.last().expect("events")["type"], "PostLiked");

    // A repeated like via B sees A's like: a no-op at the current version.
    assert_eq!(
        like(&b, &post, "u", Method::POST).await.json()["version"],
        4
    );

    // Conditional edits alternate between the hosts, each on the version the
    // other just wrote.
    let mut version = 4;
    for (round, host) in [&b, &a, &b, &a].into_iter().enumerate() {
        let answer = edit_if_match(host, &post, version, &format!("edit {round}")).await;
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
    let stale = edit_if_match(&b, &post, version - 1, "too late").await;
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
    let _ = like(&b, &post, "v", Method::POST).await;
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
    let deleted = a
        .send(
            Method::DELETE,
            &format!("/posts/{post}"),
            Some("alice"),
            &[],
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    let gone = b
        .send(
            Method::DELETE,
            &format!("/posts/{post}/likes"),
            Some("v"),
            &[],
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::GONE, "{}", gone.body);

    a.stop().await;
    b.stop().await;
}
