//! How each event changes the read model's tables, live: the projector runs
//! these statements in its batch transaction. [`crate::rows::StreamRows`] is the
//! same effect folded in memory, for the replay; tests hold the two equal.

use std::time::SystemTime;

use domain::{EventEnvelope, PostEvent};
use plumbing::pg::{PgConn, version_to_sql};
use tokio_postgres::Statement;
use tokio_postgres::types::ToSql;

use crate::SchemaName;

/// The SQL of one read-model schema, formatted once.
#[derive(Debug)]
pub struct LiveSql {
    lock_versions: String,
    post_created: String,
    message_edited: String,
    post_liked: String,
    post_unliked: String,
    comment_added: String,
    comment_edited: String,
    comment_removed: String,
    post_deleted: String,
    notify: &'static str,
}

impl LiveSql {
    pub fn new(s: &SchemaName) -> Self {
        Self {
            lock_versions: format!("SELECT id, version FROM {s}.posts WHERE id = ANY($1) ORDER BY id FOR UPDATE"),
            // Every new post of a batch in one statement (a create is always
            // its stream's first event, so writing them first keeps each
            // stream's order).
            post_created: format!(
                "INSERT INTO {s}.posts (id, author, message, created_at, version)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::bigint[])"
            ),
            message_edited: format!("UPDATE {s}.posts SET message = $2, edited_at = $3, version = $4 WHERE id = $1"),
            post_liked: format!(
                "WITH changed AS (INSERT INTO {s}.likes (post_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1)
                 UPDATE {s}.posts SET likes = likes + (SELECT count(*) FROM changed), version = $3 WHERE id = $1"
            ),
            post_unliked: format!(
                "WITH changed AS (DELETE FROM {s}.likes WHERE post_id = $1 AND user_id = $2 RETURNING 1)
                 UPDATE {s}.posts SET likes = likes - (SELECT count(*) FROM changed), version = $3 WHERE id = $1"
            ),
            comment_added: format!(
                "WITH changed AS (INSERT INTO {s}.comments (post_id, id, author, text, created_at) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING RETURNING 1)
                 UPDATE {s}.posts SET comment_count = comment_count + (SELECT count(*) FROM changed), version = $6 WHERE id = $1"
            ),
            comment_edited: format!(
                "WITH changed AS (UPDATE {s}.comments SET text = $3, edited_at = $4 WHERE post_id = $1 AND id = $2 RETURNING 1)
                 UPDATE {s}.posts SET version = $5 WHERE id = $1"
            ),
            comment_removed: format!(
                "WITH changed AS (UPDATE {s}.comments SET removed = true WHERE post_id = $1 AND id = $2 AND NOT removed RETURNING 1)
                 UPDATE {s}.posts SET comment_count = comment_count - (SELECT count(*) FROM changed), version = $3 WHERE id = $1"
            ),
            post_deleted: format!("UPDATE {s}.posts SET deleted_at = $2, version = $3 WHERE id = $1"),
            notify: "SELECT pg_notify('read_model_changed', change) FROM unnest($1::text[]) AS change",
        }
    }
}

/// Inserts the posts `created` (each a `PostCreated` event) in one statement.
pub async fn insert_created(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &Statements,
    created: &[&(EventEnvelope, PostEvent)],
) -> Result<(), tokio_postgres::Error> {
    let mut ids = Vec::with_capacity(created.len());
    let (mut authors, mut messages) = (Vec::new(), Vec::new());
    let (mut times, mut versions) = (Vec::new(), Vec::new());
    for (envelope, event) in created {
        if let PostEvent::PostCreated(e) = event {
            ids.push(envelope.stream_id.as_uuid());
            authors.push(e.author.as_str());
            messages.push(e.message.as_str());
            times.push(SystemTime::from(e.created_at));
            versions.push(version_to_sql(envelope.version));
        }
    }
    if !ids.is_empty() {
        tx.execute(
            &statements.post_created,
            &[&ids, &authors, &messages, &times, &versions],
        )
        .await?;
    }
    Ok(())
}

pub async fn write_effect(
    tx: &tokio_postgres::Transaction<'_>,
    statements: &Statements,
    envelope: &EventEnvelope,
    event: &PostEvent,
) -> Result<u64, tokio_postgres::Error> {
    let id = envelope.stream_id.as_uuid();
    let version = version_to_sql(envelope.version);
    let at = |t: domain::Timestamp| SystemTime::from(t);
    let sql = statements;
    match event {
        // Written by `insert_created`, before the batch's other events.
        PostEvent::PostCreated(_) => Ok(0),
        PostEvent::MessageEdited(e) => {
            tx.execute(
                &sql.message_edited,
                &[&id, &e.message.as_str(), &at(e.edited_at), &version],
            )
            .await
        }
        PostEvent::PostLiked(e) => {
            tx.execute(&sql.post_liked, &[&id, &e.user.as_str(), &version])
                .await
        }
        PostEvent::PostUnliked(e) => {
            tx.execute(&sql.post_unliked, &[&id, &e.user.as_str(), &version])
                .await
        }
        PostEvent::CommentAdded(e) => {
            let params: [&(dyn ToSql + Sync); 6] = [
                &id,
                &e.comment_id.as_uuid(),
                &e.author.as_str(),
                &e.text.as_str(),
                &at(e.created_at),
                &version,
            ];
            tx.execute(&sql.comment_added, &params).await
        }
        PostEvent::CommentEdited(e) => {
            let params: [&(dyn ToSql + Sync); 5] = [
                &id,
                &e.comment_id.as_uuid(),
                &e.text.as_str(),
                &at(e.edited_at),
                &version,
            ];
            tx.execute(&sql.comment_edited, &params).await
        }
        PostEvent::CommentRemoved(e) => {
            tx.execute(
                &sql.comment_removed,
                &[&id, &e.comment_id.as_uuid(), &version],
            )
            .await
        }
        PostEvent::PostDeleted(e) => {
            tx.execute(&sql.post_deleted, &[&id, &at(e.deleted_at), &version])
                .await
        }
    }
}

/// The schema's statements, prepared on the connection that runs the batch.
#[derive(Debug)]
pub struct Statements {
    pub lock_versions: Statement,
    pub post_created: Statement,
    pub message_edited: Statement,
    pub post_liked: Statement,
    pub post_unliked: Statement,
    pub comment_added: Statement,
    pub comment_edited: Statement,
    pub comment_removed: Statement,
    pub post_deleted: Statement,
    pub notify: Statement,
}

impl Statements {
    pub async fn prepare(conn: &mut PgConn, sql: &LiveSql) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            lock_versions: conn.prepared(&sql.lock_versions).await?,
            post_created: conn.prepared(&sql.post_created).await?,
            message_edited: conn.prepared(&sql.message_edited).await?,
            post_liked: conn.prepared(&sql.post_liked).await?,
            post_unliked: conn.prepared(&sql.post_unliked).await?,
            comment_added: conn.prepared(&sql.comment_added).await?,
            comment_edited: conn.prepared(&sql.comment_edited).await?,
            comment_removed: conn.prepared(&sql.comment_removed).await?,
            post_deleted: conn.prepared(&sql.post_deleted).await?,
            notify: conn.prepared(sql.notify).await?,
        })
    }
}
