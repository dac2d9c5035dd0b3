//! The outbox relay: publishes every appended event that is not yet marked
//! published, oldest first, then marks it. A write is acknowledged once it is in
//! the event store; this loop makes sure it also reaches Kafka, after a crash of
//! this host or while the broker comes back.

use std::sync::Arc;
use std::time::Duration;

use domain::{PostId, Version};
use tokio::sync::{Notify, watch};

use crate::event_store::EventStore;
use crate::metrics::Metrics;
use crate::publisher::KafkaPublisher;

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
    metrics: Metrics,
    config: RelayConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::ZERO;
    let mut failing = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let pause = if backoff.is_zero() {
            config.poll_interval
        } else {
            backoff
        };
        tokio::select! {
            () = wake.notified(), if backoff.is_zero() => {}
            () = tokio::time::sleep(pause) => {}
            _ = shutdown.changed() => return,
        }
        match publish_backlog(&*store, &publisher, &metrics, config.batch_size, &shutdown).await {
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
                metrics.inc("sourcegram_publish_failures_total", &[], 1);
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

/// Publishes until the outbox is empty (or shutdown is asked).
async fn publish_backlog<S: EventStore>(
    store: &S,
    publisher: &KafkaPublisher,
    metrics: &Metrics,
    batch_size: usize,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let batch = store
            .unpublished(batch_size)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        publisher.publish(&batch).await.map_err(|e| e.to_string())?;
        let published: Vec<(PostId, Version)> =
            batch.iter().map(|e| (e.stream_id, e.version)).collect();
        store
            .mark_published(&published)
            .await
            .map_err(|e| e.to_string())?;
        metrics.inc(
            "sourcegram_events_published_total",
            &[],
            published.len() as u64,
        );
        if batch.len() < batch_size || *shutdown.borrow() {
            return Ok(());
        }
    }
}
