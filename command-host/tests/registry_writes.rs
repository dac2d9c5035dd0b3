//! The stream registry is written behind the response: a write is answered once
//! its events are durable, without waiting for its registry row, and a host that
//! shuts down gracefully writes every pending row before it stops. Real
//! PostgreSQL and the real broker; a thin wrapper around the PostgreSQL records
//! holds registry writes until the test lets them through.

mod support;

use std::time::Duration;

use command_host::records::CommandRecords;
use domain::PostId;
use support::HookedRecords;
use tokio::sync::watch;
use uuid::Uuid;

fn post_id(id: &str) -> PostId {
    PostId::from_uuid(Uuid::parse_str(id).expect("post id"))
}

#[tokio::test]
async fn writes_are_answered_before_their_registry_rows_and_shutdown_writes_them() {
    let (pool, schema) = testkit::fresh_pg_schema("registry").await;
    let topic = testkit::fresh_topic("registry", 1).await;
    let inner = support::migrated_records(&pool).await;
    let (gate, open) = watch::channel(false);
    let records = HookedRecords::new(inner.clone()).holding_registry_writes(open);
    let app = support::spawn_app_with(pool, schema, topic, testkit::kafka_brokers(), records).await;

    // Answered while its registry row is held back.
    let first = tokio::time::timeout(Duration::from_secs(10), app.create_post("alice", "first"))
        .await
        .expect("a create is answered without waiting for the registry");
    assert_eq!(
        inner.stream_head(post_id(&first)).await.expect("head"),
        None
    );
    let second = app.create_post("bob", "second").await;

    // Shutting down waits for the held rows: the rows are let through only if
    // the host has not stopped within a few seconds (a host that does not wait
    // stops in about one).
    let mut stopping = tokio::spawn(app.stop());
    let stopped_while_held = tokio::time::timeout(Duration::from_secs(3), &mut stopping)
        .await
        .is_ok();
    assert!(
        !stopped_while_held,
        "the host stopped with registry writes pending"
    );
    gate.send(true).expect("gate");
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the host stops once the rows are written")
        .expect("stop task");
    for (id, author) in [(&first, "alice"), (&second, "bob")] {
        let head = inner
            .stream_head(post_id(id))
            .await
            .expect("head")
            .unwrap_or_else(|| panic!("{author}'s post has no registry row after shutdown"));
        assert_eq!(head.author.as_str(), author);
        assert_eq!(head.version.get(), 1);
        assert!(!head.deleted);
    }
}
