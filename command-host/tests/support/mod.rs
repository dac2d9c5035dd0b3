//! The command host under test: the real server on port 0, a fresh PostgreSQL
//! schema for its event store and records, and a fresh Kafka topic.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::time::Duration;

use command_host::CommandHostDeps;
use command_host::records::CommandRecords;
use command_host::records::postgres::PostgresCommandRecords;
use command_host::relay::RelayConfig;
use domain::{Timestamp, UserId};
use event_bus::KafkaPublisher;
use event_store::postgres::PostgresEventStore;
use hyper::{Method, StatusCode};
use platform::auth::TokenKey;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use platform::pg::PgPool;
use testkit::http::HttpClient;
use tokio::sync::oneshot;
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

/// Starts the host on existing storage (e.g. to restart it) and a given broker.
pub async fn spawn_app_on(pool: PgPool, schema: String, topic: String, brokers: String) -> TestApp {
    let records = PostgresCommandRecords::new(pool.clone());
    records.migrate().await.expect("migrate command records");
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
    let store = PostgresEventStore::new(pool.clone());
    store.migrate().await.expect("migrate event store");
    let publisher = KafkaPublisher::new(&brokers, &topic).expect("producer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let (stop, stopped) = oneshot::channel::<()>();
    let deps = CommandHostDeps {
        store: PostgresEventStore::new(pool.clone()),
        records,
        publisher,
        token_key: TokenKey::new(SECRET),
        server: ServerConfig {
            header_read_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(5),
            ..ServerConfig::default()
        },
        relay: RelayConfig {
            poll_interval: Duration::from_millis(100),
            ..RelayConfig::default()
        },
        metrics: Metrics::new(),
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

    pub async fn post_json(&self, path: &str, user: &str, body: serde_json::Value) -> Answer {
        self.send(
            Method::POST,
            path,
            Some(user),
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn put_json(&self, path: &str, user: &str, body: serde_json::Value) -> Answer {
        self.send(
            Method::PUT,
            path,
            Some(user),
            &[],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn create_post(&self, user: &str, message: &str) -> String {
        let answer = self
            .post_json("/posts", user, serde_json::json!({ "message": message }))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.json()["id"].as_str().expect("id").to_owned()
    }

    /// Adds a comment by `user` to `post`; returns the comment's id.
    pub async fn add_comment(&self, post: &str, user: &str, text: &str) -> String {
        let answer = self
            .post_json(
                &format!("/posts/{post}/comments"),
                user,
                serde_json::json!({ "text": text }),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.json()["comment_id"]
            .as_str()
            .expect("comment id")
            .to_owned()
    }

    /// The post's events, as `GET /posts/{id}/events` answers them (any
    /// signed-in user may read them); the answer must be 200.
    pub async fn history(&self, post: &str) -> Vec<serde_json::Value> {
        let answer = self
            .send(
                Method::GET,
                &format!("/posts/{post}/events"),
                Some("auditor"),
                &[],
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.json()["events"]
            .as_array()
            .expect("events array")
            .clone()
    }

    /// Stops the server (graceful drain) and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
    }
}
