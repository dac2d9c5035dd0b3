//! Every rule of the Post aggregate, written as given / when / then through one
//! helper: the events so far, a command by a user, and the events (or refusal)
//! it must cause.

use domain::event::{
    CommentAdded, CommentEdited, CommentRemoved, MessageEdited, PostCreated, PostDeleted,
    PostLiked, PostUnliked,
};
use domain::{
    CommandContext, CommentId, CommentText, DomainError, Message, Post, PostCommand, PostEvent,
    PostId, Timestamp, UserId, Version, decide,
};
use uuid::Uuid;

const NOW: i64 = 1_795_428_000_000;

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("test user ids are valid")
}
fn post_id() -> PostId {
    PostId::from_uuid(Uuid::from_u128(1))
}
fn comment_id(n: u128) -> CommentId {
    CommentId::from_uuid(Uuid::from_u128(1_000 + n))
}
/// The id the next comment gets in every `when`.
fn next_comment() -> CommentId {
    comment_id(99)
}
fn at() -> Timestamp {
    Timestamp::from_unix_millis(NOW)
}
fn message(text: &str) -> Message {
    Message::parse(text).expect("test messages are valid")
}
fn text(t: &str) -> CommentText {
    CommentText::parse(t).expect("test comment texts are valid")
}

fn created(author: &str) -> PostEvent {
    PostEvent::PostCreated(PostCreated {
        post_id: post_id(),
        author: user(author),
        message: message("hello"),
        created_at: Timestamp::from_unix_millis(NOW - 1_000),
    })
}
fn liked(by: &str) -> PostEvent {
    PostEvent::PostLiked(PostLiked { user: user(by) })
}
fn commented(n: u128, by: &str) -> PostEvent {
    PostEvent::CommentAdded(CommentAdded {
        comment_id: comment_id(n),
        author: user(by),
        text: text("a comment"),
        created_at: Timestamp::from_unix_millis(NOW - 500),
    })
}
fn removed(n: u128) -> PostEvent {
    PostEvent::CommentRemoved(CommentRemoved {
        comment_id: comment_id(n),
    })
}
fn deleted() -> PostEvent {
    PostEvent::PostDeleted(PostDeleted {
        deleted_at: Timestamp::from_unix_millis(NOW - 100),
    })
}

struct Given(Post);
struct When(Result<Vec<PostEvent>, DomainError>);

fn given(events: &[PostEvent]) -> Given {
    Given(Post::from_events(events))
}

impl Given {
    fn when(&self, command: PostCommand, by: &str) -> When {
        self.when_expecting(None, command, by)
    }

    fn when_expecting(&self, expected: Option<u64>, command: PostCommand, by: &str) -> When {
        let context = CommandContext {
            actor: user(by),
            now: at(),
            post_id: post_id(),
            new_comment_id: next_comment(),
            expected_version: expected.map(Version::new),
        };
        When(decide(&self.0, &command, &context))
    }
}

impl When {
    #[track_caller]
    fn then_expect(self, expected: &[PostEvent]) {
        assert_eq!(self.0, Ok(expected.to_vec()));
    }

    #[track_caller]
    fn then_refused(self, check: fn(&DomainError) -> bool) {
        match self.0 {
            Err(error) if check(&error) => {}
            other => panic!("expected a refusal of the right kind, got {other:?}"),
        }
    }
}

fn forbidden(e: &DomainError) -> bool {
    matches!(e, DomainError::Forbidden(_))
}
fn not_found(e: &DomainError) -> bool {
    matches!(e, DomainError::NotFound(_))
}
fn gone(e: &DomainError) -> bool {
    matches!(e, DomainError::Gone)
}
fn conflict(e: &DomainError) -> bool {
    matches!(e, DomainError::Conflict(_))
}
fn at_version_1(e: &DomainError) -> bool {
    matches!(e, DomainError::PreconditionFailed { current } if *current == Version::new(1))
}

#[test]
fn the_expected_version_comes_before_every_rule_but_existence() {
    let post = given(&[created("alice")]);
    // Met: the rules decide as without it.
    post.when_expecting(Some(1), PostCommand::LikePost, "bob")
        .then_expect(&[liked("bob")]);
    // Missed: refused before the rules are asked, even a no-op or a forbidden edit.
    post.when_expecting(Some(2), PostCommand::UnlikePost, "bob")
        .then_refused(at_version_1);
    post.when_expecting(Some(0), PostCommand::DeletePost, "bob")
        .then_refused(at_version_1);
    // A post that is not there, or is gone, says so whatever was expected.
    given(&[])
        .when_expecting(Some(3), PostCommand::LikePost, "bob")
        .then_refused(not_found);
    given(&[created("alice"), deleted()])
        .when_expecting(Some(1), PostCommand::LikePost, "bob")
        .then_refused(gone);
}

#[test]
fn create_post() {
    given(&[])
        .when(
            PostCommand::CreatePost {
                message: message(" hi "),
            },
            "alice",
        )
        .then_expect(&[PostEvent::PostCreated(PostCreated {
            post_id: post_id(),
            author: user("alice"),
            message: message("hi"),
            created_at: at(),
        })]);
    given(&[created("alice")])
        .when(
            PostCommand::CreatePost {
                message: message("again"),
            },
            "alice",
        )
        .then_refused(conflict);
}

#[test]
fn edit_message_is_for_the_author_of_a_live_post() {
    let edit = || PostCommand::EditMessage {
        message: message("edited"),
    };
    given(&[created("alice")])
        .when(edit(), "alice")
        .then_expect(&[PostEvent::MessageEdited(MessageEdited {
            message: message("edited"),
            edited_at: at(),
        })]);
    given(&[created("alice")])
        .when(edit(), "bob")
        .then_refused(forbidden);
    given(&[]).when(edit(), "alice").then_refused(not_found);
    given(&[created("alice"), deleted()])
        .when(edit(), "alice")
        .then_refused(gone);
}

#[test]
fn like_once_per_user() {
    given(&[created("alice")])
        .when(PostCommand::LikePost, "bob")
        .then_expect(&[liked("bob")]);
    given(&[created("alice")])
        .when(PostCommand::LikePost, "alice")
        .then_expect(&[liked("alice")]);
    given(&[created("alice"), liked("bob")])
        .when(PostCommand::LikePost, "bob")
        .then_expect(&[]);
    given(&[])
        .when(PostCommand::LikePost, "bob")
        .then_refused(not_found);
    given(&[created("alice"), deleted()])
        .when(PostCommand::LikePost, "bob")
        .then_refused(gone);
}

#[test]
fn unlike_only_what_you_like() {
    given(&[created("alice"), liked("bob")])
        .when(PostCommand::UnlikePost, "bob")
        .then_expect(&[PostEvent::PostUnliked(PostUnliked { user: user("bob") })]);
    given(&[created("alice"), liked("bob")])
        .when(PostCommand::UnlikePost, "carol")
        .then_expect(&[]);
    given(&[
        created("alice"),
        liked("bob"),
        PostEvent::PostUnliked(PostUnliked { user: user("bob") }),
    ])
    .when(PostCommand::UnlikePost, "bob")
    .then_expect(&[]);
    given(&[created("alice"), deleted()])
        .when(PostCommand::UnlikePost, "bob")
        .then_refused(gone);
}

#[test]
fn add_comment_by_any_user() {
    given(&[created("alice")])
        .when(
            PostCommand::AddComment {
                text: text(" nice "),
            },
            "bob",
        )
        .then_expect(&[PostEvent::CommentAdded(CommentAdded {
            comment_id: next_comment(),
            author: user("bob"),
            text: text("nice"),
            created_at: at(),
        })]);
    given(&[])
        .when(PostCommand::AddComment { text: text("x") }, "bob")
        .then_refused(not_found);
    given(&[created("alice"), deleted()])
        .when(PostCommand::AddComment { text: text("x") }, "bob")
        .then_refused(gone);
}

#[test]
fn edit_comment_is_for_its_author_while_it_exists() {
    let edit = |n| PostCommand::EditComment {
        comment_id: comment_id(n),
        text: text("better"),
    };
    let history = [created("alice"), commented(1, "bob")];
    given(&history)
        .when(edit(1), "bob")
        .then_expect(&[PostEvent::CommentEdited(CommentEdited {
            comment_id: comment_id(1),
            text: text("better"),
            edited_at: at(),
        })]);
    given(&history)
        .when(edit(1), "alice")
        .then_refused(forbidden);
    given(&history).when(edit(2), "bob").then_refused(not_found);
    given(&[created("alice"), commented(1, "bob"), removed(1)])
        .when(edit(1), "bob")
        .then_refused(not_found);
    given(&[created("alice"), commented(1, "bob"), deleted()])
        .when(edit(1), "bob")
        .then_refused(gone);
}

#[test]
fn remove_comment_by_its_author_or_the_posts_author() {
    let remove = |n| PostCommand::RemoveComment {
        comment_id: comment_id(n),
    };
    let history = [created("alice"), commented(1, "bob")];
    given(&history)
        .when(remove(1), "bob")
        .then_expect(&[removed(1)]);
    given(&history)
        .when(remove(1), "alice")
        .then_expect(&[removed(1)]);
    given(&history)
        .when(remove(1), "carol")
        .then_refused(forbidden);
    given(&history)
        .when(remove(7), "bob")
        .then_refused(not_found);
    given(&[created("alice"), commented(1, "bob"), removed(1)])
        .when(remove(1), "bob")
        .then_refused(not_found);
}

#[test]
fn delete_post_is_for_its_author_and_then_everything_is_gone() {
    given(&[created("alice")])
        .when(PostCommand::DeletePost, "alice")
        .then_expect(&[PostEvent::PostDeleted(PostDeleted { deleted_at: at() })]);
    given(&[created("alice")])
        .when(PostCommand::DeletePost, "bob")
        .then_refused(forbidden);
    given(&[])
        .when(PostCommand::DeletePost, "alice")
        .then_refused(not_found);
    let after = [
        created("alice"),
        commented(1, "bob"),
        liked("bob"),
        deleted(),
    ];
    for (command, by) in [
        (
            PostCommand::EditMessage {
                message: message("x"),
            },
            "alice",
        ),
        (PostCommand::LikePost, "carol"),
        (PostCommand::UnlikePost, "bob"),
        (PostCommand::AddComment { text: text("x") }, "bob"),
        (
            PostCommand::EditComment {
                comment_id: comment_id(1),
                text: text("x"),
            },
            "bob",
        ),
        (
            PostCommand::RemoveComment {
                comment_id: comment_id(1),
            },
            "alice",
        ),
        (PostCommand::DeletePost, "alice"),
    ] {
        given(&after).when(command, by).then_refused(gone);
    }
    given(&after)
        .when(
            PostCommand::CreatePost {
                message: message("x"),
            },
            "alice",
        )
        .then_refused(conflict);
}

#[test]
fn apply_folds_state_and_counts_versions() {
    let post = Post::from_events(&[
        created("alice"),
        liked("bob"),
        liked("carol"),
        commented(1, "dave"),
        removed(1),
    ]);
    assert_eq!(post.version().get(), 5);
    assert_eq!(post.author(), Some(&user("alice")));
    assert_eq!(post.like_count(), 2);
    assert!(post.is_liked_by(&user("bob")) && !post.is_liked_by(&user("dave")));
    assert_eq!(post.live_comments().count(), 0);
    assert!(!post.is_deleted());
}

#[test]
fn a_snapshot_restores_the_state_and_refuses_anything_else() {
    let post = Post::from_events(&[
        created("alice"),
        liked("bob"),
        liked("carol"),
        commented(1, "dave"),
    ]);
    let bytes = post.to_snapshot();
    assert_eq!(Post::from_snapshot(&bytes).expect("restores"), post);
    for broken in [
        &bytes[..3],
        &bytes[..bytes.len() - 1],
        b"\0\0\0\x02{}".as_slice(),
    ] {
        assert!(Post::from_snapshot(broken).is_err(), "{broken:?}");
    }
}
