//! The live read-model projector: applies a batch of envelopes in ONE PostgreSQL
//! transaction that also checks and advances each stream's projected version
//! (`posts.version`). Events at or below it are skipped, so redelivery changes
//! nothing; a gap is healed by loading the missing events from the event store.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::Poll;

use domain::{EventEnvelope, PostEvent, PostId, Version};
use event_store::{EventStore, StoreError};
use plumbing::pg::{PgConn, PgPool, version_from_sql};
use read_model::SchemaName;
use read_model::live::{LiveSql, Statements, insert_created, write_effect};
use uuid::Uuid;

/// Why a batch could not be applied. Nothing of the batch was committed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
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
    #[error("{stream}: version {missing} is in neither the batch nor the event store")]
    Unhealable { stream: PostId, missing: u64 },
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    pub skipped: usize,
    /// Events loaded from the event store to fill gaps.
    pub healed: usize,
}

/// The read model in one PostgreSQL schema.
#[derive(Debug)]
pub struct ReadModel {
    pool: PgPool,
    schema: SchemaName,
    sql: LiveSql,
    /// The swap fence every batch shares with the other hosts ([`crate::fence`]).
    swap_key: String,
}

impl ReadModel {
    /// The read model in `schema`, creating its tables if missing.
    pub async fn open(pool: PgPool, schema: &SchemaName) -> Result<Self, ProjectionError> {
        read_model::schema::create_read_model(&*pool.get().await?, schema).await?;
        Ok(Self {
            pool,
            schema: schema.clone(),
            sql: LiveSql::new(schema),
            swap_key: crate::fence::swap_key(schema),
        })
    }

    pub fn schema(&self) -> &SchemaName {
        &self.schema
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies `batch` (any order, duplicates allowed) in one transaction.
    pub async fn apply_batch<S: EventStore>(
        &self,
        store: &S,
        batch: &[EventEnvelope],
    ) -> Result<BatchOutcome, ProjectionError> {
        let (by_stream, mut outcome) = group_by_stream(batch);
        let mut conn = self.pool.get().await?;
        let statements = Statements::prepare(&mut conn, &self.sql).await?;
        let fence = conn.prepared(crate::fence::SHARE_SWAP_FENCE).await?;
        let tx = keyed_transaction(&mut conn).await?;
        // A replay swapping tables, on any host, holds this exclusively: the
        // batch waits, then applies to the swapped-in tables.
        tx.execute(&fence, &[&self.swap_key]).await?;
        // Lock the rows of every stream in the batch, in id order so that two
        // projector instances cannot deadlock; the second waits, then skips.
        let ids: Vec<Uuid> = by_stream.keys().map(PostId::as_uuid).collect();
        let mut projected: BTreeMap<Uuid, u64> = BTreeMap::new();
        for row in tx.query(&statements.lock_versions, &[&ids]).await? {
            let version: i64 = row.get(1);
            projected.insert(
                row.get(0),
                version_from_sql(version).unwrap_or_default().get(),
            );
        }
        let mut to_apply: Vec<(EventEnvelope, PostEvent)> = Vec::new();
        let mut changes = Vec::new();
        for (stream, events) in &by_stream {
            let projected = projected.get(&stream.as_uuid()).copied().unwrap_or(0);
            let pending = pending_events(store, *stream, projected, events, &mut outcome).await?;
            if let Some((last, _)) = pending.last() {
                changes.push(format!("{stream}:{}", last.version));
            }
            to_apply.extend(pending);
        }
        outcome.applied = to_apply.len();
        // New posts first, all in one statement: a create is its stream's
        // first event, so nothing of the same stream can come before it.
        let (created, changed): (Vec<_>, Vec<_>) = to_apply
            .iter()
            .partition(|(_, event)| matches!(event, PostEvent::PostCreated(_)));
        insert_created(&tx, &statements, &created).await?;
        // Then one statement per other event, all sent before the first answer
        // is read (pipelined on the connection), so they cost about one round
        // trip instead of one per event. The server runs them in the order sent.
        in_order(
            changed
                .iter()
                .map(|(envelope, event)| write_effect(&tx, &statements, envelope, event)),
        )
        .await?;
        if !changes.is_empty() {
            tx.execute(&statements.notify, &[&changes]).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Opens the transaction a projection applies a batch in, with sequential
/// scans off: every statement in it finds its rows by key
/// (docs/performance.md#keyed-plans).
pub(crate) async fn keyed_transaction(
    conn: &mut PgConn,
) -> Result<tokio_postgres::Transaction<'_>, tokio_postgres::Error> {
    let tx = conn.client().transaction().await?;
    tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
    Ok(tx)
}

/// A batch's events grouped by stream and version.
pub(crate) type ByStream<'a> = BTreeMap<PostId, BTreeMap<Version, &'a EventEnvelope>>;

/// Groups a batch by stream and version; the outcome starts with the exact
/// duplicates within the batch counted as skipped.
pub(crate) fn group_by_stream(batch: &[EventEnvelope]) -> (ByStream<'_>, BatchOutcome) {
    let mut by_stream: ByStream<'_> = BTreeMap::new();
    for envelope in batch {
        by_stream
            .entry(envelope.stream_id)
            .or_default()
            .insert(envelope.version, envelope);
    }
    let distinct: usize = by_stream.values().map(BTreeMap::len).sum();
    let outcome = BatchOutcome {
        skipped: batch.len() - distinct,
        ..BatchOutcome::default()
    };
    (by_stream, outcome)
}

/// The events of one stream still to apply after version `projected`, in order
/// and decoded. Older ones are counted as skipped; a gap is filled from the
/// event store, never skipped over.
pub(crate) async fn pending_events<S: EventStore>(
    store: &S,
    stream: PostId,
    projected: u64,
    events: &BTreeMap<Version, &EventEnvelope>,
    outcome: &mut BatchOutcome,
) -> Result<Vec<(EventEnvelope, PostEvent)>, ProjectionError> {
    let mut next = projected + 1;
    let mut pending: Vec<EventEnvelope> = Vec::new();
    for (version, envelope) in events {
        let version = version.get();
        if version < next {
            outcome.skipped += 1;
            continue;
        }
        if version > next {
            let missing = store.load_stream(stream, Version::new(next)).await?;
            let healed: Vec<EventEnvelope> = missing
                .into_iter()
                .filter(|e| e.version.get() < version)
                .collect();
            if healed.len() as u64 != version - next {
                return Err(ProjectionError::Unhealable {
                    stream,
                    missing: next,
                });
            }
            outcome.healed += healed.len();
            pending.extend(healed);
        }
        pending.push((*envelope).clone());
        next = version + 1;
    }
    pending
        .into_iter()
        .map(|envelope| {
            let event = decode(&envelope)?;
            Ok((envelope, event))
        })
        .collect()
}

/// The event in `envelope`, or why it cannot be projected.
pub(crate) fn decode(envelope: &EventEnvelope) -> Result<PostEvent, ProjectionError> {
    envelope.decode().map_err(|e| ProjectionError::Undecodable {
        stream: envelope.stream_id,
        version: envelope.version,
        reason: e.to_string(),
    })
}

/// Runs `futures` together and waits for all of them, polling each first in
/// the order given: for statements on one connection, that is the order they
/// are sent in. The first error is returned; the rest are dropped with it.
pub(crate) async fn in_order<T, E, F>(futures: impl IntoIterator<Item = F>) -> Result<Vec<T>, E>
where
    F: Future<Output = Result<T, E>>,
{
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut waiting = false;
        for (future, done) in futures.iter_mut().zip(done.iter_mut()) {
            if done.is_some() {
                continue;
            }
            match future.as_mut().poll(cx) {
                Poll::Ready(Ok(value)) => *done = Some(value),
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    })
    .await?;
    Ok(done.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::in_order;

    /// Notes its start, waits `delay_ms`, notes its end; a zero delay fails.
    async fn step(id: usize, delay_ms: u64, log: Arc<Mutex<Vec<String>>>) -> Result<usize, String> {
        log.lock().expect("lock").push(format!("start {id}"));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        log.lock().expect("lock").push(format!("end {id}"));
        if delay_ms == 0 {
            Err(format!("step {id} failed"))
        } else {
            Ok(id)
        }
    }

    #[tokio::test]
    async fn starts_every_future_in_order_before_any_finishes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        // Later ones finish first, so waiting one by one would show in the log.
        let results = in_order((0..5).map(|id| step(id, 50 - 10 * id as u64, Arc::clone(&log))))
            .await
            .expect("all succeed");
        assert_eq!(results, vec![0, 1, 2, 3, 4], "results in the order given");
        let log = log.lock().expect("lock");
        let starts: Vec<String> = (0..5).map(|id| format!("start {id}")).collect();
        assert_eq!(
            log[..5],
            starts[..],
            "all started, in order, before any ended: {log:?}"
        );
        assert_eq!(log[5], "end 4");
    }

    #[tokio::test]
    async fn the_first_error_is_returned() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let outcome = in_order([
            step(0, 50, Arc::clone(&log)),
            step(1, 0, Arc::clone(&log)),
            step(2, 50, Arc::clone(&log)),
        ])
        .await;
        assert_eq!(outcome, Err("step 1 failed".to_owned()));
    }
}
