//! The stream registry is rebuilt from the event store: missing and stale rows
//! are brought to each stream's head, current ones are left as they are.

mod support;

use command_host::records::{CommandRecords, StreamHead};
use command_host::registry::{RepairReport, repair};
use domain::{
    CommandContext, CommentId, EventEnvelope, EventMetadata, Message, Post, PostCommand, PostId,
    Timestamp, UserId, Version, apply, decide,
};
use event_store::EventStore;
use event_store::postgres::PostgresEventStore;
use uuid::Uuid;

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user")
}

const T0: i64 = 1_795_428_000_000;

/// Runs `command` as `actor` against the stored stream, like the host does.
async fn write(
    store: &PostgresEventStore,
    post: &mut Post,
    id: PostId,
    actor: &str,
    command: PostCommand,
) {
    let now = Timestamp::from_unix_millis(T0 + post.version().get() as i64 * 1_000);
    let context = CommandContext {
        actor: user(actor),
        now,
        post_id: id,
        new_comment_id: CommentId::from_uuid(Uuid::new_v4()),
        expected_version: None,
    };
    let events = decide(post, &command, &context).expect("allowed");
    let mut version = post.version();
    let envelopes: Vec<EventEnvelope> = events
        .iter()
        .map(|event| {
            version = version.next();
            let metadata = EventMetadata {
                user: user(actor),
                request_id: Uuid::new_v4(),
                idempotency_key: None,
            };
            EventEnvelope::new(id, version, event, Uuid::new_v4(), now, metadata)
        })
        .collect();
    store
        .append_to_stream(id, post.version(), &envelopes)
        .await
        .expect("append");
    for event in &events {
        apply(post, event);
    }
}

fn create() -> PostCommand {
    PostCommand::CreatePost {
        message: Message::parse("hello").expect("valid"),
    }
}

fn head(post: PostId, author: &str, version: u64, deleted: bool) -> StreamHead {
    StreamHead {
        post_id: post,
        author: user(author),
        version: Version::new(version),
        deleted,
        updated_at: Timestamp::from_unix_millis(T0 + (version as i64 - 1) * 1_000),
    }
}

#[tokio::test]
async fn repair_brings_missing_and_stale_rows_to_each_streams_head() {
    let (store, pool) = support::fresh_event_store("repair").await;
    let records = support::migrated_records(&pool).await;

    // a: never recorded; b: recorded at v1, then liked and deleted; c: current.
    let ids: Vec<PostId> = (0..3).map(|_| PostId::from_uuid(Uuid::new_v4())).collect();
    let (mut a, mut b, mut c) = (Post::default(), Post::default(), Post::default());
    write(&store, &mut a, ids[0], "alice", create()).await;
    write(&store, &mut a, ids[0], "bob", PostCommand::LikePost).await;
    write(&store, &mut a, ids[0], "carol", PostCommand::LikePost).await;
    write(&store, &mut b, ids[1], "bob", create()).await;
    write(&store, &mut c, ids[2], "carol", create()).await;
    let recorded = [
        head(ids[1], "bob", 1, false),
        head(ids[2], "carol", 1, false),
    ];
    records
        .record_stream_heads(&recorded)
        .await
        .expect("record");
    write(&store, &mut b, ids[1], "alice", PostCommand::LikePost).await;
    write(&store, &mut b, ids[1], "bob", PostCommand::DeletePost).await;

    let report = repair(&store, &records).await.expect("repair");
    assert_eq!(
        report,
        RepairReport {
            streams: 3,
            events: 7
        }
    );
    let expected = [
        head(ids[0], "alice", 3, false),
        head(ids[1], "bob", 3, true),
        head(ids[2], "carol", 1, false),
    ];
    for head in expected {
        assert_eq!(
            records.stream_head(head.post_id).await.expect("head"),
            Some(head)
        );
    }
    // A second run changes nothing.
    assert_eq!(repair(&store, &records).await.expect("repair"), report);
}
