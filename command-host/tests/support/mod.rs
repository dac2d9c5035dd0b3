//! The command host under test: the real server on port 0, a fresh PostgreSQL
//! schema for its event store and records, and a fresh Kafka topic; the stores
//! on their own; and command records with hooks, for a host that dies or waits
//! at a chosen point.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use command_host::records::postgres::PostgresCommandRecords;
use command_host::records::{
    ClaimToken, CommandRecords, IdempotencyClaim, RecordsError, StoredResponse, StreamHead,
};
use command_host::relay::RelayConfig;
use command_host::{CommandHostDeps, WriteLimits};
use domain::{PostId, Timestamp, UserId};
use event_bus::KafkaPublisher;
use event_store::postgres::PostgresEventStore;
use hyper::{Method, StatusCode};
use platform::auth::TokenKey;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use plumbing::pg::PgPool;
use testkit::http::HttpClient;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub const SECRET: &[u8] = b"test-secret";

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub schema: String,
    pub topic: String,
    pub brokers: String,
    pub store: PostgresEventStore,
    key: TokenKey,
    client: HttpClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

pub use testkit::http::Answer;

/// Starts the host on a fresh schema and topic.
pub async fn spawn_app() -> TestApp {
    let (pool, schema) = testkit::fresh_pg_schema("cmd").await;
    let topic = testkit::fresh_topic("cmd", 3).await;
    spawn_app_on(pool, schema, topic, testkit::kafka_brokers()).await
}

/// Starts a host with `limits` on fresh storage named after `name` (one
/// partition), and returns the pool too, for a test that holds locks on it.
pub async fn spawn_app_with_limits(name: &str, limits: WriteLimits) -> (Arc<TestApp>, PgPool) {
    let (pool, schema) = testkit::fresh_pg_schema(name).await;
    let topic = testkit::fresh_topic(name, 1).await;
    let records = migrated_records(&pool).await;
    let brokers = testkit::kafka_brokers();
    let app = spawn_app_limited(pool.clone(), schema, topic, brokers, records, limits).await;
    (Arc::new(app), pool)
}

/// Starts the host on existing storage (e.g. to restart it) and a given broker.
pub async fn spawn_app_on(pool: PgPool, schema: String, topic: String, brokers: String) -> TestApp {
    let records = migrated_records(&pool).await;
    spawn_app_with(pool, schema, topic, brokers, records).await
}

/// Starts the host on existing storage with the given command records (a test
/// may wrap the PostgreSQL records to hold some of their calls).
pub async fn spawn_app_with<R: CommandRecords + 'static>(
    pool: PgPool,
    schema: String,
    topic: String,
    brokers: String,
    records: R,
) -> TestApp {
    spawn_app_limited(
        pool,
        schema,
        topic,
        brokers,
        records,
        WriteLimits::default(),
    )
    .await
}

/// [`spawn_app_with`] under `limits`; the event store's statements are cut off
/// at the write deadline, as the host's own `main` does.
pub async fn spawn_app_limited<R: CommandRecords + 'static>(
    pool: PgPool,
    schema: String,
    topic: String,
    brokers: String,
    records: R,
    limits: WriteLimits,
) -> TestApp {
    let store = PostgresEventStore::new(pool.clone());
    store.migrate().await.expect("migrate event store");
    let publisher = KafkaPublisher::new(&brokers, &topic).expect("producer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let bounded = plumbing::pg::with_statement_timeout(&pool, limits.write_deadline);
    let deps = CommandHostDeps {
        store: PostgresEventStore::new(bounded),
        records,
        publisher,
        token_key: TokenKey::new(SECRET),
        server: ServerConfig {
            header_read_timeout: Duration::from_secs(2),
            body_read_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            ..ServerConfig::default()
        },
        relay: RelayConfig {
            poll_interval: Duration::from_millis(100),
            ..RelayConfig::default()
        },
        metrics: Metrics::new(),
        limits,
    };
    let task = tokio::spawn(command_host::run(listener, deps, async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        pool,
        schema,
        topic,
        brokers,
        store,
        key: TokenKey::new(SECRET),
        client: HttpClient::new(addr),
        stop: Some(stop),
        task: Some(task),
    }
}

impl TestApp {
    pub fn token(&self, user: &str) -> String {
        let user = UserId::parse(user).expect("valid test user");
        let in_an_hour =
            Timestamp::from_unix_millis(platform::clock::now().unix_millis() + 3_600_000);
        self.key.mint(&user, in_an_hour)
    }

    pub fn expired_token(&self, user: &str) -> String {
        let user = UserId::parse(user).expect("valid test user");
        self.key.mint(&user, Timestamp::from_unix_millis(1_000))
    }

    /// Sends one request. `body` is sent as JSON unless a content type is given in `headers`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        let authorization = user.map(|user| format!("Bearer {}", self.token(user)));
        let mut all: Vec<(&str, &str)> = authorization
            .as_deref()
            .map(|value| ("authorization", value))
            .into_iter()
            .collect();
        all.extend_from_slice(headers);
        self.client.send(method, path, &all, body).await
    }

    /// `GET path` without a token.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, &[], None).await
    }

    /// `method path` as `user`, without a body.
    pub async fn call_as(&self, method: Method, path: &str, user: &str) -> Answer {
        self.send(method, path, Some(user), &[], None).await
    }

    pub async fn get_as(&self, path: &str, user: &str) -> Answer {
        self.call_as(Method::GET, path, user).await
    }

    pub async fn delete_as(&self, path: &str, user: &str) -> Answer {
        self.call_as(Method::DELETE, path, user).await
    }

    /// `user` creates a post with `message`.
    pub async fn create(&self, user: &str, message: &str) -> Answer {
        let body = serde_json::json!({ "message": message });
        self.post_json("/posts", user, body).await
    }

    /// `user` edits the message of `post`.
    pub async fn edit_message(&self, post: impl Display, user: &str, message: &str) -> Answer {
        let body = serde_json::json!({ "message": message });
        self.put_json(&format!("/posts/{post}/message"), user, body)
            .await
    }

    /// `user` likes `post`.
    pub async fn like(&self, post: impl Display, user: &str) -> Answer {
        self.call_as(Method::POST, &format!("/posts/{post}/likes"), user)
            .await
    }

    /// `user` takes back a like of `post`.
    pub async fn unlike(&self, post: impl Display, user: &str) -> Answer {
        self.delete_as(&format!("/posts/{post}/likes"), user).await
    }

    /// `user` comments on `post`.
    pub async fn comment(&self, post: impl Display, user: &str, text: &str) -> Answer {
        let body = serde_json::json!({ "text": text });
        self.post_json(&format!("/posts/{post}/comments"), user, body)
            .await
    }

    /// `user` edits `comment` on `post`.
    pub async fn edit_comment(
        &self,
        post: impl Display,
        comment: impl Display,
        user: &str,
        text: &str,
    ) -> Answer {
        let body = serde_json::json!({ "text": text });
        let path = format!("/posts/{post}/comments/{comment}");
        self.put_json(&path, user, body).await
    }

    /// `user` removes `comment` from `post`.
    pub async fn remove_comment(
        &self,
        post: impl Display,
        comment: impl Display,
        user: &str,
    ) -> Answer {
        self.delete_as(&format!("/posts/{post}/comments/{comment}"), user)
            .await
    }

    /// `user` deletes `post`.
    pub async fn delete_post(&self, post: impl Display, user: &str) -> Answer {
        self.delete_as(&format!("/posts/{post}"), user).await
    }

    /// `body` as JSON, as `user`, with `headers` besides the token.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        user: &str,
        headers: &[(&str, &str)],
        body: serde_json::Value,
    ) -> Answer {
        let body = Some(body.to_string().into_bytes());
        self.send(method, path, Some(user), headers, body).await
    }

    pub async fn post_json(&self, path: &str, user: &str, body: serde_json::Value) -> Answer {
        self.send_json(Method::POST, path, user, &[], body).await
    }

    pub async fn put_json(&self, path: &str, user: &str, body: serde_json::Value) -> Answer {
        self.send_json(Method::PUT, path, user, &[], body).await
    }

    /// `user` edits `post`'s message to `message` on the condition `if_match`.
    pub async fn edit_if_match(
        &self,
        post: impl Display,
        user: &str,
        if_match: &str,
        message: &str,
    ) -> Answer {
        let path = format!("/posts/{post}/message");
        let headers = [("if-match", if_match)];
        let body = serde_json::json!({ "message": message });
        self.send_json(Method::PUT, &path, user, &headers, body)
            .await
    }

    /// A request under the idempotency key `key`; `body`, if any, as JSON.
    pub async fn send_keyed(
        &self,
        method: Method,
        path: &str,
        user: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let headers = [("idempotency-key", key)];
        let body = body.map(|body| body.to_string().into_bytes());
        self.send(method, path, Some(user), &headers, body).await
    }

    /// Creates a post by `user`; returns its id.
    pub async fn create_post(&self, user: &str, message: &str) -> String {
        let created = self.create(user, message).await;
        created.expect_json(StatusCode::CREATED)["id"]
            .as_str()
            .expect("id")
            .to_owned()
    }

    /// Adds a comment by `user` to `post`; returns the comment's id.
    pub async fn add_comment(&self, post: &str, user: &str, text: &str) -> String {
        let added = self.comment(post, user, text).await;
        added.expect_json(StatusCode::CREATED)["comment_id"]
            .as_str()
            .expect("comment id")
            .to_owned()
    }

    /// The post's events, as `GET /posts/{id}/events` answers them (any
    /// signed-in user may read them); the answer must be 200.
    pub async fn history(&self, post: &str) -> Vec<serde_json::Value> {
        let answer = self
            .get_as(&format!("/posts/{post}/events"), "auditor")
            .await;
        answer.expect_json(StatusCode::OK)["events"]
            .as_array()
            .expect("events array")
            .clone()
    }

    /// Stops the host and starts it again on the same storage and broker.
    pub async fn restart(mut self) -> TestApp {
        self.shut_down().await;
        spawn_app_on(self.pool, self.schema, self.topic, self.brokers).await
    }

    /// Stops the server (graceful drain) and waits for it.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}

/// The version a write answered with; the answer must be a 200.
pub fn ok_version(answer: &Answer) -> serde_json::Value {
    answer.expect_json(StatusCode::OK)["version"].clone()
}

/// A migrated PostgreSQL event store on a fresh schema named after `prefix`,
/// and the pool of that schema.
pub async fn fresh_event_store(prefix: &str) -> (PostgresEventStore, PgPool) {
    let (pool, _) = testkit::fresh_pg_schema(prefix).await;
    let store = PostgresEventStore::new(pool.clone());
    store.migrate().await.expect("migrate event store");
    (store, pool)
}

/// The PostgreSQL command records on `pool`'s schema, migrated.
pub async fn migrated_records(pool: &PgPool) -> PostgresCommandRecords {
    let records = PostgresCommandRecords::new(pool.clone());
    records.migrate().await.expect("migrate command records");
    records
}

/// Command records that hand every call on to `inner`, once a hook let it
/// through: a host on them dies, or waits, at exactly the point a test chose.
pub struct HookedRecords<R> {
    pub inner: R,
    /// Completing an idempotency key fails.
    fail_completions: bool,
    /// Registry writes wait until this is true.
    registry_gate: Option<watch::Receiver<bool>>,
}

impl<R> HookedRecords<R> {
    /// Records that change nothing until a hook is added.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            fail_completions: false,
            registry_gate: None,
        }
    }

    /// No answer is ever recorded: the host dies, as far as the stores can
    /// tell, between appending a keyed write's events and recording its answer.
    pub fn failing_completions(mut self) -> Self {
        self.fail_completions = true;
        self
    }

    /// Registry writes wait until `open` is true.
    pub fn holding_registry_writes(mut self, open: watch::Receiver<bool>) -> Self {
        self.registry_gate = Some(open);
        self
    }

    /// Runs before each call, named by its method, reaches `inner`.
    async fn hook(&self, method: &str) -> Result<(), RecordsError> {
        match (method, &self.registry_gate) {
            ("complete_idempotency_key", _) if self.fail_completions => {
                Err(RecordsError::Unavailable("the host died here".to_owned()))
            }
            ("record_stream_head" | "record_stream_heads", Some(gate)) => {
                // The sender lives as long as the test.
                let _ = gate.clone().wait_for(|open| *open).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl<R: CommandRecords> CommandRecords for HookedRecords<R> {
    command_host::command_records_methods!(testkit::forward_to_inner { before = hook; });
}
