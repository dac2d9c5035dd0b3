//! A post's read-model rows: decoded from PostgreSQL (the query host), encoded
//! for COPY (the replay), and folded in memory from its events (the replay, and
//! tests that compare the live model against it). Column names and order come
//! from [`crate::schema`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use domain::{EventEnvelope, PostEvent, Timestamp, Version};
use plumbing::pg::{version_from_sql, version_to_sql};
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// One row's values for COPY, in its table's column order.
pub type CopyValues = Vec<Box<dyn ToSql + Sync + Send>>;

fn at(t: Timestamp) -> SystemTime {
    SystemTime::from(t)
}

fn timestamp(row: &Row, column: &str) -> Result<Timestamp, tokio_postgres::Error> {
    Ok(row.try_get::<_, SystemTime>(column)?.into())
}

fn optional_timestamp(row: &Row, column: &str) -> Result<Option<Timestamp>, tokio_postgres::Error> {
    Ok(row
        .try_get::<_, Option<SystemTime>>(column)?
        .map(Timestamp::from))
}

/// A post's row; serialized, it is the post as the query host shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PostRow {
    pub id: Uuid,
    pub author: String,
    pub message: String,
    pub likes: i32,
    pub comment_count: i32,
    pub created_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    #[serde(skip)]
    pub deleted_at: Option<Timestamp>,
    pub version: Version,
}

/// A comment's row; serialized, it is the comment as the query host shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommentRow {
    #[serde(skip)]
    pub post_id: Uuid,
    pub id: Uuid,
    pub author: String,
    pub text: String,
    pub created_at: Timestamp,
    pub edited_at: Option<Timestamp>,
    #[serde(skip)]
    pub removed: bool,
}

impl PostRow {
    /// A row selected with [`crate::schema::POSTS`]'s columns.
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get("id")?,
            author: row.try_get("author")?,
            message: row.try_get("message")?,
            likes: row.try_get("likes")?,
            comment_count: row.try_get("comment_count")?,
            created_at: timestamp(row, "created_at")?,
            edited_at: optional_timestamp(row, "edited_at")?,
            deleted_at: optional_timestamp(row, "deleted_at")?,
            version: version_from_sql(row.try_get("version")?).unwrap_or_default(),
        })
    }

    /// The values COPY writes, in [`crate::schema::POSTS`]'s column order.
    pub fn copy_values(&self) -> CopyValues {
        vec![
            Box::new(self.id),
            Box::new(self.author.clone()),
            Box::new(self.message.clone()),
            Box::new(self.likes),
            Box::new(self.comment_count),
            Box::new(at(self.created_at)),
            Box::new(self.edited_at.map(at)),
            Box::new(self.deleted_at.map(at)),
            Box::new(version_to_sql(self.version)),
        ]
    }
}

impl CommentRow {
    /// A row selected with [`crate::schema::COMMENTS`]'s columns.
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            post_id: row.try_get("post_id")?,
            id: row.try_get("id")?,
            author: row.try_get("author")?,
            text: row.try_get("text")?,
            created_at: timestamp(row, "created_at")?,
            edited_at: optional_timestamp(row, "edited_at")?,
            removed: row.try_get("removed")?,
        })
    }

    /// The values COPY writes, in [`crate::schema::COMMENTS`]'s column order.
    pub fn copy_values(&self) -> CopyValues {
        vec![
            Box::new(self.post_id),
            Box::new(self.id),
            Box::new(self.author.clone()),
            Box::new(self.text.clone()),
            Box::new(at(self.created_at)),
            Box::new(self.edited_at.map(at)),
            Box::new(self.removed),
        ]
    }
}

/// The values COPY writes for one like, in [`crate::schema::LIKES`]'s column order.
pub fn like_copy_values(post: Uuid, user: &str) -> CopyValues {
    vec![Box::new(post), Box::new(user.to_owned())]
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
        let version = envelope.version;
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
