//! The SQL the query host runs: keyset-paginated selects over the read model,
//! formatted once per schema and prepared once per connection.

use std::time::SystemTime;

use domain::{PostId, Timestamp};
use platform::pg::PgPool;
use read_model::SchemaName;
use read_model::rows::{CommentRow, PostRow};
use read_model::schema::{COMMENTS, POSTS, READ_MODEL_TABLES};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::queries::PostFilter;

/// A post as the API shows it: its row, without `deleted_at`.
pub type PostView = PostRow;

/// A comment as the API shows it: its row, without `post_id` and `removed`.
pub type CommentView = CommentRow;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotificationView {
    pub id: Uuid,
    pub kind: String,
    pub actor: String,
    pub post_id: Uuid,
    pub comment_id: Option<Uuid>,
    pub created_at: Timestamp,
}

/// A post as stored, including whether it was deleted.
#[derive(Debug, Clone)]
pub enum PostLookup {
    Missing,
    Deleted,
    Live(PostView),
}

#[derive(Debug)]
struct Sql {
    list_posts: String,
    get_post: String,
    get_post_with_comments: String,
    post_comments: String,
    list_comments: String,
    notifications: String,
}

/// Read access to the read model and the notifications.
#[derive(Debug)]
pub struct Reads {
    pool: PgPool,
    sql: Sql,
    tables: Vec<String>,
}

fn ts(t: SystemTime) -> Timestamp {
    t.into()
}

/// A post row as the API shows it, or how it is missing.
fn post_lookup(row: Option<&Row>) -> Result<PostLookup, tokio_postgres::Error> {
    let Some(row) = row else {
        return Ok(PostLookup::Missing);
    };
    let post = PostRow::from_row(row)?;
    if post.deleted_at.is_some() {
        return Ok(PostLookup::Deleted);
    }
    Ok(PostLookup::Live(post))
}

fn cursor_params(cursor: Option<Cursor>) -> (Option<SystemTime>, Option<Uuid>) {
    (cursor.map(|c| SystemTime::from(c.at)), cursor.map(|c| c.id))
}

impl Reads {
    pub fn new(pool: PgPool, read_model: &SchemaName, notifications: &SchemaName) -> Self {
        let (r, n) = (read_model, notifications);
        let (posts, comments) = (POSTS.column_list(), COMMENTS.column_list());
        let mut tables: Vec<String> = READ_MODEL_TABLES
            .iter()
            .map(|t| format!("{r}.{}", t.name))
            .collect();
        tables.push(format!("{n}.notifications"));
        Self {
            pool,
            tables,
            sql: Sql {
                // One statement for every filter combination: a NULL parameter
                // switches its filter off. Newest first, keyset on (created_at, id).
                list_posts: format!(
                    "SELECT {posts} FROM {r}.posts
                     WHERE deleted_at IS NULL
                       AND ($1::text IS NULL OR author = $1)
                       AND ($2::int IS NULL OR likes >= $2)
                       AND ($3::bool IS NULL OR (comment_count > 0) = $3)
                       AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5::uuid))
                     ORDER BY created_at DESC, id DESC LIMIT $6"
                ),
                get_post: format!("SELECT {posts} FROM {r}.posts WHERE id = $1"),
                // The post and its live comments in one round trip: the comments
                // come as one array per column, oldest first.
                get_post_with_comments: format!(
                    "SELECT {posts}, c.ids, c.authors, c.texts, c.created, c.edited
                     FROM {r}.posts p
                     LEFT JOIN LATERAL (
                         SELECT array_agg(id ORDER BY created_at, id) AS ids,
                                array_agg(author ORDER BY created_at, id) AS authors,
                                array_agg(text ORDER BY created_at, id) AS texts,
                                array_agg(created_at ORDER BY created_at, id) AS created,
                                array_agg(edited_at ORDER BY created_at, id) AS edited
                         FROM {r}.comments WHERE post_id = p.id AND NOT removed
                     ) c ON p.deleted_at IS NULL
                     WHERE p.id = $1"
                ),
                post_comments: format!(
                    "SELECT {comments} FROM {r}.comments
                     WHERE post_id = $1 AND NOT removed ORDER BY created_at, id"
                ),
                list_comments: format!(
                    "SELECT {comments} FROM {r}.comments
                     WHERE post_id = $1 AND NOT removed
                       AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
                     ORDER BY created_at, id LIMIT $4"
                ),
                notifications: format!(
                    "SELECT event_id, kind, actor, post_id, comment_id, created_at FROM {n}.notifications
                     WHERE recipient = $1
                       AND ($2::timestamptz IS NULL OR (created_at, event_id) < ($2, $3::uuid))
                     ORDER BY created_at DESC, event_id DESC LIMIT $4"
                ),
            },
        }
    }

    /// The tables this host reads that do not exist yet: the projection host
    /// creates them, the query host never writes.
    pub async fn missing_tables(&self) -> Result<Vec<String>, tokio_postgres::Error> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                &[&self.tables],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Up to `limit + 1` posts, so the caller can tell whether a next page exists.
    pub async fn list_posts(
        &self,
        filter: &PostFilter,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<PostView>, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.list_posts).await?;
        let (at, id) = cursor_params(cursor);
        let author = filter.author.as_ref().map(|a| a.as_str());
        let rows = conn
            .query(
                &statement,
                &[
                    &author,
                    &filter.min_likes,
                    &filter.has_comments,
                    &at,
                    &id,
                    &(limit + 1),
                ],
            )
            .await?;
        rows.iter().map(PostRow::from_row).collect()
    }

    pub async fn get_post(&self, id: PostId) -> Result<PostLookup, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.get_post).await?;
        post_lookup(conn.query_opt(&statement, &[&id.as_uuid()]).await?.as_ref())
    }

    /// The post and, if it is live, its comments oldest first: one statement.
    pub async fn get_post_with_comments(
        &self,
        id: PostId,
    ) -> Result<(PostLookup, Vec<CommentView>), tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.get_post_with_comments).await?;
        let row = conn.query_opt(&statement, &[&id.as_uuid()]).await?;
        let lookup = post_lookup(row.as_ref())?;
        let (Some(row), PostLookup::Live(_)) = (row, &lookup) else {
            return Ok((lookup, Vec::new()));
        };
        let ids: Vec<Uuid> = row.try_get::<_, Option<_>>("ids")?.unwrap_or_default();
        let authors: Vec<String> = row.try_get::<_, Option<_>>("authors")?.unwrap_or_default();
        let texts: Vec<String> = row.try_get::<_, Option<_>>("texts")?.unwrap_or_default();
        let created: Vec<SystemTime> = row.try_get::<_, Option<_>>("created")?.unwrap_or_default();
        let edited: Vec<Option<SystemTime>> =
            row.try_get::<_, Option<_>>("edited")?.unwrap_or_default();
        let post_id = id.as_uuid();
        let comments = ids
            .into_iter()
            .zip(authors)
            .zip(texts)
            .zip(created.into_iter().zip(edited))
            .map(
                |(((id, author), text), (created_at, edited_at))| CommentView {
                    post_id,
                    id,
                    author,
                    text,
                    created_at: ts(created_at),
                    edited_at: edited_at.map(ts),
                    removed: false,
                },
            )
            .collect();
        Ok((lookup, comments))
    }

    pub async fn post_comments(
        &self,
        id: PostId,
    ) -> Result<Vec<CommentView>, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.post_comments).await?;
        conn.query(&statement, &[&id.as_uuid()])
            .await?
            .iter()
            .map(CommentRow::from_row)
            .collect()
    }

    /// Up to `limit + 1` comments, oldest first.
    pub async fn list_comments(
        &self,
        id: PostId,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<CommentView>, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.list_comments).await?;
        let (at, after) = cursor_params(cursor);
        let rows = conn
            .query(&statement, &[&id.as_uuid(), &at, &after, &(limit + 1)])
            .await?;
        rows.iter().map(CommentRow::from_row).collect()
    }

    /// Up to `limit + 1` notifications, newest first.
    pub async fn notifications(
        &self,
        recipient: &str,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<NotificationView>, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(&self.sql.notifications).await?;
        let (at, id) = cursor_params(cursor);
        let rows = conn
            .query(&statement, &[&recipient, &at, &id, &(limit + 1)])
            .await?;
        Ok(rows
            .iter()
            .map(|row| NotificationView {
                id: row.get(0),
                kind: row.get(1),
                actor: row.get(2),
                post_id: row.get(3),
                comment_id: row.get(4),
                created_at: ts(row.get(5)),
            })
            .collect())
    }
}
