//! Full replay: rebuilds the read model from the event store alone into a fresh
//! schema while the live tables keep answering, catches up with what was written
//! meanwhile, then swaps the tables in one transaction. A replay that fails
//! leaves the live model untouched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use command_host::event_store::{EventStore, ReadAllCursor, StoreError};
use command_host::pg::PgPool;
use domain::{EventEnvelope, PostId, Version};
use serde::Serialize;
use tokio::sync::RwLock;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::rows::StreamRows;

/// Events read from the store per page.
const PAGE: usize = 5_000;
/// Posts folded before their rows are written with COPY.
const FLUSH_POSTS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a replay is already running")]
    AlreadyRunning,
    #[error("read model database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("{stream} v{version} cannot be decoded: {reason}")]
    Undecodable {
        stream: PostId,
        version: Version,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    Idle,
    Running,
    Succeeded,
    Failed,
}

/// What `GET /admin/replay` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayProgress {
    pub state: ReplayState,
    pub phase: &'static str,
    pub events_done: u64,
    pub events_total: u64,
    pub events_per_second: f64,
    pub elapsed_ms: u64,
    pub eta_ms: Option<u64>,
    pub error: Option<String>,
}

#[derive(Debug)]
struct Tracker {
    state: ReplayState,
    phase: &'static str,
    events_done: u64,
    events_total: u64,
    started: Option<Instant>,
    finished_after_ms: Option<u64>,
    error: Option<String>,
}

/// Runs replays of one read-model schema, one at a time, and reports progress.
#[derive(Debug)]
pub struct Replayer<S> {
    store: Arc<S>,
    pool: PgPool,
    live: String,
    gate: Arc<RwLock<()>>,
    tracker: Mutex<Tracker>,
}

impl<S: EventStore + 'static> Replayer<S> {
    /// `gate` is the lock the live projector holds while applying a batch.
    pub fn new(store: Arc<S>, pool: PgPool, live_schema: &str, gate: Arc<RwLock<()>>) -> Self {
        Self {
            store,
            pool,
            live: live_schema.to_owned(),
            gate,
            tracker: Mutex::new(Tracker {
                state: ReplayState::Idle,
                phase: "idle",
                events_done: 0,
                events_total: 0,
                started: None,
                finished_after_ms: None,
                error: None,
            }),
        }
    }

    fn track<R>(&self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut tracker)
    }

    pub fn progress(&self) -> ReplayProgress {
        self.track(|t| {
            let elapsed_ms = t
                .finished_after_ms
                .or_else(|| t.started.map(|s| s.elapsed().as_millis() as u64))
                .unwrap_or(0);
            let rate = if elapsed_ms > 0 {
                t.events_done as f64 * 1_000.0 / elapsed_ms as f64
            } else {
                0.0
            };
            let eta_ms = (t.state == ReplayState::Running && rate > 0.0).then(|| {
                (t.events_total.saturating_sub(t.events_done) as f64 / rate * 1_000.0) as u64
            });
            ReplayProgress {
                state: t.state,
                phase: t.phase,
                events_done: t.events_done,
                events_total: t.events_total,
                events_per_second: (rate * 10.0).round() / 10.0,
                elapsed_ms,
                eta_ms,
                error: t.error.clone(),
            }
        })
    }

    /// Marks a replay as started, unless one runs already.
    pub fn begin(&self) -> Result<(), ReplayError> {
        self.track(|t| {
            if t.state == ReplayState::Running {
                return Err(ReplayError::AlreadyRunning);
            }
            *t = Tracker {
                state: ReplayState::Running,
                phase: "rebuilding",
                events_done: 0,
                events_total: 0,
                started: Some(Instant::now()),
                finished_after_ms: None,
                error: None,
            };
            Ok(())
        })
    }

    /// Runs a replay that [`Replayer::begin`] started, to the end.
    pub async fn run(&self) -> Result<(), ReplayError> {
        let result = self.rebuild_and_swap().await;
        self.track(|t| {
            t.finished_after_ms = t.started.map(|s| s.elapsed().as_millis() as u64);
            match &result {
                Ok(()) => {
                    t.state = ReplayState::Succeeded;
                    t.phase = "done";
                }
                Err(error) => {
                    t.state = ReplayState::Failed;
                    t.error = Some(error.to_string());
                }
            }
        });
        result
    }

    /// `begin` and `run` in one call.
    pub async fn replay(&self) -> Result<(), ReplayError> {
        self.begin()?;
        self.run().await
    }

    async fn rebuild_and_swap(&self) -> Result<(), ReplayError> {
        let next = format!("{}_next", self.live);
        let retired = format!("{}_retired", self.live);
        {
            let conn = self.pool.get().await?;
            conn.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {next} CASCADE; DROP SCHEMA IF EXISTS {retired} CASCADE"
            ))
            .await?;
            crate::schema::create_read_model(&conn, &next).await?;
            crate::schema::create_read_model(&conn, &self.live).await?;
        }
        let heads = self.store.stream_heads().await?;
        let total: u64 = heads.iter().map(|(_, v)| v.get()).sum();
        self.track(|t| t.events_total = total);

        // Phase 1: every stream, page by page, folded one stream at a time.
        let mut buffer = RowBuffer::default();
        let mut current: Option<(PostId, StreamRows)> = None;
        let mut cursor = ReadAllCursor::default();
        loop {
            let page = self.store.read_all(&cursor, PAGE).await?;
            let read = page.events.len() as u64;
            for envelope in &page.events {
                if current
                    .as_ref()
                    .is_some_and(|(id, _)| *id != envelope.stream_id)
                    && let Some((_, rows)) = current.take()
                {
                    buffer.push(rows);
                }
                let (_, rows) =
                    current.get_or_insert_with(|| (envelope.stream_id, StreamRows::default()));
                fold(rows, envelope)?;
            }
            if buffer.posts.len() >= FLUSH_POSTS {
                buffer.copy_into(&self.pool, &next).await?;
            }
            self.track(|t| t.events_done += read);
            match page.next {
                Some(next_cursor) => cursor = next_cursor,
                None => break,
            }
        }
        if let Some((_, rows)) = current.take() {
            buffer.push(rows);
        }
        buffer.copy_into(&self.pool, &next).await?;
        // Statistics, as long-lived tables have: without them the first plans
        // made on the swapped-in tables assume they are nearly empty.
        self.pool
            .get()
            .await?
            .batch_execute(&format!(
                "ANALYZE {next}.posts; ANALYZE {next}.comments; ANALYZE {next}.likes"
            ))
            .await?;

        // Phase 2: catch up with what was appended during phase 1, while the live
        // projector keeps running.
        self.track(|t| t.phase = "catching up");
        self.catch_up(&next).await?;

        // Phase 3: pause the live projector, catch up the last few, swap.
        self.track(|t| t.phase = "swapping");
        let _paused = self.gate.write().await;
        self.catch_up(&next).await?;
        let mut conn = self.pool.get().await?;
        let tx = conn.client().transaction().await?;
        let live = &self.live;
        tx.batch_execute(&format!(
            "CREATE SCHEMA {retired};
             ALTER TABLE {live}.posts SET SCHEMA {retired};
             ALTER TABLE {live}.comments SET SCHEMA {retired};
             ALTER TABLE {live}.likes SET SCHEMA {retired};
             ALTER TABLE {next}.posts SET SCHEMA {live};
             ALTER TABLE {next}.comments SET SCHEMA {live};
             ALTER TABLE {next}.likes SET SCHEMA {live};"
        ))
        .await?;
        tx.commit().await?;
        conn.batch_execute(&format!(
            "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {next} CASCADE"
        ))
        .await?;
        Ok(())
    }

    /// Refolds every stream whose version in the store is ahead of `schema`.
    async fn catch_up(&self, schema: &str) -> Result<(), ReplayError> {
        let heads = self.store.stream_heads().await?;
        let built: HashMap<Uuid, u64> = {
            let conn = self.pool.get().await?;
            conn.query(&format!("SELECT id, version FROM {schema}.posts"), &[])
                .await?
                .iter()
                .map(|row| {
                    (
                        row.get::<_, Uuid>(0),
                        row.get::<_, i64>(1).max(0).unsigned_abs(),
                    )
                })
                .collect()
        };
        let behind: Vec<PostId> = heads
            .iter()
            .filter(|(id, version)| built.get(&id.as_uuid()).copied().unwrap_or(0) < version.get())
            .map(|(id, _)| *id)
            .collect();
        let mut buffer = RowBuffer::default();
        for stream in &behind {
            let mut rows = StreamRows::default();
            for envelope in self.store.load_stream(*stream, Version::new(1)).await? {
                fold(&mut rows, &envelope)?;
            }
            buffer.push(rows);
        }
        if buffer.posts.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = behind.iter().map(PostId::as_uuid).collect();
        let conn = self.pool.get().await?;
        for table in ["likes", "comments"] {
            conn.execute(
                &format!("DELETE FROM {schema}.{table} WHERE post_id = ANY($1)"),
                &[&ids],
            )
            .await?;
        }
        conn.execute(
            &format!("DELETE FROM {schema}.posts WHERE id = ANY($1)"),
            &[&ids],
        )
        .await?;
        drop(conn);
        buffer.copy_into(&self.pool, schema).await
    }
}

fn fold(rows: &mut StreamRows, envelope: &EventEnvelope) -> Result<(), ReplayError> {
    let event = envelope.decode().map_err(|e| ReplayError::Undecodable {
        stream: envelope.stream_id,
        version: envelope.version,
        reason: e.to_string(),
    })?;
    rows.apply(envelope, &event);
    Ok(())
}

/// Rows waiting to be written with COPY.
#[derive(Default)]
struct RowBuffer {
    posts: Vec<crate::rows::PostRow>,
    comments: Vec<crate::rows::CommentRow>,
    likes: Vec<(Uuid, String)>,
}

impl RowBuffer {
    fn push(&mut self, rows: StreamRows) {
        let Some(post) = rows.post else {
            return;
        };
        self.likes
            .extend(rows.likes.into_iter().map(|user| (post.id, user)));
        self.comments.extend(rows.comments.into_values());
        self.posts.push(post);
    }

    /// Writes and empties the buffer, in one transaction so a failure leaves no
    /// half-written post behind.
    async fn copy_into(&mut self, pool: &PgPool, schema: &str) -> Result<(), ReplayError> {
        let mut conn = pool.get().await?;
        let tx = conn.client().transaction().await?;
        let at = |t: domain::Timestamp| SystemTime::from(t);
        let posts = std::mem::take(&mut self.posts);
        copy(
            &tx,
            &format!("COPY {schema}.posts (id, author, message, likes, comment_count, created_at, edited_at, deleted_at, version) FROM STDIN BINARY"),
            &[Type::UUID, Type::TEXT, Type::TEXT, Type::INT4, Type::INT4, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::INT8],
            posts.iter().map(|p| {
                vec![
                    Box::new(p.id) as Box<dyn ToSql + Sync + Send>,
                    Box::new(p.author.clone()),
                    Box::new(p.message.clone()),
                    Box::new(p.likes),
                    Box::new(p.comment_count),
                    Box::new(at(p.created_at)),
                    Box::new(p.edited_at.map(at)),
                    Box::new(p.deleted_at.map(at)),
                    Box::new(p.version),
                ]
            }),
        )
        .await?;
        let comments = std::mem::take(&mut self.comments);
        copy(
            &tx,
            &format!("COPY {schema}.comments (post_id, id, author, text, created_at, edited_at, removed) FROM STDIN BINARY"),
            &[Type::UUID, Type::UUID, Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::TIMESTAMPTZ, Type::BOOL],
            comments.iter().map(|c| {
                vec![
                    Box::new(c.post_id) as Box<dyn ToSql + Sync + Send>,
                    Box::new(c.id),
                    Box::new(c.author.clone()),
                    Box::new(c.text.clone()),
                    Box::new(at(c.created_at)),
                    Box::new(c.edited_at.map(at)),
                    Box::new(c.removed),
                ]
            }),
        )
        .await?;
        let likes = std::mem::take(&mut self.likes);
        copy(
            &tx,
            &format!("COPY {schema}.likes (post_id, user_id) FROM STDIN BINARY"),
            &[Type::UUID, Type::TEXT],
            likes.iter().map(|(post, user)| {
                vec![
                    Box::new(*post) as Box<dyn ToSql + Sync + Send>,
                    Box::new(user.clone()),
                ]
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn copy(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    types: &[Type],
    rows: impl Iterator<Item = Vec<Box<dyn ToSql + Sync + Send>>>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(statement).await?;
    let writer = BinaryCopyInWriter::new(sink, types);
    tokio::pin!(writer);
    for row in rows {
        let refs: Vec<&(dyn ToSql + Sync)> = row
            .iter()
            .map(|v| v.as_ref() as &(dyn ToSql + Sync))
            .collect();
        writer.as_mut().write(&refs).await?;
    }
    writer.finish().await?;
    Ok(())
}
