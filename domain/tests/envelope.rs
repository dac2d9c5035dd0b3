//! The envelope's JSON form (the same in the store, on Kafka and in replay),
//! decoding of every event, and upcasting of an older schema.

use domain::event::{DecodeError, PostCreated, PostLiked, Upcaster};
use domain::{
    CommentId, EventEnvelope, EventMetadata, Message, Post, PostCommand, PostEvent, PostId,
    Timestamp, UserId, Version, decide,
};
use serde_json::json;
use uuid::Uuid;

fn envelope(event: &PostEvent, version: u64) -> EventEnvelope {
    EventEnvelope::new(
        PostId::from_uuid(Uuid::from_u128(7)),
        Version::new(version),
        event,
        Uuid::from_u128(42),
        Timestamp::parse_rfc3339("2026-11-23T10:00:00.000Z").expect("valid"),
        EventMetadata {
            user: UserId::parse("alice").expect("valid"),
            request_id: Uuid::from_u128(9),
            idempotency_key: None,
        },
    )
}

#[test]
fn serializes_exactly_as_the_spec_shows() {
    let liked = PostEvent::PostLiked(PostLiked {
        user: UserId::parse("alice").expect("valid"),
    });
    let text = serde_json::to_string(&envelope(&liked, 3)).expect("serializes");
    assert_eq!(
        text,
        concat!(
            r#"{"event_id":"00000000-0000-0000-0000-00000000002a","stream_id":"00000000-0000-0000-0000-000000000007","#,
            r#""stream_type":"post","version":3,"type":"PostLiked","schema":1,"occurred_at":"2026-11-23T10:00:00.000Z","#,
            r#""metadata":{"user":"alice","request_id":"00000000-0000-0000-0000-000000000009","idempotency_key":null},"#,
            r#""data":{"user":"alice"}}"#
        )
    );
    let back: EventEnvelope = serde_json::from_str(&text).expect("parses");
    assert_eq!(back, envelope(&liked, 3));
    assert_eq!(back.decode(), Ok(liked));
}

#[test]
fn every_event_type_round_trips() {
    let alice = UserId::parse("alice").expect("valid");
    let ctx = |comment| domain::CommandContext {
        actor: alice.clone(),
        now: Timestamp::from_unix_millis(1_000),
        post_id: PostId::from_uuid(Uuid::from_u128(7)),
        new_comment_id: CommentId::from_uuid(Uuid::from_u128(comment)),
        expected_version: None,
    };
    let mut post = Post::default();
    let mut events = Vec::new();
    let comment = CommentId::from_uuid(Uuid::from_u128(5));
    for command in [
        PostCommand::CreatePost {
            message: Message::parse("m").expect("valid"),
        },
        PostCommand::EditMessage {
            message: Message::parse("m2").expect("valid"),
        },
        PostCommand::LikePost,
        PostCommand::UnlikePost,
        PostCommand::AddComment {
            text: domain::CommentText::parse("c").expect("valid"),
        },
        PostCommand::EditComment {
            comment_id: comment,
            text: domain::CommentText::parse("c2").expect("valid"),
        },
        PostCommand::RemoveComment {
            comment_id: comment,
        },
        PostCommand::DeletePost,
    ] {
        for event in decide(&post, &command, &ctx(5)).expect("accepted") {
            domain::apply(&mut post, &event);
            events.push(event);
        }
    }
    let types: Vec<&str> = events.iter().map(PostEvent::event_type).collect();
    assert_eq!(types, PostEvent::TYPES);
    for (i, event) in events.iter().enumerate() {
        let stored = serde_json::to_string(&envelope(event, i as u64 + 1)).expect("serializes");
        let read: EventEnvelope = serde_json::from_str(&stored).expect("parses");
        assert_eq!(read.decode().as_ref(), Ok(event));
    }
}

#[test]
fn unreadable_payloads_are_decode_errors() {
    assert!(matches!(
        PostEvent::from_data("PostShared", 1, json!({})),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        PostEvent::from_data("PostLiked", 2, json!({"user": "a"})),
        Err(DecodeError::SchemaTooNew { .. })
    ));
    assert!(matches!(
        PostEvent::from_data("PostLiked", 1, json!({"user": 5})),
        Err(DecodeError::BadPayload { .. })
    ));
    assert!(matches!(
        PostEvent::from_data("PostLiked", 1, json!({"user": "a", "extra": 1})),
        Err(DecodeError::BadPayload { .. })
    ));
    let too_long = "x".repeat(2_001);
    let payload = json!({"message": too_long, "edited_at": "2026-11-23T10:00:00.000Z"});
    assert!(
        matches!(
            PostEvent::from_data("MessageEdited", 1, payload),
            Err(DecodeError::BadPayload { .. })
        ),
        "a stored payload that breaks a value rule is refused"
    );
}

/// A made-up history: schema 0 of PostCreated called the message `body`.
fn body_to_message(mut data: serde_json::Value) -> Result<serde_json::Value, String> {
    let object = data.as_object_mut().ok_or("not an object")?;
    let body = object.remove("body").ok_or("no body field")?;
    object.insert("message".to_owned(), body);
    Ok(data)
}

#[test]
fn an_older_schema_is_upcast_when_read() {
    let upcasters = [Upcaster {
        event_type: "PostCreated",
        from_schema: 0,
        upcast: body_to_message,
    }];
    let old = json!({
        "post_id": "00000000-0000-0000-0000-000000000007",
        "author": "alice",
        "body": "from the old days",
        "created_at": "2020-01-01T00:00:00.000Z",
    });
    let event =
        PostEvent::from_data_with(&upcasters, "PostCreated", 0, old.clone()).expect("upcast");
    assert_eq!(
        event,
        PostEvent::PostCreated(PostCreated {
            post_id: PostId::from_uuid(Uuid::from_u128(7)),
            author: UserId::parse("alice").expect("valid"),
            message: Message::parse("from the old days").expect("valid"),
            created_at: Timestamp::parse_rfc3339("2020-01-01T00:00:00Z").expect("valid"),
        })
    );
    assert!(matches!(
        PostEvent::from_data("PostCreated", 0, old),
        Err(DecodeError::NoUpcaster { schema: 0, .. })
    ));
    let broken = PostEvent::from_data_with(&upcasters, "PostCreated", 0, json!({"no": "body"}));
    assert!(matches!(
        broken,
        Err(DecodeError::BadPayload { schema: 0, .. })
    ));
}
