//! The read model's fences across every projection host on one database:
//! PostgreSQL advisory locks, keyed by the live schema's name.
//!
//! - The swap fence: every live batch takes it shared inside its transaction; a
//!   replay takes it exclusively for its last catch-up and the swap, so no host
//!   applies an event to tables the swap is about to retire.
//! - The replay lease: a session lock on a connection of its own, held for the
//!   whole replay, so one replay of a schema runs at a time in the cluster. A
//!   host that dies drops its connection, and with it the lease.

use read_model::SchemaName;
use tokio_postgres::{Client, GenericClient};

/// Taken first in every live batch's transaction; released at its end.
pub(crate) const SHARE_SWAP_FENCE: &str =
    "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))";
const HOLD_SWAP_FENCE: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
const TRY_REPLAY_LEASE: &str = "SELECT pg_try_advisory_lock(hashtextextended($1, 0))";

/// The swap fence's key of the read model in `live`.
pub fn swap_key(live: &SchemaName) -> String {
    format!("sourcegram.read_model.swap:{live}")
}

fn replay_key(live: &SchemaName) -> String {
    format!("sourcegram.read_model.replay:{live}")
}

/// Waits until no live batch of any host is in flight on `live`'s tables, then
/// keeps new ones waiting until `tx` ends.
pub async fn hold_swap_fence(
    tx: &impl GenericClient,
    live: &SchemaName,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(HOLD_SWAP_FENCE, &[&swap_key(live)]).await?;
    Ok(())
}

/// The right to replay one read model, held until dropped.
pub struct ReplayLease {
    pub(crate) client: Client,
}

impl std::fmt::Debug for ReplayLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayLease").finish_non_exhaustive()
    }
}

impl ReplayLease {
    /// The lease on `live` over `client` (a connection of its own, closed with
    /// the lease), or `None` while a replay of it runs anywhere.
    pub async fn try_take(
        client: Client,
        live: &SchemaName,
    ) -> Result<Option<Self>, tokio_postgres::Error> {
        let row = client
            .query_one(TRY_REPLAY_LEASE, &[&replay_key(live)])
            .await?;
        Ok(row.get::<_, bool>(0).then_some(Self { client }))
    }
}
