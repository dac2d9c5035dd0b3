//! The outbox relay: publishes every appended event that is not yet marked
//! published, oldest first, then marks it. A write is acknowledged once it is in
//! the event store; this loop makes sure it also reaches Kafka, after a crash of
//! this host or while the broker comes back.

use std::sync::Arc;
use std::time::Duration;

use domain::{PostId, Version};
use event_bus::{KafkaPublisher, PublishError};
use event_store::{EventStore, StoreError};
use platform::stop::Stopping;
use tokio::sync::Notify;

use crate::metrics::CommandMetrics;

/// Why a round of publishing stopped early; the relay retries with backoff.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// How the relay paces itself.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events fetched and published per round.
    pub batch_size: usize,
    /// Without a wake-up, the outbox is still checked this often (events left by
    /// a crashed host, or by another host).
    pub poll_interval: Duration,
    /// Longest pause after repeated failures.
    pub max_backoff: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(500),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Runs until `shutdown` turns true, finishing the round in progress.
pub async fn run_relay<S: EventStore>(
    store: Arc<S>,
    mut publisher: KafkaPublisher,
    wake: Arc<Notify>,
    metrics: CommandMetrics,
    config: RelayConfig,
    mut shutdown: Stopping,
) {
    let mut backoff = Duration::ZERO;
    let mut failing = false;
    // Published, acknowledged by the broker, not yet marked in the store.
    let mut unmarked: Vec<(PostId, Version)> = Vec::new();
    loop {
        if shutdown.is_requested() {
            return mark_before_leaving(&*store, &unmarked).await;
        }
        let pause = if backoff.is_zero() {
            config.poll_interval
        } else {
            backoff
        };
        tokio::select! {
            () = wake.notified(), if backoff.is_zero() => {}
            () = tokio::time::sleep(pause) => {}
            () = shutdown.requested() => return mark_before_leaving(&*store, &unmarked).await,
        }
        let drained = publish_backlog(
            &*store,
            &publisher,
            &metrics,
            config.batch_size,
            &mut unmarked,
            &shutdown,
        )
        .await;
        match drained {
            Ok(()) => {
                if failing {
                    tracing::info!("outbox relay recovered");
                }
                failing = false;
                backoff = Duration::ZERO;
            }
            Err(error) => {
                // Logged once per outage, not on every retry.
                if !failing {
                    tracing::warn!(%error, "outbox relay cannot publish; will retry");
                }
                failing = true;
                metrics.publish_failures.inc(1);
                // Start the next round with a fresh producer: one that failed may
                // hold sequence state the broker no longer accepts. Whatever it did
                // deliver is published again; the projection skips repeats.
                match publisher.renewed() {
                    Ok(fresh) => publisher = fresh,
                    Err(error) => tracing::warn!(%error, "cannot create a new kafka producer"),
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(100), config.max_backoff);
            }
        }
    }
}

/// Marks what the broker already has, so a restart does not send it again.
async fn mark_before_leaving<S: EventStore>(store: &S, unmarked: &[(PostId, Version)]) {
    if let Err(error) = store.mark_published(unmarked).await {
        tracing::debug!(%error, "published events left unmarked; they go again after a restart");
    }
}

/// Publishes until the outbox holds nothing new (or shutdown is asked).
///
/// Rounds overlap: while the broker takes one batch, the store marks the
/// batch before it (`unmarked`), so a round costs one of the two waits, not
/// both. Those events are still unpublished in the store while their mark is
/// under way; the next fetch skips them. Batches are still sent one after the
/// other, each only once the broker acknowledged the one before, so every
/// stream stays in version order. When a fetch finds nothing new, the last
/// batch is marked and the backlog is drained.
async fn publish_backlog<S: EventStore>(
    store: &S,
    publisher: &KafkaPublisher,
    metrics: &CommandMetrics,
    batch_size: usize,
    unmarked: &mut Vec<(PostId, Version)>,
    shutdown: &Stopping,
) -> Result<(), RelayError> {
    loop {
        let batch = store.unpublished(batch_size, unmarked).await?;
        if batch.is_empty() || shutdown.is_requested() {
            store.mark_published(unmarked).await?;
            unmarked.clear();
            return Ok(());
        }
        let (published, marked) =
            tokio::join!(publisher.publish(&batch), store.mark_published(unmarked));
        marked?;
        unmarked.clear();
        published?;
        unmarked.extend(batch.iter().map(|e| (e.stream_id, e.version)));
        metrics.events_published.inc(batch.len() as u64);
        // How long each event waited in the outbox: from the command that made
        // it until the broker acknowledged it. The projection's lag starts here.
        let now = platform::clock::now();
        metrics.outbox_delay.observe_many(
            batch
                .iter()
                .map(|e| now.millis_since(e.occurred_at) as f64 / 1000.0),
        );
    }
}
