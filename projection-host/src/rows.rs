//! A post's read-model rows folded in memory from its events. The replay writes
//! these in bulk; tests compare the live model against them.

use std::collections::{BTreeMap, BTreeSet};

use domain::{EventEnvelope, PostEvent, Timestamp};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostRow {
    pub id: Uuid,
    pub author: String,
    pub message: String,
    pub likes: i32,
    pub comment_count: i32,
    pub created_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommentRow {
    pub post_id: Uuid,
    pub id: Uuid,
    pub author: String,
    pub text: String,
    pub created_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    pub removed: bool,
}

/// Everything the read model holds about one post.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRows {
    pub post: Option<PostRow>,
    pub comments: BTreeMap<Uuid, CommentRow>,
    pub likes: BTreeSet<String>,
}

impl StreamRows {
    /// Folds one event into the rows, with the same effects as the live projector.
    pub fn apply(&mut self, envelope: &EventEnvelope, event: &PostEvent) {
        let version = i64::try_from(envelope.version.get()).unwrap_or(i64::MAX);
        if let PostEvent::PostCreated(e) = event {
            self.post = Some(PostRow {
                id: e.post_id.as_uuid(),
                author: e.author.to_string(),
                message: e.message.as_str().to_owned(),
                likes: 0,
                comment_count: 0,
                created_at: e.created_at,
                edited_at: None,
                deleted_at: None,
                version,
            });
            return;
        }
        let Some(post) = self.post.as_mut() else {
            return;
        };
        post.version = version;
        match event {
            PostEvent::PostCreated(_) => {}
            PostEvent::MessageEdited(e) => {
                post.message = e.message.as_str().to_owned();
                post.edited_at = Some(e.edited_at);
            }
            PostEvent::PostLiked(e) => {
                if self.likes.insert(e.user.to_string()) {
                    post.likes += 1;
                }
            }
            PostEvent::PostUnliked(e) => {
                if self.likes.remove(e.user.as_str()) {
                    post.likes -= 1;
                }
            }
            PostEvent::CommentAdded(e) => {
                let id = e.comment_id.as_uuid();
                if let std::collections::btree_map::Entry::Vacant(slot) = self.comments.entry(id) {
                    post.comment_count += 1;
                    slot.insert(CommentRow {
                        post_id: post.id,
                        id,
                        author: e.author.to_string(),
                        text: e.text.as_str().to_owned(),
                        created_at: e.created_at,
                        edited_at: None,
                        removed: false,
                    });
                }
            }
            PostEvent::CommentEdited(e) => {
                if let Some(comment) = self.comments.get_mut(&e.comment_id.as_uuid()) {
                    comment.text = e.text.as_str().to_owned();
                    comment.edited_at = Some(e.edited_at);
                }
            }
            PostEvent::CommentRemoved(e) => {
                if let Some(comment) = self.comments.get_mut(&e.comment_id.as_uuid())
                    && !comment.removed
                {
                    comment.removed = true;
                    post.comment_count -= 1;
                }
            }
            PostEvent::PostDeleted(e) => post.deleted_at = Some(e.deleted_at),
        }
    }
}
