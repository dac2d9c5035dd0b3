//! The Kafka side of a projection: read `post-events` in micro-batches, apply
//! each batch in one transaction, and commit offsets only after that
//! transaction committed. A crash in between redelivers the batch, and the
//! version check makes that redelivery change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use domain::EventEnvelope;
use event_store::EventStore;
use platform::metrics::{Counter, Gauge, Histogram, Metrics};
use platform::stop::Stopping;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::notifications::Notifications;
use crate::projector::{BatchOutcome, ProjectionError, ReadModel};

/// The projections this host runs: a closed set, dispatched by `match`.
#[derive(Debug)]
pub enum Projection {
    ReadModel(ReadModel),
    Notifications(Notifications),
}

impl Projection {
    pub fn name(&self) -> &'static str {
        match self {
            Projection::ReadModel(_) => "read_model",
            Projection::Notifications(_) => "notifications",
        }
    }

    pub async fn apply_batch<S: EventStore>(
        &self,
        store: &S,
        batch: &[EventEnvelope],
    ) -> Result<BatchOutcome, ProjectionError> {
        match self {
            Projection::ReadModel(model) => model.apply_batch(store, batch).await,
            Projection::Notifications(notifications) => {
                notifications.apply_batch(store, batch).await
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    /// Most events applied in one transaction.
    pub max_batch: usize,
    /// How long a batch waits to fill once its first event arrived. Zero: a
    /// batch is what has arrived by then (a fetch's messages arrive together).
    pub max_wait: Duration,
    /// The consumer's `fetch.wait.max.ms`: how long the broker may hold a fetch
    /// open while it has nothing to send. Kafka answers as soon as a message
    /// arrives, so a long wait costs no lag and spares idle round trips.
    pub fetch_wait: Duration,
    /// `group.instance.id`: unique per running instance, stable across its
    /// restarts. `None` means dynamic membership.
    pub instance_id: Option<String>,
    /// librdkafka's `debug` contexts (for example `cgrp,fetch`), logged at
    /// debug level under the `librdkafka` target.
    pub debug: Option<String>,
}

/// Notes the first partition assignment: until then the consumer has not joined
/// its group and projects nothing, so the host is not ready.
struct Membership {
    joined: Arc<AtomicBool>,
    projection: &'static str,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                tracing::info!(
                    projection = self.projection,
                    partitions = partitions.count(),
                    "joined the consumer group"
                );
                self.joined.store(true, Ordering::Release);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => {
                tracing::warn!(projection = self.projection, %error, "rebalance failed");
            }
        }
    }
}

/// Consumes until `shutdown` turns true. The batch in progress is finished and
/// committed first. `joined` turns true
/// once the group has given this consumer its partitions (possibly none).
pub async fn run_consumer<S: EventStore>(
    config: ConsumerConfig,
    projection: Arc<Projection>,
    store: Arc<S>,
    metrics: Metrics,
    mut shutdown: Stopping,
    joined: Arc<AtomicBool>,
) -> Result<(), KafkaError> {
    let metrics = ProjectionMetrics::new(&metrics, projection.name());
    let consumer = Arc::new(create_consumer(&config, projection.name(), joined)?);
    consumer.subscribe(&[&config.topic])?;
    let consumed = consume(
        &consumer,
        &config,
        &projection,
        &*store,
        &metrics,
        &mut shutdown,
    )
    .await;
    // Closing a consumer (leaving the group) waits on librdkafka; keep that off
    // the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    consumed
}

fn create_consumer(
    config: &ConsumerConfig,
    projection: &'static str,
    joined: Arc<AtomicBool>,
) -> Result<StreamConsumer<Membership>, KafkaError> {
    let mut client = ClientConfig::new();
    if let Some(instance) = &config.instance_id {
        // Static membership: a restarted instance takes its own place back at
        // once, instead of waiting for the broker to expire the dead member
        // after `session.timeout.ms`.
        client.set("group.instance.id", instance);
    }
    if let Some(debug) = &config.debug {
        client
            .set("debug", debug)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set(
            "fetch.wait.max.ms",
            config.fetch_wait.as_millis().to_string(),
        )
        .set("session.timeout.ms", "30000")
        .create_with_context(Membership { joined, projection })
}

/// The consume loop, until shutdown.
async fn consume<S: EventStore>(
    consumer: &Arc<StreamConsumer<Membership>>,
    config: &ConsumerConfig,
    projection: &Projection,
    store: &S,
    metrics: &ProjectionMetrics,
    shutdown: &mut Stopping,
) -> Result<(), KafkaError> {
    let name = projection.name();
    let mut failing = false;
    loop {
        if shutdown.is_requested() {
            return Ok(());
        }
        let first = tokio::select! {
            message = consumer.recv() => message,
            () = shutdown.requested() => return Ok(()),
        };
        let mut batch = Batch::default();
        match first {
            Ok(message) => batch.add(&message, metrics),
            Err(error) => {
                tracing::warn!(%error, projection = name, "kafka receive failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let deadline = tokio::time::Instant::now() + config.max_wait;
        while batch.len() < config.max_batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(message)) => batch.add(&message, metrics),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let applied = projection.apply_batch(store, &batch.envelopes).await;
            let took = started.elapsed();
            match applied {
                Ok(outcome) => {
                    if failing {
                        tracing::info!(projection = name, "projection recovered");
                        failing = false;
                    }
                    metrics.batch_seconds.observe(took.as_secs_f64());
                    metrics.record(outcome, &batch);
                    break;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, projection = name, "batch not applied; retrying");
                        failing = true;
                    }
                    metrics.failures.inc(1);
                    // Never skip: the batch is retried until it applies. On
                    // shutdown it is left uncommitted and redelivered later.
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.requested() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in &batch.next_offsets {
            offsets.add_partition_offset(&config.topic, *partition, Offset::Offset(*offset))?;
        }
        // An offset commit that is lost only means redelivery, which is harmless.
        if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::debug!(%error, projection = name, "offset commit failed");
        }
    }
}

#[derive(Default)]
struct Batch {
    envelopes: Vec<EventEnvelope>,
    next_offsets: BTreeMap<i32, i64>,
    newest_per_partition: BTreeMap<i32, domain::Timestamp>,
    /// Per message: when the relay's producer created it (its Kafka
    /// timestamp) and when this consumer received it.
    transit: Vec<(domain::Timestamp, domain::Timestamp)>,
    received: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.received
    }

    fn add(&mut self, message: &impl Message, metrics: &ProjectionMetrics) {
        self.received += 1;
        if let Some(created) = message.timestamp().to_millis() {
            self.transit.push((
                domain::Timestamp::from_unix_millis(created),
                platform::clock::now(),
            ));
        }
        let next = self.next_offsets.entry(message.partition()).or_default();
        *next = (*next).max(message.offset() + 1);
        match message
            .payload()
            .map(serde_json::from_slice::<EventEnvelope>)
        {
            Some(Ok(envelope)) => {
                let newest = self
                    .newest_per_partition
                    .entry(message.partition())
                    .or_insert(envelope.occurred_at);
                *newest = (*newest).max(envelope.occurred_at);
                self.envelopes.push(envelope);
            }
            // Not an envelope at all: it cannot be projected, and holding the
            // partition for it would stop every post behind it. The event store
            // stays the truth, and a replay rebuilds from it.
            _ => {
                tracing::error!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "skipping a message that is not an event envelope"
                );
                metrics.undecodable.inc(1);
            }
        }
    }
}

/// One projection's metrics, each named once here (docs/projection.md).
#[derive(Debug, Clone)]
struct ProjectionMetrics {
    registry: Metrics,
    name: &'static str,
    batch_seconds: Histogram,
    failures: Counter,
    undecodable: Counter,
    projected: Counter,
    skipped: Counter,
    healed: Counter,
    batches: Counter,
    /// From the command that made an event to its projection.
    lag: Histogram,
    /// From the relay's producer to this consumer.
    transit: Histogram,
}

impl ProjectionMetrics {
    fn new(registry: &Metrics, name: &'static str) -> Self {
        let label = [("projection", name)];
        Self {
            registry: registry.clone(),
            name,
            batch_seconds: registry.histogram("sourcegram_projection_batch_seconds", &label),
            failures: registry.counter("sourcegram_projection_failures_total", &label),
            undecodable: registry.counter("sourcegram_projection_undecodable_total", &label),
            projected: registry.counter("sourcegram_events_projected_total", &label),
            skipped: registry.counter("sourcegram_events_skipped_total", &label),
            healed: registry.counter("sourcegram_events_healed_total", &label),
            batches: registry.counter("sourcegram_projection_batches_total", &label),
            lag: registry.histogram("sourcegram_projection_lag_seconds", &label),
            transit: registry.histogram("sourcegram_broker_transit_seconds", &label),
        }
    }

    /// How far behind one partition is, by its newest projected event.
    fn partition_lag_ms(&self, partition: i32) -> Gauge {
        let partition = partition.to_string();
        self.registry.gauge(
            "sourcegram_projection_lag_ms",
            &[("projection", self.name), ("partition", &partition)],
        )
    }

    fn record(&self, outcome: BatchOutcome, batch: &Batch) {
        self.projected.inc(outcome.applied as u64);
        self.skipped.inc(outcome.skipped as u64);
        self.healed.inc(outcome.healed as u64);
        self.batches.inc(1);
        let now = platform::clock::now();
        // End-to-end lag of every event: from the command that made it to its
        // projection (append, outbox relay, broker, this batch).
        self.lag.observe_many(
            batch
                .envelopes
                .iter()
                .map(|e| now.millis_since(e.occurred_at) as f64 / 1000.0),
        );
        // The broker's share of that lag: from the relay's producer creating the
        // message (its Kafka timestamp, just before the broker took it) until
        // this consumer received it.
        self.transit.observe_many(
            batch
                .transit
                .iter()
                .map(|(created, received)| received.millis_since(*created) as f64 / 1000.0),
        );
        for (partition, newest) in &batch.newest_per_partition {
            self.partition_lag_ms(*partition)
                .set(now.millis_since(*newest) as f64);
        }
    }
}
