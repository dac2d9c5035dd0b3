//! Test support shared by every crate's integration tests: where the real
//! services are, and fresh, isolated places in them (a PostgreSQL schema, a Kafka
//! topic) so tests never share state.
//!
//! The PostgreSQL and broker addresses come from `SOURCEGRAM_TEST_POSTGRES_URL`
//! and `SOURCEGRAM_TEST_KAFKA_BROKERS`, defaulting to what `scripts/services.sh`
//! starts. These services are required: a test that cannot reach them fails.
//! MongoDB and SQL Server are optional: see [`mongodb_url`] and [`mssql_url`].

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::pg::PgPool;

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

/// A fresh PostgreSQL schema, created now, and a pool whose connections use it as
/// their `search_path`. The schema is left behind for inspection; names are unique.
pub async fn fresh_pg_schema(prefix: &str) -> (PgPool, String) {
    let schema = unique_name(prefix);
    let url = postgres_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} is required for this test: {e}"));
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create test schema");
    let mut config: tokio_postgres::Config = url.parse().expect("valid postgres url");
    config.options(format!("-c search_path={schema}"));
    (PgPool::new(config, 8), schema)
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
