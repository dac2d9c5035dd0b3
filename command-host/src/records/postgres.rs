//! Command records on PostgreSQL: `idempotency_keys` and `stream_registry`.
//! Table names are unqualified, so the pool's `search_path` chooses the schema.

use plumbing::pg::{version_from_sql, version_to_sql};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use domain::{PostId, UserId};

use super::{
    ClaimToken, CommandRecords, IdempotencyClaim, RecordsError, StoredResponse, StreamHead,
};
use plumbing::pg::PgPool;

const MIGRATE: &str = "
SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.sourcegram_records'));
CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id           text        NOT NULL,
    idem_key          text        NOT NULL,
    fingerprint       bytea       NOT NULL,
    completed         boolean     NOT NULL DEFAULT false,
    response_status   integer,
    response_location text,
    response_body     text,
    claimed_at        timestamptz NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS owner uuid;
CREATE TABLE IF NOT EXISTS stream_registry (
    post_id    uuid        PRIMARY KEY,
    author     text        NOT NULL,
    version    bigint      NOT NULL,
    deleted    boolean     NOT NULL,
    updated_at timestamptz NOT NULL
);
";

// Inserts a fresh claim, or takes over a stale unfinished claim of the same
// request. The row lock makes concurrent claimers queue: exactly one gets a row
// back; the others see the row as it is after the winner. Ages are the
// server's own clock ($5: milliseconds), never a host's.
const CLAIM: &str = "
INSERT INTO idempotency_keys (user_id, idem_key, fingerprint, claimed_at, owner) VALUES ($1, $2, $3, now(), $4)
ON CONFLICT (user_id, idem_key) DO UPDATE SET claimed_at = EXCLUDED.claimed_at, owner = EXCLUDED.owner
WHERE NOT idempotency_keys.completed
  AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
  AND idempotency_keys.claimed_at < now() - $5::float8 * interval '1 millisecond'
RETURNING user_id";
const EXISTING: &str =
    "SELECT fingerprint, completed, response_status, response_location, response_body
FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2";
const COMPLETE: &str = "UPDATE idempotency_keys
SET completed = true, response_status = $3, response_location = $4, response_body = $5
WHERE user_id = $1 AND idem_key = $2 AND owner = $6";
const RELEASE: &str = "DELETE FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2 AND NOT completed AND owner = $3";
const RECORD_HEAD: &str = "
INSERT INTO stream_registry (post_id, author, version, deleted, updated_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (post_id) DO UPDATE
SET author = EXCLUDED.author, version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at
WHERE stream_registry.version < EXCLUDED.version";
// The same for many posts in one statement. Rows are sorted by post id, so two
// hosts upserting overlapping posts lock them in the same order.
const RECORD_HEADS: &str = "
INSERT INTO stream_registry (post_id, author, version, deleted, updated_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::boolean[], $5::timestamptz[])
ON CONFLICT (post_id) DO UPDATE
SET author = EXCLUDED.author, version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = EXCLUDED.updated_at
WHERE stream_registry.version < EXCLUDED.version";
const HEAD: &str =
    "SELECT author, version, deleted, updated_at FROM stream_registry WHERE post_id = $1";

#[derive(Debug, Clone)]
pub struct PostgresCommandRecords {
    pool: PgPool,
}

fn unavailable(error: tokio_postgres::Error) -> RecordsError {
    RecordsError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> RecordsError {
    RecordsError::Corrupt(error.to_string())
}

impl PostgresCommandRecords {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the tables if they do not exist. Safe to run from several hosts.
    pub async fn migrate(&self) -> Result<(), RecordsError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let tx = conn.client().transaction().await.map_err(unavailable)?;
        tx.batch_execute(MIGRATE).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }
}

impl CommandRecords for PostgresCommandRecords {
    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        fingerprint: &[u8; 32],
        stale_after: Duration,
    ) -> Result<IdempotencyClaim, RecordsError> {
        let token = ClaimToken::new();
        let stale_after_ms = stale_after.as_secs_f64() * 1_000.0;
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let claim = conn.prepared(CLAIM).await.map_err(unavailable)?;
        let fingerprint = fingerprint.as_slice();
        let claimed = conn
            .query_opt(
                &claim,
                &[
                    &user.as_str(),
                    &key,
                    &fingerprint,
                    &token.0,
                    &stale_after_ms,
                ],
            )
            .await
            .map_err(unavailable)?;
        if claimed.is_some() {
            return Ok(IdempotencyClaim::Claimed(token));
        }
        let existing = conn.prepared(EXISTING).await.map_err(unavailable)?;
        let Some(row) = conn
            .query_opt(&existing, &[&user.as_str(), &key])
            .await
            .map_err(unavailable)?
        else {
            // Released between the two statements: the caller may simply retry.
            return Ok(IdempotencyClaim::InProgress);
        };
        let stored_fingerprint: Vec<u8> = row.try_get(0).map_err(corrupt)?;
        if stored_fingerprint != fingerprint {
            return Ok(IdempotencyClaim::Mismatch);
        }
        if !row.try_get::<_, bool>(1).map_err(corrupt)? {
            return Ok(IdempotencyClaim::InProgress);
        }
        let status: i32 = row.try_get(2).map_err(corrupt)?;
        Ok(IdempotencyClaim::Completed(StoredResponse {
            status: u16::try_from(status).map_err(corrupt)?,
            location: row.try_get(3).map_err(corrupt)?,
            body: row
                .try_get::<_, Option<String>>(4)
                .map_err(corrupt)?
                .unwrap_or_default(),
        }))
    }

    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
        response: &StoredResponse,
    ) -> Result<bool, RecordsError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(COMPLETE).await.map_err(unavailable)?;
        let updated = conn
            .execute(
                &statement,
                &[
                    &user.as_str(),
                    &key,
                    &i32::from(response.status),
                    &response.location,
                    &response.body,
                    &claim.0,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(updated == 1)
    }

    async fn release_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
    ) -> Result<(), RecordsError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(RELEASE).await.map_err(unavailable)?;
        conn.execute(&statement, &[&user.as_str(), &key, &claim.0])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn record_stream_head(&self, head: &StreamHead) -> Result<(), RecordsError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(RECORD_HEAD).await.map_err(unavailable)?;
        conn.execute(
            &statement,
            &[
                &head.post_id.as_uuid(),
                &head.author.as_str(),
                &version_to_sql(head.version),
                &head.deleted,
                &SystemTime::from(head.updated_at),
            ],
        )
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn record_stream_heads(&self, heads: &[StreamHead]) -> Result<(), RecordsError> {
        // One row per post (the highest version), as one statement may not
        // update a row twice.
        let mut latest: BTreeMap<uuid::Uuid, &StreamHead> = BTreeMap::new();
        for head in heads {
            let entry = latest.entry(head.post_id.as_uuid()).or_insert(head);
            if head.version > entry.version {
                *entry = head;
            }
        }
        if latest.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = latest.keys().copied().collect();
        let authors: Vec<&str> = latest.values().map(|h| h.author.as_str()).collect();
        let versions: Vec<i64> = latest.values().map(|h| version_to_sql(h.version)).collect();
        let deleted: Vec<bool> = latest.values().map(|h| h.deleted).collect();
        let times: Vec<SystemTime> = latest
            .values()
            .map(|h| SystemTime::from(h.updated_at))
            .collect();
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(RECORD_HEADS).await.map_err(unavailable)?;
        conn.execute(&statement, &[&ids, &authors, &versions, &deleted, &times])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn stream_head(&self, post_id: PostId) -> Result<Option<StreamHead>, RecordsError> {
        let mut conn = self.pool.get().await.map_err(unavailable)?;
        let statement = conn.prepared(HEAD).await.map_err(unavailable)?;
        let Some(row) = conn
            .query_opt(&statement, &[&post_id.as_uuid()])
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let author: String = row.try_get(0).map_err(corrupt)?;
        let version: i64 = row.try_get(1).map_err(corrupt)?;
        let updated_at: SystemTime = row.try_get(3).map_err(corrupt)?;
        Ok(Some(StreamHead {
            post_id,
            author: UserId::parse(&author).map_err(corrupt)?,
            version: version_from_sql(version).map_err(corrupt)?,
            deleted: row.try_get(2).map_err(corrupt)?,
            updated_at: updated_at.into(),
        }))
    }

    async fn ping(&self) -> Result<(), RecordsError> {
        let conn = self.pool.get().await.map_err(unavailable)?;
        conn.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }
}
