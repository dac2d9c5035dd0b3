//! Properties over arbitrary command sequences: versions have no gaps, `apply`
//! never panics, and folding is deterministic.

mod generator;

use std::collections::BTreeSet;

use domain::{
    CommentId, CommentText, Message, Post, PostEvent, PostId, Timestamp, UserId, apply, decide,
};
use generator::USERS;
use proptest::prelude::*;
use uuid::Uuid;

proptest! {
    #[test]
    fn folding_any_accepted_sequence_has_gapless_versions(commands in generator::script(60)) {
        let mut post = Post::default();
        let mut events: Vec<PostEvent> = Vec::new();
        let mut likes = BTreeSet::new();
        for (i, (command, who)) in commands.into_iter().enumerate() {
            let context = generator::context(PostId::from_uuid(Uuid::from_u128(1)), i, who);
            if let Ok(new_events) = decide(&post, &command, &context) {
                for event in new_events {
                    let before = post.version();
                    apply(&mut post, &event);
                    prop_assert_eq!(post.version(), before.next());
                    match &event {
                        PostEvent::PostLiked(e) => { likes.insert(e.user.clone()); }
                        PostEvent::PostUnliked(e) => { likes.remove(&e.user); }
                        _ => {}
                    }
                    events.push(event);
                }
            }
        }
        prop_assert_eq!(post.version().get(), events.len() as u64);
        prop_assert_eq!(post.like_count(), likes.len());
        for user in USERS {
            let user = UserId::parse(user).expect("valid");
            prop_assert_eq!(post.is_liked_by(&user), likes.contains(&user));
        }
        prop_assert_eq!(Post::from_events(&events), post.clone());
        // A snapshot gives the same state back, and so does folding the events
        // after it onto it.
        let restored = Post::from_snapshot(&post.to_snapshot()).expect("a snapshot");
        prop_assert_eq!(&restored, &post);
    }

    #[test]
    fn apply_never_panics_on_any_event_order(events in prop::collection::vec((0usize..8, 0u128..4, 0usize..4), 0..40)) {
        let mut post = Post::default();
        for (n, (kind, id, who)) in events.iter().enumerate() {
            let user = UserId::parse(USERS[*who]).expect("valid");
            let comment_id = CommentId::from_uuid(Uuid::from_u128(*id));
            let at = Timestamp::from_unix_millis(0);
            let event = match kind {
                0 => PostEvent::PostCreated(domain::event::PostCreated { post_id: PostId::from_uuid(Uuid::from_u128(1)), author: user, message: Message::parse("m").expect("valid"), created_at: at }),
                1 => PostEvent::MessageEdited(domain::event::MessageEdited { message: Message::parse("m").expect("valid"), edited_at: at }),
                2 => PostEvent::PostLiked(domain::event::PostLiked { user }),
                3 => PostEvent::PostUnliked(domain::event::PostUnliked { user }),
                4 => PostEvent::CommentAdded(domain::event::CommentAdded { comment_id, author: user, text: CommentText::parse("t").expect("valid"), created_at: at }),
                5 => PostEvent::CommentEdited(domain::event::CommentEdited { comment_id, text: CommentText::parse("t").expect("valid"), edited_at: at }),
                6 => PostEvent::CommentRemoved(domain::event::CommentRemoved { comment_id }),
                _ => PostEvent::PostDeleted(domain::event::PostDeleted { deleted_at: at }),
            };
            apply(&mut post, &event);
            prop_assert_eq!(post.version().get(), n as u64 + 1);
        }
    }

    #[test]
    fn message_parse_accepts_exactly_the_valid_strings(raw in "\\PC{0,30}|[ \\t\\n\\x00-\\x1f]{0,5}") {
        let trimmed = raw.trim();
        let count = trimmed.chars().count();
        let controls = trimmed.chars().any(|c| c.is_control() && c != '\n' && c != '\t');
        let valid = (1..=2_000).contains(&count) && !controls;
        prop_assert_eq!(Message::parse(&raw).is_ok(), valid);
    }
}
