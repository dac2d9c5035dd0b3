//! The domain's command generator: arbitrary commands by a handful of users on
//! one post, and the context each is decided in. The domain's properties use
//! it, and so does the projection host's test that the live read model and the
//! replay's fold agree (it includes this file by path), so both are driven by
//! the same sequences of accepted and refused commands.

#![allow(dead_code)]

use domain::{
    CommandContext, CommentId, CommentText, Message, Post, PostCommand, PostEvent, PostId,
    Timestamp, UserId, apply, decide,
};
use proptest::prelude::*;
use uuid::Uuid;

pub const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

/// One command and who sends it (an index into [`USERS`]). Comment ids are
/// drawn from a small set, so edits and removals often find their comment.
pub fn command() -> impl Strategy<Value = (PostCommand, usize)> {
    let comment = (0u128..6).prop_map(|n| CommentId::from_uuid(Uuid::from_u128(n)));
    let cmd = prop_oneof![
        Just(PostCommand::CreatePost {
            message: Message::parse("m").expect("valid")
        }),
        Just(PostCommand::EditMessage {
            message: Message::parse("e").expect("valid")
        }),
        Just(PostCommand::LikePost),
        Just(PostCommand::LikePost),
        Just(PostCommand::UnlikePost),
        Just(PostCommand::AddComment {
            text: CommentText::parse("c").expect("valid")
        }),
        comment
            .clone()
            .prop_map(|comment_id| PostCommand::EditComment {
                comment_id,
                text: CommentText::parse("c2").expect("valid")
            }),
        comment.prop_map(|comment_id| PostCommand::RemoveComment { comment_id }),
        Just(PostCommand::DeletePost),
    ];
    (cmd, 0..USERS.len())
}

/// Up to `most` commands in a row.
pub fn script(most: usize) -> impl Strategy<Value = Vec<(PostCommand, usize)>> {
    prop::collection::vec(command(), 0..most)
}

/// The context the `i`-th command of a script, by `USERS[who]`, is decided in.
pub fn context(post_id: PostId, i: usize, who: usize) -> CommandContext {
    CommandContext {
        actor: UserId::parse(USERS[who]).expect("valid"),
        now: Timestamp::from_unix_millis(1_795_428_000_000 + i as i64),
        post_id,
        new_comment_id: CommentId::from_uuid(Uuid::from_u128((i % 6) as u128)),
        expected_version: None,
    }
}

/// Decides every command of `script` in turn on a fresh post and folds what
/// each causes: the events the accepted ones appended, in order, each with
/// the context it was decided in.
pub fn run(post_id: PostId, script: &[(PostCommand, usize)]) -> Vec<(PostEvent, CommandContext)> {
    let mut post = Post::default();
    let mut events = Vec::new();
    for (i, (command, who)) in script.iter().enumerate() {
        let context = context(post_id, i, *who);
        if let Ok(new_events) = decide(&post, command, &context) {
            for event in new_events {
                apply(&mut post, &event);
                events.push((event, context.clone()));
            }
        }
    }
    events
}
