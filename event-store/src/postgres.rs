//! The PostgreSQL event store: one `events` table keyed by (stream_id, version),
//! and an `outbox` table of the events not yet published, written in the same
//! statement as the events. Table names are unqualified, so the pool's
//! `search_path` chooses the schema.

use plumbing::pg::{version_from_sql, version_to_sql};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use domain::{EventEnvelope, EventMetadata, PostId, Timestamp, UserId, Version};

use super::{EventStore, ReadAllCursor, ReadAllPage, Snapshot, StoreError};
use plumbing::batch::{BatchLimits, Batcher};
use plumbing::pg::{PgPool, PooledConn};

const MIGRATE: &str = "
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.sourcegram_events'));
CREATE TABLE IF NOT EXISTS events (
    position    bigserial   NOT NULL,
    stream_id   uuid        NOT NULL,
    version     bigint      NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    stream_type text        NOT NULL,
    event_type  text        NOT NULL,
    schema      integer     NOT NULL,
    occurred_at timestamptz NOT NULL,
    metadata    jsonb       NOT NULL,
    data        jsonb       NOT NULL,
    PRIMARY KEY (stream_id, version)
);
-- A retry finds what its first attempt appended by the key in the metadata;
-- only keyed writes have an entry. Indexes are made only when missing: even
-- `CREATE INDEX IF NOT EXISTS` locks its table against writes first, and a
-- host starting while others append must not queue behind (or deadlock with)
-- their appends. Tables are locked in the appends' order: events, then outbox.
DO $$
BEGIN
    IF to_regclass(quote_ident(current_schema()) || '.events_idempotency_key') IS NULL THEN
        CREATE INDEX events_idempotency_key
            ON events ((metadata->>'user'), (metadata->>'idempotency_key'))
            WHERE metadata->>'idempotency_key' IS NOT NULL;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS outbox (
    position    bigint      NOT NULL,
    stream_id   uuid        NOT NULL,
    version     bigint      NOT NULL,
    PRIMARY KEY (stream_id, version)
);
DO $$
BEGIN
    IF to_regclass(quote_ident(current_schema()) || '.outbox_position') IS NULL THEN
        CREATE INDEX outbox_position ON outbox (position);
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id uuid        PRIMARY KEY,
    version   bigint      NOT NULL,
    schema    integer     NOT NULL,
    data      bytea       NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now()
);
DO $$
BEGIN
    -- Stores made before the outbox table kept a `published` flag on each event
    -- row: what they had not published moves to the outbox, and the flag goes.
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'events'
                 AND column_name = 'published') THEN
        INSERT INTO outbox (position, stream_id, version)
        SELECT position, stream_id, version FROM events WHERE NOT published
        ON CONFLICT DO NOTHING;
        ALTER TABLE events DROP COLUMN published;
    END IF;
END $$;
";

// One statement for the appends of many commands (see `plumbing::batch`), each to
// its own stream: a command's events go in only if its stream is still at its
// expected version, so each command is all or nothing, and the stream ids
// returned say which commands went in. A concurrent writer of the same version
// makes the primary key refuse the whole statement (SQLSTATE 23505); the
// commands are then appended one by one to find out which lost. Every event
// written also goes into the outbox, in the same statement.
const APPEND: &str = "
WITH appended AS (
    INSERT INTO events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
    SELECT e.stream_id, e.version, e.event_id, e.stream_type, e.event_type, e.schema, e.occurred_at, e.metadata, e.data
    FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::timestamptz[], $9::jsonb[], $10::jsonb[])
         AS e(stream_id, expected, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
    WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = e.stream_id) = e.expected
    RETURNING position, stream_id, version
), queued AS (
    INSERT INTO outbox (position, stream_id, version)
    SELECT position, stream_id, version FROM appended
)
SELECT stream_id FROM appended";

/// How often one append statement is tried when the server rolled it back for
/// a deadlock or a serialization failure.
const APPEND_TRIES: u32 = 3;
/// Appends in one batch at most this many commands.
const APPEND_BATCH_ITEMS: usize = 64;
/// Batches of appends at PostgreSQL at the same time (each holds a connection).
const APPEND_BATCHES_IN_FLIGHT: usize = 1;

const LOAD_PAGE: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3";
const SAVE_SNAPSHOT: &str =
    "INSERT INTO snapshots (stream_id, version, schema, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, schema = EXCLUDED.schema,
    data = EXCLUDED.data, taken_at = now()
WHERE snapshots.version < EXCLUDED.version";
const LOAD_SNAPSHOT: &str = "SELECT version, schema, data FROM snapshots WHERE stream_id = $1";
const BY_IDEMPOTENCY_KEY: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE metadata->>'user' = $1 AND metadata->>'idempotency_key' = $2
  AND metadata->>'idempotency_key' IS NOT NULL
ORDER BY stream_id, version";
const READ_ALL_FIRST: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events ORDER BY stream_id, version LIMIT $1";
const READ_ALL_AFTER: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE (stream_id, version) > ($1, $2) ORDER BY stream_id, version LIMIT $3";
const HEADS: &str = "SELECT stream_id, max(version) FROM events GROUP BY stream_id";
// The events to skip (published, not yet marked: up to a whole batch) are
// looked up in a hash built once (`NOT IN` over the arrays; no NULLs on either
// side). A `NOT EXISTS` would compare each outbox row with every skipped
// event (figures: docs/performance.md).
const UNPUBLISHED: &str = "SELECT e.event_id, e.stream_id, e.stream_type, e.version, e.event_type, e.schema, e.occurred_at, e.metadata, e.data
FROM outbox o JOIN events e ON e.stream_id = o.stream_id AND e.version = o.version
WHERE (o.stream_id, o.version) NOT IN (SELECT * FROM unnest($2::uuid[], $3::bigint[]))
ORDER BY o.position LIMIT $1";
// Publishing deletes a small outbox row instead of rewriting the event row.
const MARK_PUBLISHED: &str = "DELETE FROM outbox
WHERE (stream_id, version) IN (SELECT * FROM unnest($1::uuid[], $2::bigint[]))";
/// Counted exactly up to [`UNPUBLISHED_COUNT_CAP`], so a scrape of `/metrics`
/// during a long broker outage reads a bounded part of the outbox, not all of it.
const UNPUBLISHED_COUNT: &str = "SELECT count(*) FROM (SELECT 1 FROM outbox LIMIT 100000) backlog";
/// The most [`EventStore::unpublished_count`] reports on PostgreSQL.
pub const UNPUBLISHED_COUNT_CAP: u64 = 100_000;

/// The event store on PostgreSQL. Concurrent appends are written together, one
/// statement per batch (group commit).
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    appends: Arc<Batcher<Append, Result<(), StoreError>>>,
    statements: Arc<AtomicU64>,
}

/// One command's append, waiting for its batch.
#[derive(Debug)]
struct Append {
    stream_id: PostId,
    expected: Version,
    events: Vec<EventEnvelope>,
}

fn unavailable(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// Events as the two parallel arrays the outbox statements unnest.
fn key_params(events: &[(PostId, Version)]) -> (Vec<Uuid>, Vec<i64>) {
    events
        .iter()
        .map(|(s, v)| (s.as_uuid(), version_to_sql(*v)))
        .unzip()
}

impl PostgresEventStore {
    pub fn new(pool: PgPool) -> Self {
        let statements = Arc::new(AtomicU64::new(0));
        let appends = Batcher::new(
            BatchLimits {
                max_items: APPEND_BATCH_ITEMS,
                max_in_flight: APPEND_BATCHES_IN_FLIGHT,
                linger: std::time::Duration::ZERO,
            },
            {
                let (pool, statements) = (pool.clone(), Arc::clone(&statements));
                move |batch| {
                    let (pool, statements) = (pool.clone(), Arc::clone(&statements));
                    async move { append_batch(&pool, &statements, batch).await }
                }
            },
        )
        .into();
        Self {
            pool,
            appends,
            statements,
        }
    }

    /// How many append statements this store has sent: fewer than the appends
    /// asked for when concurrent appends shared a statement.
    pub fn append_statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Creates the table and indexes if they do not exist. Safe to run from
    /// several hosts at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let tx = conn.client().transaction().await.map_err(unavailable)?;
        tx.batch_execute(MIGRATE).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn query_envelopes(
        &self,
        sql: &'static str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(sql).await.map_err(unavailable)?;
        let rows = conn.query(&statement, params).await.map_err(unavailable)?;
        rows.iter().map(envelope_from_row).collect()
    }
}

/// Writes a batch of appends, answering each in order. Appends to one stream go
/// in separate statements, so that each statement holds one append per stream.
async fn append_batch(
    pool: &PgPool,
    statements: &AtomicU64,
    batch: Vec<Append>,
) -> Vec<Result<(), StoreError>> {
    let mut outcomes: Vec<Option<Result<(), StoreError>>> = batch.iter().map(|_| None).collect();
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(error) => {
            let error = error.to_string();
            return batch
                .iter()
                .map(|_| Err(StoreError::Unavailable(error.clone())))
                .collect();
        }
    };
    let mut waiting: Vec<usize> = (0..batch.len()).collect();
    while !waiting.is_empty() {
        let mut seen = HashSet::new();
        let (mut round, later): (Vec<usize>, Vec<usize>) = waiting
            .into_iter()
            .partition(|&i| seen.insert(batch[i].stream_id));
        waiting = later;
        // Rows in stream order, whatever order the writes arrived in: two
        // hosts' statements over the same posts then take their keys in one
        // order, and the later waits for the earlier instead of deadlocking.
        round.sort_by_key(|&i| batch[i].stream_id);
        let appends: Vec<&Append> = round.iter().map(|&i| &batch[i]).collect();
        match append_statement(&mut conn, statements, &appends).await {
            Err(StoreError::Conflict { .. }) if appends.len() > 1 => {
                // Some other writer got in first on one of the streams; the
                // statement was refused as a whole. One by one tells who lost.
                for &i in &round {
                    outcomes[i] = Some(
                        append_statement(&mut conn, statements, &[&batch[i]])
                            .await
                            .and_then(|written| went_in(&written, &batch[i])),
                    );
                }
            }
            Err(StoreError::Conflict { .. }) => {
                outcomes[round[0]] = Some(Err(conflict(&batch[round[0]])));
            }
            Err(error) => {
                for &i in &round {
                    outcomes[i] = Some(Err(error.clone()));
                }
            }
            Ok(written) => {
                for &i in &round {
                    outcomes[i] = Some(went_in(&written, &batch[i]));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.expect("every append was answered"))
        .collect()
}

/// Whether `append`'s stream is among those a statement wrote to.
fn went_in(written: &HashSet<PostId>, append: &Append) -> Result<(), StoreError> {
    if written.contains(&append.stream_id) {
        Ok(())
    } else {
        Err(conflict(append))
    }
}

fn conflict(append: &Append) -> StoreError {
    StoreError::Conflict {
        stream_id: append.stream_id,
        expected: append.expected,
    }
}

/// Runs one append statement; the streams whose events went in.
async fn append_statement(
    conn: &mut PooledConn,
    statements: &AtomicU64,
    appends: &[&Append],
) -> Result<HashSet<PostId>, StoreError> {
    let events = appends
        .iter()
        .flat_map(|a| a.events.iter().map(move |e| (*a, e)));
    let count = appends.iter().map(|a| a.events.len()).sum();
    let mut streams = Vec::with_capacity(count);
    let mut expected = Vec::with_capacity(count);
    let mut versions = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    let mut stream_types = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut schemas = Vec::with_capacity(count);
    let mut times = Vec::with_capacity(count);
    let mut metadata = Vec::with_capacity(count);
    let mut data = Vec::with_capacity(count);
    for (append, event) in events {
        streams.push(append.stream_id.as_uuid());
        expected.push(version_to_sql(append.expected));
        versions.push(version_to_sql(event.version));
        ids.push(event.event_id);
        stream_types.push(event.stream_type.as_str());
        types.push(event.event_type.as_str());
        schemas.push(i32::try_from(event.schema).unwrap_or(i32::MAX));
        times.push(SystemTime::from(event.occurred_at));
        metadata.push(serde_json::to_value(&event.metadata).expect("metadata always serializes"));
        data.push(&event.data);
    }
    let statement = conn.prepared(APPEND).await.map_err(unavailable)?;
    let mut attempt = 1;
    let rows = loop {
        statements.fetch_add(1, Ordering::Relaxed);
        let outcome = conn
            .query(
                &statement,
                &[
                    &streams,
                    &expected,
                    &versions,
                    &ids,
                    &stream_types,
                    &types,
                    &schemas,
                    &times,
                    &metadata,
                    &data,
                ],
            )
            .await;
        match outcome {
            Ok(rows) => break rows,
            Err(error) => match error.code() {
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => {
                    return Err(StoreError::Conflict {
                        stream_id: appends[0].stream_id,
                        expected: appends[0].expected,
                    });
                }
                // The server rolled the statement back whole: nothing went in,
                // and the same statement may simply be tried again.
                Some(code)
                    if (*code == SqlState::T_R_DEADLOCK_DETECTED
                        || *code == SqlState::T_R_SERIALIZATION_FAILURE)
                        && attempt < APPEND_TRIES =>
                {
                    attempt += 1;
                }
                // Cut off by the statement timeout, or rolled back again and
                // again: certainly not appended.
                Some(code)
                    if *code == SqlState::QUERY_CANCELED
                        || *code == SqlState::T_R_DEADLOCK_DETECTED
                        || *code == SqlState::T_R_SERIALIZATION_FAILURE =>
                {
                    return Err(StoreError::RolledBack(error.to_string()));
                }
                _ => return Err(unavailable(error)),
            },
        }
    };
    rows.iter()
        .map(|row| {
            row.try_get::<_, Uuid>(0)
                .map(PostId::from_uuid)
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .collect()
}

fn envelope_from_row(row: &Row) -> Result<EventEnvelope, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    let version: i64 = row.try_get("version").map_err(|e| corrupt(&e))?;
    let schema: i32 = row.try_get("schema").map_err(|e| corrupt(&e))?;
    let occurred_at: SystemTime = row.try_get("occurred_at").map_err(|e| corrupt(&e))?;
    let metadata: serde_json::Value = row.try_get("metadata").map_err(|e| corrupt(&e))?;
    Ok(EventEnvelope {
        event_id: row.try_get("event_id").map_err(|e| corrupt(&e))?,
        stream_id: PostId::from_uuid(row.try_get("stream_id").map_err(|e| corrupt(&e))?),
        stream_type: row.try_get("stream_type").map_err(|e| corrupt(&e))?,
        version: version_from_sql(version).map_err(|e| corrupt(&e))?,
        event_type: row.try_get("event_type").map_err(|e| corrupt(&e))?,
        schema: u32::try_from(schema).map_err(|e| corrupt(&e))?,
        occurred_at: Timestamp::from(occurred_at),
        metadata: serde_json::from_value::<EventMetadata>(metadata).map_err(|e| corrupt(&e))?,
        data: row.try_get("data").map_err(|e| corrupt(&e))?,
    })
}

impl EventStore for PostgresEventStore {
    async fn append_to_stream(
        &self,
        stream_id: PostId,
        expected: Version,
        events: &[EventEnvelope],
    ) -> Result<(), StoreError> {
        super::check_append(stream_id, expected, events)?;
        if events.is_empty() {
            return Ok(());
        }
        let append = Append {
            stream_id,
            expected,
            events: events.to_vec(),
        };
        self.appends.submit(append).await.unwrap_or_else(|| {
            Err(StoreError::Unavailable(
                "the append was interrupted by shutdown".to_owned(),
            ))
        })
    }

    async fn load_stream_page(
        &self,
        stream_id: PostId,
        from: Version,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query_envelopes(
            LOAD_PAGE,
            &[&stream_id.as_uuid(), &version_to_sql(from), &limit],
        )
        .await
    }

    async fn find_by_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.query_envelopes(BY_IDEMPOTENCY_KEY, &[&user.as_str(), &key])
            .await
    }

    async fn read_all(
        &self,
        cursor: &ReadAllCursor,
        limit: usize,
    ) -> Result<ReadAllPage, StoreError> {
        let limit = limit.max(1);
        let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = match cursor.after {
            None => {
                self.query_envelopes(READ_ALL_FIRST, &[&limit_param])
                    .await?
            }
            Some((stream_id, version)) => {
                self.query_envelopes(
                    READ_ALL_AFTER,
                    &[&stream_id.as_uuid(), &version_to_sql(version), &limit_param],
                )
                .await?
            }
        };
        let next = (events.len() == limit).then(|| ReadAllCursor {
            after: events.last().map(|e| (e.stream_id, e.version)),
        });
        Ok(ReadAllPage { events, next })
    }

    async fn stream_heads(&self) -> Result<Vec<(PostId, Version)>, StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(HEADS).await.map_err(unavailable)?;
        let rows = conn.query(&statement, &[]).await.map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                let stream: Uuid = row
                    .try_get(0)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let version: i64 = row
                    .try_get(1)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((
                    PostId::from_uuid(stream),
                    version_from_sql(version).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                ))
            })
            .collect()
    }

    async fn unpublished(
        &self,
        limit: usize,
        skip: &[(PostId, Version)],
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let (streams, versions) = key_params(skip);
        self.query_envelopes(UNPUBLISHED, &[&limit, &streams, &versions])
            .await
    }

    async fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let (streams, versions) = key_params(events);
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(MARK_PUBLISHED).await.map_err(unavailable)?;
        conn.execute(&statement, &[&streams, &versions])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn unpublished_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn
            .prepared(UNPUBLISHED_COUNT)
            .await
            .map_err(unavailable)?;
        let row = conn.query_one(&statement, &[]).await.map_err(unavailable)?;
        let count: i64 = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(count.max(0).unsigned_abs())
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(SAVE_SNAPSHOT).await.map_err(unavailable)?;
        let schema = i32::try_from(snapshot.schema)
            .map_err(|_| StoreError::InvalidAppend("snapshot schema out of range".to_owned()))?;
        conn.execute(
            &statement,
            &[
                &snapshot.stream_id.as_uuid(),
                &version_to_sql(snapshot.version),
                &schema,
                &snapshot.data,
            ],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: PostId) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(LOAD_SNAPSHOT).await.map_err(unavailable)?;
        let Some(row) = conn
            .query_opt(&statement, &[&stream_id.as_uuid()])
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
        let version: i64 = row.try_get(0).map_err(|e| corrupt(&e))?;
        let schema: i32 = row.try_get(1).map_err(|e| corrupt(&e))?;
        Ok(Some(Snapshot {
            stream_id,
            version: version_from_sql(version).map_err(|e| corrupt(&e))?,
            schema: u32::try_from(schema).map_err(|e| corrupt(&e))?,
            data: row.try_get(2).map_err(|e| corrupt(&e))?,
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await.map_err(unavailable)?;
        conn.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::UNPUBLISHED;
    use testkit;

    /// The outbox read must not compare every outbox row with every skipped
    /// event (a nested loop over the skip list): it hashes the list once.
    #[tokio::test]
    async fn the_outbox_read_looks_skipped_events_up_in_a_hash() {
        let (pool, _) = testkit::fresh_pg_schema("plan").await;
        let store = super::PostgresEventStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        let conn = pool.get().await.expect("conn");
        let plan: String = conn
            .query(
                &format!("EXPLAIN {UNPUBLISHED}"),
                &[
                    &500_i64,
                    &vec![uuid::Uuid::new_v4(); 500],
                    &vec![1_i64; 500],
                ],
            )
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(plan.contains("hashed SubPlan"), "{plan}");
        assert!(!plan.contains("Anti Join"), "{plan}");
    }
}
