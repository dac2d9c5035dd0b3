//! Full replay: rebuilds the read model from the event store alone into a fresh
//! schema while the live tables keep answering, catches up with what was written
//! meanwhile, then swaps the tables in one transaction. A replay that fails
//! leaves the live model untouched.

use plumbing::pg::version_from_sql;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use domain::{EventEnvelope, PostId, Version};
use event_store::{EventStore, ReadAllCursor, StoreError};
use plumbing::pg::PgPool;
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use read_model::SchemaName;

use crate::fence::{ReplayLease, hold_swap_fence};
use crate::projector::ProjectionError;
use read_model::rows::{CommentRow, CopyValues, PostRow, StreamRows, like_copy_values};
use read_model::schema::{COMMENTS, LIKES, POSTS, READ_MODEL_TABLES, Table, analyze_sql, swap_sql};

/// Events read from the store per page.
const PAGE: usize = 5_000;
/// Posts folded before their rows are written with COPY.
const FLUSH_POSTS: usize = 2_000;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("a replay of this read model is already running, on this or another projection host")]
    AlreadyRunning,
    /// What can fail a live batch can fail a replay: the read model's
    /// database, the event store, an event that does not decode.
    #[error(transparent)]
    Failed(#[from] ProjectionError),
}

impl From<tokio_postgres::Error> for ReplayError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Failed(error.into())
    }
}

impl From<StoreError> for ReplayError {
    fn from(error: StoreError) -> Self {
        Self::Failed(error.into())
    }
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

/// Runs replays of one read-model schema, one at a time in the cluster, and
/// reports the progress of the ones this host runs.
#[derive(Debug)]
pub struct Replayer<S> {
    store: Arc<S>,
    pool: PgPool,
    live: SchemaName,
    tracker: Mutex<Tracker>,
}

impl<S: EventStore + 'static> Replayer<S> {
    pub fn new(store: Arc<S>, pool: PgPool, live_schema: &SchemaName) -> Self {
        Self {
            store,
            pool,
            live: live_schema.clone(),
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

    /// Takes the replay lease and marks a replay as started, unless one runs
    /// already here or on another host.
    pub async fn begin(&self) -> Result<ReplayLease, ReplayError> {
        if self.track(|t| t.state == ReplayState::Running) {
            return Err(ReplayError::AlreadyRunning);
        }
        let client = self.pool.dedicated().await?;
        let lease = ReplayLease::try_take(client, &self.live)
            .await?
            .ok_or(ReplayError::AlreadyRunning)?;
        self.track(|t| {
            *t = Tracker {
                state: ReplayState::Running,
                phase: "rebuilding",
                events_done: 0,
                events_total: 0,
                started: Some(Instant::now()),
                finished_after_ms: None,
                error: None,
            };
        });
        Ok(lease)
    }

    /// Runs a replay that [`Replayer::begin`] started, to the end; the lease
    /// is given back when it ends.
    pub async fn run(&self, mut lease: ReplayLease) -> Result<(), ReplayError> {
        let result = self.rebuild_and_swap(&mut lease).await;
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
        let lease = self.begin().await?;
        self.run(lease).await
    }

    async fn rebuild_and_swap(&self, lease: &mut ReplayLease) -> Result<(), ReplayError> {
        let next = self.live.next();
        let retired = self.live.retired();
        {
            let conn = self.pool.get().await?;
            conn.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {next} CASCADE; DROP SCHEMA IF EXISTS {retired} CASCADE"
            ))
            .await?;
            read_model::schema::create_read_model(&conn, &next).await?;
            read_model::schema::create_read_model(&conn, &self.live).await?;
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
            .batch_execute(&analyze_sql(&next))
            .await?;

        // Phase 2: catch up with what was appended during phase 1, while the live
        // projector keeps running.
        self.track(|t| t.phase = "catching up");
        self.catch_up(&next).await?;

        // Phase 3: pause the live projectors of every host (once their batches
        // in flight have committed), catch up the last few, swap. Whatever a
        // host applied to the old tables is in the store by now, so the last
        // catch-up has it; whatever it applies after the swap lands in the new
        // tables. The fence lifts when the swap commits.
        self.track(|t| t.phase = "swapping");
        let tx = lease.client.transaction().await?;
        hold_swap_fence(&tx, &self.live).await?;
        self.catch_up(&next).await?;
        tx.batch_execute(&swap_sql(&self.live, &next, &retired))
            .await?;
        tx.commit().await?;
        self.pool
            .get()
            .await?
            .batch_execute(&format!(
                "DROP SCHEMA {retired} CASCADE; DROP SCHEMA {next} CASCADE"
            ))
            .await?;
        Ok(())
    }

    /// Refolds every stream whose version in the store is ahead of `schema`.
    async fn catch_up(&self, schema: &SchemaName) -> Result<(), ReplayError> {
        let heads = self.store.stream_heads().await?;
        let built: HashMap<Uuid, u64> = {
            let conn = self.pool.get().await?;
            conn.query(&format!("SELECT id, version FROM {schema}.posts"), &[])
                .await?
                .iter()
                .map(|row| {
                    (
                        row.get::<_, Uuid>(0),
                        version_from_sql(row.get(1)).unwrap_or_default().get(),
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
            // A page at a time: a long stream never sits in memory whole.
            let (mut rows, mut from) = (StreamRows::default(), Version::new(1));
            loop {
                let page = self.store.load_stream_page(*stream, from, PAGE).await?;
                for envelope in &page {
                    fold(&mut rows, envelope)?;
                    from = envelope.version.next();
                }
                if page.len() < PAGE {
                    break;
                }
            }
            buffer.push(rows);
        }
        if buffer.posts.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = behind.iter().map(PostId::as_uuid).collect();
        let conn = self.pool.get().await?;
        // Every table but posts is keyed by post_id; posts last.
        for table in READ_MODEL_TABLES.iter().rev() {
            let key = if table.name == POSTS.name {
                "id"
            } else {
                "post_id"
            };
            conn.execute(
                &format!("DELETE FROM {schema}.{} WHERE {key} = ANY($1)", table.name),
                &[&ids],
            )
            .await?;
        }
        drop(conn);
        buffer.copy_into(&self.pool, schema).await
    }
}

fn fold(rows: &mut StreamRows, envelope: &EventEnvelope) -> Result<(), ReplayError> {
    rows.apply(envelope, &crate::projector::decode(envelope)?);
    Ok(())
}

/// Rows waiting to be written with COPY.
#[derive(Default)]
struct RowBuffer {
    posts: Vec<PostRow>,
    comments: Vec<CommentRow>,
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
    async fn copy_into(&mut self, pool: &PgPool, schema: &SchemaName) -> Result<(), ReplayError> {
        let mut conn = pool.get().await?;
        let tx = conn.client().transaction().await?;
        let posts = std::mem::take(&mut self.posts);
        copy(&tx, &POSTS, schema, posts.iter().map(PostRow::copy_values)).await?;
        let comments = std::mem::take(&mut self.comments);
        copy(
            &tx,
            &COMMENTS,
            schema,
            comments.iter().map(CommentRow::copy_values),
        )
        .await?;
        let likes = std::mem::take(&mut self.likes);
        let likes = likes
            .iter()
            .map(|(post, user)| like_copy_values(*post, user));
        copy(&tx, &LIKES, schema, likes).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn copy(
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    schema: &SchemaName,
    rows: impl Iterator<Item = CopyValues>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&table.copy_in(schema)).await?;
    let writer = BinaryCopyInWriter::new(sink, &table.types());
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
