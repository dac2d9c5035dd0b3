//! The notifications projection, a second consumer of the same events with its
//! own consumer group: "bob liked your post", "carol commented on your post".
//! Like the read model it tracks each stream's version in the same transaction
//! as its effects, and notifications are keyed by the causing event's id.

use plumbing::pg::{version_from_sql, version_to_sql};
use read_model::SchemaName;
use std::collections::BTreeMap;
use std::time::SystemTime;

use domain::{EventEnvelope, PostEvent, PostId};
use event_store::EventStore;
use plumbing::pg::PgPool;
use uuid::Uuid;

use crate::projector::{
    BatchOutcome, ProjectionError, group_by_stream, in_order, keyed_transaction, pending_events,
};

/// A notification of a batch, with its parameters.
struct Notification {
    event_id: Uuid,
    kind: &'static str,
    actor: String,
    comment: Option<Uuid>,
    at: SystemTime,
    post: Uuid,
}

#[derive(Debug)]
struct Sql {
    lock_progress: String,
    set_progress: String,
    post_created: String,
    notify: String,
}

/// The notifications in one PostgreSQL schema.
#[derive(Debug)]
pub struct Notifications {
    pool: PgPool,
    sql: Sql,
}

impl Notifications {
    pub async fn open(pool: PgPool, schema: &SchemaName) -> Result<Self, ProjectionError> {
        read_model::schema::create_notifications(&*pool.get().await?, schema).await?;
        let s = schema;
        Ok(Self {
            pool,
            sql: Sql {
                lock_progress: format!(
                    "SELECT stream_id, version FROM {s}.progress WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE"
                ),
                // The progress of every stream of a batch, and every new post's
                // author, each in one statement.
                set_progress: format!(
                    "INSERT INTO {s}.progress (stream_id, version)
                     SELECT * FROM unnest($1::uuid[], $2::bigint[])
                     ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version"
                ),
                post_created: format!(
                    "INSERT INTO {s}.post_authors (post_id, author)
                     SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING"
                ),
                // Nobody is told about their own likes and comments.
                notify: format!(
                    "INSERT INTO {s}.notifications (event_id, recipient, kind, actor, post_id, comment_id, created_at)
                     SELECT $1, a.author, $2, $3, a.post_id, $4, $5 FROM {s}.post_authors a
                     WHERE a.post_id = $6 AND a.author <> $3
                     ON CONFLICT (event_id) DO NOTHING"
                ),
            },
        })
    }

    /// Applies `batch` in one transaction, skipping what was applied before and
    /// healing gaps from the event store.
    pub async fn apply_batch<S: EventStore>(
        &self,
        store: &S,
        batch: &[EventEnvelope],
    ) -> Result<BatchOutcome, ProjectionError> {
        let (by_stream, mut outcome) = group_by_stream(batch);
        let mut conn = self.pool.get().await?;
        let lock = conn.prepared(&self.sql.lock_progress).await?;
        let set_progress = conn.prepared(&self.sql.set_progress).await?;
        let post_created = conn.prepared(&self.sql.post_created).await?;
        let notify = conn.prepared(&self.sql.notify).await?;
        let tx = keyed_transaction(&mut conn).await?;
        let ids: Vec<Uuid> = by_stream.keys().map(PostId::as_uuid).collect();
        let mut progress: BTreeMap<Uuid, u64> = BTreeMap::new();
        for row in tx.query(&lock, &[&ids]).await? {
            let version: i64 = row.get(1);
            progress.insert(
                row.get(0),
                version_from_sql(version).unwrap_or_default().get(),
            );
        }
        // Gaps are healed from the store first. Then the batch's new posts are
        // recorded in one statement (a create is its stream's first event, so
        // its author is known before any like or comment of the same batch),
        // the notifications follow, all sent before the first answer is read
        // (pipelined, run in the order sent), and the streams' progress last,
        // in one statement.
        let (mut new_posts, mut authors) = (Vec::new(), Vec::new());
        let (mut streams, mut versions) = (Vec::new(), Vec::new());
        let mut notifies = Vec::new();
        for (stream, events) in &by_stream {
            let done = progress.get(&stream.as_uuid()).copied().unwrap_or(0);
            let pending = pending_events(store, *stream, done, events, &mut outcome).await?;
            let post = stream.as_uuid();
            for (envelope, event) in &pending {
                let notify = |kind, actor: &domain::UserId, comment| Notification {
                    event_id: envelope.event_id,
                    kind,
                    actor: actor.as_str().to_owned(),
                    comment,
                    at: SystemTime::from(envelope.occurred_at),
                    post,
                };
                match event {
                    PostEvent::PostCreated(e) => {
                        new_posts.push(post);
                        authors.push(e.author.as_str().to_owned());
                    }
                    PostEvent::PostLiked(e) => notifies.push(notify("liked", &e.user, None)),
                    PostEvent::CommentAdded(e) => {
                        notifies.push(notify("commented", &e.author, Some(e.comment_id.as_uuid())))
                    }
                    // Named, not a wildcard: a new event is a compile error
                    // here until someone decides whether it notifies.
                    PostEvent::MessageEdited(_)
                    | PostEvent::PostUnliked(_)
                    | PostEvent::CommentEdited(_)
                    | PostEvent::CommentRemoved(_)
                    | PostEvent::PostDeleted(_) => {}
                }
                outcome.applied += 1;
            }
            if let Some((last, _)) = pending.last() {
                streams.push(post);
                versions.push(version_to_sql(last.version));
            }
        }
        if !new_posts.is_empty() {
            tx.execute(&post_created, &[&new_posts, &authors]).await?;
        }
        in_order(notifies.iter().map(|n| async {
            tx.execute(
                &notify,
                &[&n.event_id, &n.kind, &n.actor, &n.comment, &n.at, &n.post],
            )
            .await
        }))
        .await?;
        if !streams.is_empty() {
            tx.execute(&set_progress, &[&streams, &versions]).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}
