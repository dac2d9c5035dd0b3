//! The PostgreSQL event store: one `events` table keyed by (stream_id, version),
//! with an outbox flag per event. Table names are unqualified, so the pool's
//! `search_path` chooses the schema.

use std::time::SystemTime;

use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use domain::{EventEnvelope, EventMetadata, PostId, Timestamp, Version};

use super::{EventStore, ReadAllCursor, ReadAllPage, StoreError};
use crate::pg::PgPool;

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
    published   boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (stream_id, version)
);
CREATE INDEX IF NOT EXISTS events_unpublished ON events (position) WHERE NOT published;
";

// One statement, so the expected-version check and the insert of every event of
// the command are atomic. A concurrent writer of the same version makes the
// primary key refuse the second insert (SQLSTATE 23505).
const APPEND: &str = "
INSERT INTO events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
SELECT $1, e.version, e.event_id, e.stream_type, e.event_type, e.schema, e.occurred_at, e.metadata, e.data
FROM unnest($3::bigint[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::timestamptz[], $9::jsonb[], $10::jsonb[])
     AS e(version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $2";

const LOAD: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version";
const READ_ALL_FIRST: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events ORDER BY stream_id, version LIMIT $1";
const READ_ALL_AFTER: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE (stream_id, version) > ($1, $2) ORDER BY stream_id, version LIMIT $3";
const HEADS: &str = "SELECT stream_id, max(version) FROM events GROUP BY stream_id";
const UNPUBLISHED: &str = "SELECT event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data
FROM events WHERE NOT published ORDER BY position LIMIT $1";
const MARK_PUBLISHED: &str = "UPDATE events SET published = true
WHERE NOT published AND (stream_id, version) IN (SELECT * FROM unnest($1::uuid[], $2::bigint[]))";
const UNPUBLISHED_COUNT: &str = "SELECT count(*) FROM events WHERE NOT published";

/// The event store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
}

fn unavailable(error: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn version_param(version: Version) -> i64 {
    i64::try_from(version.get()).unwrap_or(i64::MAX)
}

impl PostgresEventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
        version: Version::new(u64::try_from(version).map_err(|e| corrupt(&e))?),
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
        let versions: Vec<i64> = events.iter().map(|e| version_param(e.version)).collect();
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let stream_types: Vec<&str> = events.iter().map(|e| e.stream_type.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let schemas: Vec<i32> = events
            .iter()
            .map(|e| i32::try_from(e.schema).unwrap_or(i32::MAX))
            .collect();
        let times: Vec<SystemTime> = events
            .iter()
            .map(|e| SystemTime::from(e.occurred_at))
            .collect();
        let metadata: Vec<serde_json::Value> = events
            .iter()
            .map(|e| serde_json::to_value(&e.metadata).expect("metadata always serializes"))
            .collect();
        let data: Vec<&serde_json::Value> = events.iter().map(|e| &e.data).collect();
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(APPEND).await.map_err(unavailable)?;
        let inserted = conn
            .execute(
                &statement,
                &[
                    &stream_id.as_uuid(),
                    &version_param(expected),
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
            .await
            .map_err(|error| match error.code() {
                Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict {
                    stream_id,
                    expected,
                },
                _ => unavailable(error),
            })?;
        if inserted == 0 {
            return Err(StoreError::Conflict {
                stream_id,
                expected,
            });
        }
        Ok(())
    }

    async fn load_stream(
        &self,
        stream_id: PostId,
        from: Version,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.query_envelopes(LOAD, &[&stream_id.as_uuid(), &version_param(from)])
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
                    &[&stream_id.as_uuid(), &version_param(version), &limit_param],
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
                    Version::new(version.max(0).unsigned_abs()),
                ))
            })
            .collect()
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.query_envelopes(UNPUBLISHED, &[&limit]).await
    }

    async fn mark_published(&self, events: &[(PostId, Version)]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let streams: Vec<Uuid> = events.iter().map(|(s, _)| s.as_uuid()).collect();
        let versions: Vec<i64> = events.iter().map(|(_, v)| version_param(*v)).collect();
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

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get().await.map_err(unavailable)?;
        conn.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }
}
