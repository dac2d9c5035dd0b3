//! The command records port: what the write side remembers besides events.
//! Idempotency records (so a retried write answers the same and changes nothing,
//! across restarts) and the stream registry (each post's author, last version and
//! whether it is deleted), which can be repaired from the event store.

pub mod mssql;
pub mod postgres;

use std::future::Future;
use std::time::Duration;

use domain::{PostId, Timestamp, UserId, Version};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("command records unavailable: {0}")]
    Unavailable(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
}

/// The response a completed idempotent request gave, replayed on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

/// Who holds a claim: made afresh by every successful claim, so a request
/// whose claim was taken over can no longer complete or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimToken(pub Uuid);

impl ClaimToken {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ClaimToken {
    fn default() -> Self {
        Self::new()
    }
}

/// The outcome of claiming an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key was free (or its earlier claim went stale): this request owns it.
    Claimed(ClaimToken),
    /// A request with this key and the same fingerprint completed: answer this.
    Completed(StoredResponse),
    /// A request with this key and the same fingerprint is still running.
    InProgress,
    /// The key was used with another request (method, path or body differ).
    Mismatch,
}

/// One post in the stream registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub post_id: PostId,
    pub author: UserId,
    pub version: Version,
    pub deleted: bool,
    pub updated_at: Timestamp,
}

pub trait CommandRecords: Send + Sync {
    /// Claims `key` for `user`'s request whose fingerprint (a hash of method,
    /// path and body) is `fingerprint`. Concurrent claims of one key: exactly one
    /// gets `Claimed`. A claim older than `stale_after` that never completed
    /// (its host died) can be claimed again. Ages are measured by the
    /// database's clock alone, so hosts whose clocks disagree agree on them.
    fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        fingerprint: &[u8; 32],
        stale_after: Duration,
    ) -> impl Future<Output = Result<IdempotencyClaim, RecordsError>> + Send;

    /// Stores the response of the request that holds the claim `claim`; says
    /// whether it still held it (a claim taken over is left to its new owner).
    fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
        response: &StoredResponse,
    ) -> impl Future<Output = Result<bool, RecordsError>> + Send;

    /// Gives the claim `claim` back (the request failed before changing
    /// anything), so a retry can run; a claim taken over is left alone.
    fn release_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
    ) -> impl Future<Output = Result<(), RecordsError>> + Send;

    /// Upserts a post's registry row; a row never moves back to a lower version.
    fn record_stream_head(
        &self,
        head: &StreamHead,
    ) -> impl Future<Output = Result<(), RecordsError>> + Send;

    /// Upserts several registry rows at once (the host batches the rows of
    /// concurrent writes). Adapters that cannot do better write them one by one.
    fn record_stream_heads(
        &self,
        heads: &[StreamHead],
    ) -> impl Future<Output = Result<(), RecordsError>> + Send {
        async move {
            for head in heads {
                self.record_stream_head(head).await?;
            }
            Ok(())
        }
    }

    fn stream_head(
        &self,
        post_id: PostId,
    ) -> impl Future<Output = Result<Option<StreamHead>, RecordsError>> + Send;

    /// Cheap reachability check for `/readyz`.
    fn ping(&self) -> impl Future<Output = Result<(), RecordsError>> + Send;
}

/// The command records chosen by configuration, dispatched by `match`.
#[derive(Debug, Clone)]
pub enum AnyCommandRecords {
    Postgres(postgres::PostgresCommandRecords),
    Mssql(mssql::MssqlCommandRecords),
}

impl AnyCommandRecords {
    /// Connects by URL scheme (`postgres://`, `mssql://`, or an ADO.NET string
    /// with `server=`) and creates the tables.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, RecordsError> {
        Self::connect_bounded(url, pool_size, None).await
    }

    /// [`AnyCommandRecords::connect`], with every PostgreSQL statement cut off
    /// by the server after `statement_timeout`.
    pub async fn connect_bounded(
        url: &str,
        pool_size: usize,
        statement_timeout: Option<Duration>,
    ) -> Result<Self, RecordsError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = plumbing::pg::PgPool::from_url(url, pool_size)
                .map_err(|e| RecordsError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
            let pool = match statement_timeout {
                Some(timeout) => plumbing::pg::with_statement_timeout(&pool, timeout),
                None => pool,
            };
            let records = postgres::PostgresCommandRecords::new(plumbing::pg::keyed(&pool));
            records.migrate().await?;
            return Ok(Self::Postgres(records));
        }
        if url.starts_with("mssql://") || url.to_ascii_lowercase().contains("server=") {
            let records = mssql::MssqlCommandRecords::new(mssql::parse_config(url)?, pool_size);
            records.migrate().await?;
            return Ok(Self::Mssql(records));
        }
        Err(RecordsError::Unavailable(
            "RECORDS_URL must be postgres://..., mssql://... or an ADO.NET string with server=..."
                .to_owned(),
        ))
    }
}

/// Each method of [`CommandRecords`], forwarded to the adapter inside.
macro_rules! forward {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
            match self {
                Self::Postgres(records) => records.$name($($arg),*).await,
                Self::Mssql(records) => records.$name($($arg),*).await,
            }
        })*
    };
}

/// Hands the macro `$forward` the signatures of [`CommandRecords`]' methods,
/// after `$head`: the dispatcher above and the tests' wrappers forward every
/// method from this one list.
#[macro_export]
macro_rules! command_records_methods {
    ($($forward:ident)::+ { $($head:tt)* }) => {
        $($forward)::+! {
            $($head)*
            fn claim_idempotency_key(
                &self, user: &UserId, key: &str, fingerprint: &[u8; 32], stale_after: Duration
            ) -> Result<IdempotencyClaim, RecordsError>;
            fn complete_idempotency_key(
                &self, user: &UserId, key: &str, claim: ClaimToken, response: &StoredResponse
            ) -> Result<bool, RecordsError>;
            fn release_idempotency_key(&self, user: &UserId, key: &str, claim: ClaimToken)
                -> Result<(), RecordsError>;
            fn record_stream_head(&self, head: &StreamHead) -> Result<(), RecordsError>;
            fn record_stream_heads(&self, heads: &[StreamHead]) -> Result<(), RecordsError>;
            fn stream_head(&self, post_id: PostId) -> Result<Option<StreamHead>, RecordsError>;
            fn ping(&self) -> Result<(), RecordsError>;
        }
    };
}

impl CommandRecords for AnyCommandRecords {
    crate::command_records_methods!(forward {});
}
