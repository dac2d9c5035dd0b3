//! Test support shared by every crate's integration tests: where the real
//! services are, and fresh, isolated places in them (a PostgreSQL schema, a Kafka
//! topic) so tests never share state.
//!
//! The PostgreSQL and broker addresses come from `SOURCEGRAM_TEST_POSTGRES_URL`
//! and `SOURCEGRAM_TEST_KAFKA_BROKERS`, defaulting to what `scripts/services.sh`
//! starts. These services are required: a test that cannot reach them fails.
//! MongoDB and SQL Server are optional: see [`mongodb_url`] and [`mssql_url`].

pub mod http;
mod macros;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use tokio_postgres::NoTls;
use uuid::Uuid;

use plumbing::pg::PgPool;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://sourcegram:sourcegram@127.0.0.1:5432/sourcegram";
pub const DEFAULT_KAFKA_BROKERS: &str = "127.0.0.1:9092";

pub fn postgres_url() -> String {
    std::env::var("SOURCEGRAM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

pub fn kafka_brokers() -> String {
    std::env::var("SOURCEGRAM_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| DEFAULT_KAFKA_BROKERS.to_owned())
}

/// `MONGODB_URL` if set; otherwise prints a loud SKIPPED line naming `suite`.
pub fn mongodb_url(suite: &str) -> Option<String> {
    optional_service("MONGODB_URL", "MongoDB", suite)
}

/// `MSSQL_URL` if set; otherwise prints a loud SKIPPED line naming `suite`.
pub fn mssql_url(suite: &str) -> Option<String> {
    optional_service("MSSQL_URL", "SQL Server", suite)
}

fn optional_service(var: &str, name: &str, suite: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            // Written to the process's stderr directly: the test harness captures
            // `eprintln!`, and a skip must never be silent. One write of the whole
            // line: `writeln!` writes it in pieces, between which libtest's own
            // output from other threads landed and split it.
            use std::io::Write as _;
            let line = format!(
                "SKIPPED: {suite}: {var} is not set, so the {name} adapter was NOT tested here\n"
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

/// A unique lowercase name with `prefix`, usable as a schema, topic or group.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

/// A client of the test PostgreSQL, of the test's own: for statements around
/// the code under test.
pub async fn pg_client() -> tokio_postgres::Client {
    let url = postgres_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    tokio::spawn(connection);
    client
}

/// Creates a schema with a unique name made from `prefix`; returns the name.
async fn create_schema(client: &tokio_postgres::Client, prefix: &str) -> String {
    let schema = unique_name(prefix);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create test schema");
    schema
}

/// A fresh PostgreSQL schema, created now, and a pool whose connections use it as
/// their `search_path`. The schema is left behind for inspection; names are unique.
pub async fn fresh_pg_schema(prefix: &str) -> (PgPool, String) {
    let schema = create_schema(&pg_client().await, prefix).await;
    let mut config: tokio_postgres::Config = postgres_url().parse().expect("valid postgres url");
    config.options(format!("-c search_path={schema}"));
    (PgPool::new(config, 8), schema)
}

/// A fresh PostgreSQL schema for code that opens its own connections from a
/// URL, as the hosts do: the URL (see [`postgres_url_in`]), the schema's name,
/// and a client of the test's own beside it.
pub async fn fresh_pg_schema_url(prefix: &str) -> (String, String, tokio_postgres::Client) {
    let client = pg_client().await;
    let schema = create_schema(&client, prefix).await;
    (postgres_url_in(&schema), schema, client)
}

/// A fresh topic with `partitions` partitions on the test broker.
pub async fn fresh_topic(prefix: &str, partitions: i32) -> String {
    let topic = unique_name(prefix).replace('_', "-");
    create_topic(&kafka_brokers(), &topic, partitions)
        .await
        .unwrap_or_else(|e| panic!("the Kafka broker at {} is required: {e}", kafka_brokers()));
    topic
}

/// Creates `topic` unless it exists. The broker does not create topics on use.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &options,
        )
        .await
        .map_err(|e| e.to_string())?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(format!("create topic {name}: {code}")),
        }
    }
    Ok(())
}

/// Polls `check` until it returns `Some` or `timeout` passes. Tests wait with this,
/// never with a fixed sleep.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settings of a consumer in `group` on the test broker that reads a topic from
/// its start and commits nothing by itself; callers add what they need.
pub fn consumer_config(group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    config
}

/// A consumer of `topic` on `brokers` in a fresh group, from the topic's start,
/// that fetches without waiting long: for tests that check what arrived.
pub fn verifying_consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = consumer_config(&unique_name("verify"))
        .set("bootstrap.servers", brokers)
        .set("fetch.wait.max.ms", "20")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Analyzes `schema.table` now and keeps autovacuum from analyzing it again,
/// so its statistics stay those of its present size while the test grows it.
pub async fn analyze_and_hold_statistics(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) {
    client
        .batch_execute(&format!(
            "ALTER TABLE {schema}.{table} SET (autovacuum_enabled = false); ANALYZE {schema}.{table}"
        ))
        .await
        .expect("analyze and hold the statistics");
}

/// The test PostgreSQL URL with `schema` as its `search_path`, for code that
/// opens its own pool from a URL, as the hosts do.
pub fn postgres_url_in(schema: &str) -> String {
    let base = postgres_url();
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// Asserts that no statement read the whole of `schema.table`, grown to `rows`
/// rows, by sequential scan: fewer than `rows` rows were read that way, once
/// the statistics show at least `scans` scans of it (sequential or by index).
/// For tests that statements find rows by key even where stale statistics
/// would make the planner scan.
pub async fn assert_read_by_key(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    scans: i64,
    rows: i64,
) {
    let read = rows_read_by_seq_scan(client, schema, table, scans)
        .await
        .unwrap_or_else(|| panic!("the statistics of {schema}.{table} were never reported"));
    assert!(
        read < rows,
        "{read} rows of {table} were read by sequential scan: a plan made while the table was small was kept"
    );
}

/// How many rows of `schema.table` were read by sequential scan, once the
/// statistics show at least `scans` scans of it: backends report their table
/// statistics when idle (within about ten seconds) or when they exit. `None`
/// if they never do within 20 s.
async fn rows_read_by_seq_scan(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    scans: i64,
) -> Option<i64> {
    eventually(Duration::from_secs(20), || async {
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .expect("clear the statistics snapshot");
        let row = client
            .query_one(
                "SELECT seq_tup_read, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables
                 WHERE schemaname = $1 AND relname = $2",
                &[&schema, &table],
            )
            .await
            .expect("table statistics");
        (row.get::<_, i64>(1) >= scans).then(|| row.get(0))
    })
    .await
}

/// Where the Kafka broker's jars are: `SOURCEGRAM_KAFKA_LIB`, or where
/// `scripts/services.sh` puts the version `scripts/kafka/pom.xml` pins (as
/// `kafka_home` in `scripts/lib.sh` finds it).
pub fn kafka_lib_dir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("SOURCEGRAM_KAFKA_LIB")
        && !dir.is_empty()
    {
        return dir.into();
    }
    let pom_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka/pom.xml");
    let pom = std::fs::read_to_string(pom_path)
        .unwrap_or_else(|e| panic!("read {pom_path} for the Kafka version: {e}"));
    let version = pom
        .split_once("<kafka.version>")
        .and_then(|(_, rest)| rest.split_once("</kafka.version>"))
        .map(|(version, _)| version.trim())
        .unwrap_or_else(|| panic!("{pom_path} names no <kafka.version>"));
    let cache = match std::env::var("SOURCEGRAM_CACHE_DIR") {
        Ok(dir) if !dir.is_empty() => std::path::PathBuf::from(dir),
        _ => std::path::PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cache/sourcegram"),
    };
    let home = cache.join(format!("kafka-{version}"));
    assert!(
        home.join("lib.complete").exists(),
        "no Kafka {version} jars under {}: run scripts/services.sh",
        home.display()
    );
    home.join("lib")
}

/// A Kafka broker of a test's own (KRaft, broker and controller in one process)
/// on two free loopback ports, run from the jars `scripts/services.sh` fetched.
/// Tests that stop the broker use one, so that no other test is disturbed. Its
/// data directory survives its restarts; the process and the directory go when
/// it is dropped.
#[derive(Debug)]
pub struct PrivateKafka {
    dir: std::path::PathBuf,
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateKafka {
    /// Formats a fresh data directory and starts the broker; returns once it
    /// answers a metadata request.
    pub async fn start() -> Self {
        // Both listeners held at once, so the two ports differ.
        let (broker, controller) = (free_listener(), free_listener());
        let port = broker.local_addr().expect("bound").port();
        let controller_port = controller.local_addr().expect("bound").port();
        drop((broker, controller));
        let dir = std::env::temp_dir().join(unique_name("sourcegram_kafka"));
        std::fs::create_dir_all(&dir).expect("broker directory");
        let properties = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT\n\
             log.dirs={}\n\
             num.partitions=1\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             auto.create.topics.enable=false\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("server.properties"), properties).expect("write properties");
        let formatted = Self::java(&dir)
            .args(["kafka.tools.StorageTool", "format"])
            .arg(format!("--cluster-id={}", cluster_id()))
            .args(["-c", "server.properties"])
            .status()
            .await
            .expect("run the storage formatter");
        if !formatted.success() {
            let log = std::fs::read_to_string(dir.join("kafka.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&dir);
            panic!("format the private broker's storage:\n{log}");
        }
        let mut kafka = Self {
            dir,
            port,
            child: None,
        };
        kafka.restart().await;
        kafka
    }

    fn java(dir: &std::path::Path) -> tokio::process::Command {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("kafka.log"))
            .expect("broker log");
        let mut command = tokio::process::Command::new("java");
        command
            .args(["-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-cp"])
            .arg(format!("{}/*", kafka_lib_dir().display()))
            .current_dir(dir)
            .stdout(log.try_clone().expect("broker log"))
            .stderr(log)
            .kill_on_drop(true);
        command
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the broker on its data; returns once it answers metadata.
    pub async fn restart(&mut self) {
        let child = Self::java(&self.dir)
            .args(["kafka.Kafka", "server.properties"])
            .spawn()
            .unwrap_or_else(|e| panic!("java is required to run a private Kafka broker: {e}"));
        self.child = Some(child);
        let brokers = self.brokers();
        let answered = eventually(Duration::from_secs(90), || {
            let brokers = brokers.clone();
            async move {
                tokio::task::spawn_blocking(move || broker_answers(&brokers))
                    .await
                    .ok()
                    .flatten()
            }
        })
        .await;
        assert!(
            answered.is_some(),
            "the private broker did not answer within 90 s; its log is {}",
            self.dir.join("kafka.log").display()
        );
    }

    /// Kills the broker (SIGKILL), as a crash would.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill the broker");
        }
    }

    /// Stops the broker the way an operator does (SIGTERM), and waits for it.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().expect("a running broker has a pid").to_string();
            let sent = tokio::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .await;
            assert!(
                sent.is_ok_and(|s| s.success()),
                "send SIGTERM to the broker"
            );
            child.wait().await.expect("the broker exits");
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port")
}

/// Whether the broker at `brokers` answers a metadata request (blocking).
fn broker_answers(brokers: &str) -> Option<()> {
    use rdkafka::consumer::BaseConsumer;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .ok()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(2)).ok()?;
    (!metadata.brokers().is_empty()).then_some(())
}

/// A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.
/// Like Kafka's own `Uuid.randomUuid`, it never starts with `-`, which the
/// storage tool's argument parser would take for an option.
fn cluster_id() -> String {
    loop {
        let id = encoded_uuid();
        if !id.starts_with('-') {
            return id;
        }
    }
}

fn encoded_uuid() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut bits = 0u32;
    let mut held = 0;
    let mut out = String::with_capacity(22);
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            out.push(char::from(ALPHABET[((bits >> held) & 63) as usize]));
        }
    }
    if held > 0 {
        out.push(char::from(ALPHABET[((bits << (6 - held)) & 63) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cluster_id;

    #[test]
    fn cluster_ids_are_22_url_safe_characters_never_led_by_a_dash() {
        // One id in 64 would start with `-` if nothing prevented it.
        for _ in 0..10_000 {
            let id = cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }
}
