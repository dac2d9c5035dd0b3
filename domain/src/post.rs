//! The Post aggregate. [`decide`] holds every rule of the Post's rule table and returns
//! the events a command causes; [`apply`] folds an event into the state and has no
//! logic that can fail.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::event::{
    CommentAdded, CommentEdited, CommentRemoved, MessageEdited, PostCreated, PostDeleted,
    PostEvent, PostLiked, PostUnliked,
};
use crate::likes::LikeSet;
use crate::time::Timestamp;
use crate::values::{CommentId, CommentText, Message, PostId, UserId, Version};

/// What a user asks of a post. Inputs are already parsed value objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostCommand {
    CreatePost {
        message: Message,
    },
    EditMessage {
        message: Message,
    },
    LikePost,
    UnlikePost,
    AddComment {
        text: CommentText,
    },
    EditComment {
        comment_id: CommentId,
        text: CommentText,
    },
    RemoveComment {
        comment_id: CommentId,
    },
    DeletePost,
}

/// What the world supplies to a decision: who acts, when, and the ids a new post
/// or comment would get. The domain never makes these up itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub actor: UserId,
    pub now: Timestamp,
    /// The stream the command is aimed at; a new post takes this id.
    pub post_id: PostId,
    /// The id a comment added by this command takes.
    pub new_comment_id: CommentId,
    /// The version the actor expects the post to be at (HTTP's `If-Match`),
    /// if they said.
    pub expected_version: Option<Version>,
}

/// A comment as the aggregate remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub author: UserId,
    pub text: CommentText,
    pub removed: bool,
}

/// The state of one post, folded from its events. `Post::default()` is a stream
/// with no events: the post does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Post {
    version: Version,
    created: Option<Created>,
    likes: LikeSet,
    comments: BTreeMap<CommentId, Comment>,
    deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Created {
    id: PostId,
    author: UserId,
    message: Message,
}

/// The layout of a post's state in a snapshot. Raise it whenever [`Post`]'s
/// fields or their meaning change: snapshots of another layout are ignored,
/// and the state is folded from the events instead.
/// 2: likes fingerprinted with SHA-256 instead of FNV-1a.
pub const SNAPSHOT_SCHEMA: u32 = 2;

/// Why bytes are not a snapshot of a post.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a post snapshot: {0}")]
pub struct SnapshotError(String);

/// A snapshot's head: everything but the likes.
#[derive(Serialize, Deserialize)]
struct SnapshotHead {
    version: Version,
    created: Option<Created>,
    comments: BTreeMap<CommentId, Comment>,
    deleted: bool,
    likes: usize,
}

impl Post {
    /// Folds a whole stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a PostEvent>) -> Self {
        events.into_iter().fold(Post::default(), |mut post, event| {
            apply(&mut post, event);
            post
        })
    }

    /// The state as bytes, for a snapshot of schema [`SNAPSHOT_SCHEMA`]: the
    /// head's length (4 bytes), the head as JSON, then each like's fingerprint
    /// (16 bytes, big-endian, sorted). Loading it back costs a copy, not a fold.
    pub fn to_snapshot(&self) -> Vec<u8> {
        let likes = self.likes.sorted();
        let head = serde_json::to_vec(&SnapshotHead {
            version: self.version,
            created: self.created.clone(),
            comments: self.comments.clone(),
            deleted: self.deleted,
            likes: likes.len(),
        })
        .expect("a post's state serializes");
        let head_len = u32::try_from(head.len()).expect("a post's head is under 4 GiB");
        let mut bytes = Vec::with_capacity(4 + head.len() + 16 * likes.len());
        bytes.extend_from_slice(&head_len.to_be_bytes());
        bytes.extend_from_slice(&head);
        for like in likes {
            bytes.extend_from_slice(&like.to_be_bytes());
        }
        bytes
    }

    /// The state [`Self::to_snapshot`] wrote; an error for anything else.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let bad = |why: &str| SnapshotError(why.to_owned());
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("too short"))?;
        let head_len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad("head length"))?;
        if rest.len() < head_len {
            return Err(bad("head cut short"));
        }
        let (head, likes) = rest.split_at(head_len);
        let head: SnapshotHead =
            serde_json::from_slice(head).map_err(|e| SnapshotError(e.to_string()))?;
        if likes.len() != head.likes * 16 {
            return Err(bad("likes cut short"));
        }
        let likes: Vec<u128> = likes
            .chunks_exact(16)
            .map(|c| u128::from_be_bytes(c.try_into().expect("16 bytes")))
            .collect();
        Ok(Self {
            version: head.version,
            created: head.created,
            likes: LikeSet::from_sorted(likes).ok_or_else(|| bad("likes out of order"))?,
            comments: head.comments,
            deleted: head.deleted,
        })
    }

    /// How many events have been folded in.
    pub fn version(&self) -> Version {
        self.version
    }

    pub fn exists(&self) -> bool {
        self.created.is_some()
    }

    pub fn id(&self) -> Option<PostId> {
        self.created.as_ref().map(|c| c.id)
    }

    pub fn author(&self) -> Option<&UserId> {
        self.created.as_ref().map(|c| &c.author)
    }

    pub fn message(&self) -> Option<&Message> {
        self.created.as_ref().map(|c| &c.message)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    /// How many users like the post.
    pub fn like_count(&self) -> usize {
        self.likes.len()
    }

    pub fn is_liked_by(&self, user: &UserId) -> bool {
        self.likes.contains(user)
    }

    pub fn comments(&self) -> &BTreeMap<CommentId, Comment> {
        &self.comments
    }

    /// Comments that were added and not removed.
    pub fn live_comments(&self) -> impl Iterator<Item = (&CommentId, &Comment)> {
        self.comments.iter().filter(|(_, c)| !c.removed)
    }
}

/// Decides what `command` causes on `post`. Every rule lives here. An empty list
/// means "accepted, nothing changes" (liking twice, unliking when not liked).
///
/// The expected version is checked first, before every other rule; a post that
/// does not exist or is deleted is refused as such whatever the expectation.
pub fn decide(
    post: &Post,
    command: &PostCommand,
    ctx: &CommandContext,
) -> Result<Vec<PostEvent>, DomainError> {
    if let Some(expected) = ctx.expected_version
        && post.exists()
        && !post.deleted
        && post.version() != expected
    {
        return Err(DomainError::PreconditionFailed {
            current: post.version(),
        });
    }
    let actor = &ctx.actor;
    if let PostCommand::CreatePost { message } = command {
        if post.exists() {
            return Err(DomainError::Conflict("the post already exists"));
        }
        return Ok(vec![PostEvent::PostCreated(PostCreated {
            post_id: ctx.post_id,
            author: actor.clone(),
            message: message.clone(),
            created_at: ctx.now,
        })]);
    }

    let Some(created) = &post.created else {
        return Err(DomainError::NotFound("post"));
    };
    if post.deleted {
        return Err(DomainError::Gone);
    }
    let is_author = *actor == created.author;

    let events = match command {
        PostCommand::CreatePost { .. } => unreachable!("handled above"),
        PostCommand::EditMessage { message } => {
            if !is_author {
                return Err(DomainError::Forbidden(
                    "only the post's author may edit its message",
                ));
            }
            vec![PostEvent::MessageEdited(MessageEdited {
                message: message.clone(),
                edited_at: ctx.now,
            })]
        }
        PostCommand::LikePost => {
            if post.likes.contains(actor) {
                vec![]
            } else {
                vec![PostEvent::PostLiked(PostLiked {
                    user: actor.clone(),
                })]
            }
        }
        PostCommand::UnlikePost => {
            if post.likes.contains(actor) {
                vec![PostEvent::PostUnliked(PostUnliked {
                    user: actor.clone(),
                })]
            } else {
                vec![]
            }
        }
        PostCommand::AddComment { text } => {
            if post.comments.contains_key(&ctx.new_comment_id) {
                return Err(DomainError::Conflict("the comment id is already taken"));
            }
            vec![PostEvent::CommentAdded(CommentAdded {
                comment_id: ctx.new_comment_id,
                author: actor.clone(),
                text: text.clone(),
                created_at: ctx.now,
            })]
        }
        PostCommand::EditComment { comment_id, text } => {
            let comment = live_comment(post, comment_id)?;
            if comment.author != *actor {
                return Err(DomainError::Forbidden(
                    "only the comment's author may edit it",
                ));
            }
            vec![PostEvent::CommentEdited(CommentEdited {
                comment_id: *comment_id,
                text: text.clone(),
                edited_at: ctx.now,
            })]
        }
        PostCommand::RemoveComment { comment_id } => {
            let comment = live_comment(post, comment_id)?;
            if comment.author != *actor && !is_author {
                return Err(DomainError::Forbidden(
                    "only the comment's author or the post's author may remove it",
                ));
            }
            vec![PostEvent::CommentRemoved(CommentRemoved {
                comment_id: *comment_id,
            })]
        }
        PostCommand::DeletePost => {
            if !is_author {
                return Err(DomainError::Forbidden(
                    "only the post's author may delete it",
                ));
            }
            vec![PostEvent::PostDeleted(PostDeleted {
                deleted_at: ctx.now,
            })]
        }
    };
    Ok(events)
}

/// A removed comment is answered like one that never existed: it is gone from
/// every read and can be neither edited nor removed again.
fn live_comment<'a>(post: &'a Post, id: &CommentId) -> Result<&'a Comment, DomainError> {
    match post.comments.get(id) {
        Some(comment) if !comment.removed => Ok(comment),
        _ => Err(DomainError::NotFound("comment")),
    }
}

/// Folds one event into the state. No rules and no failure: an event is a fact.
/// Events that refer to something unknown (which `decide` never produces) only
/// advance the version.
pub fn apply(post: &mut Post, event: &PostEvent) {
    post.version = post.version.next();
    match event {
        PostEvent::PostCreated(e) => {
            post.created = Some(Created {
                id: e.post_id,
                author: e.author.clone(),
                message: e.message.clone(),
            });
        }
        PostEvent::MessageEdited(e) => {
            if let Some(created) = &mut post.created {
                created.message = e.message.clone();
            }
        }
        PostEvent::PostLiked(e) => {
            post.likes.insert(&e.user);
        }
        PostEvent::PostUnliked(e) => {
            post.likes.remove(&e.user);
        }
        PostEvent::CommentAdded(e) => {
            post.comments.insert(
                e.comment_id,
                Comment {
                    author: e.author.clone(),
                    text: e.text.clone(),
                    removed: false,
                },
            );
        }
        PostEvent::CommentEdited(e) => {
            if let Some(comment) = post.comments.get_mut(&e.comment_id) {
                comment.text = e.text.clone();
            }
        }
        PostEvent::CommentRemoved(e) => {
            if let Some(comment) = post.comments.get_mut(&e.comment_id) {
                comment.removed = true;
            }
        }
        PostEvent::PostDeleted(_) => post.deleted = true,
    }
}
