//! The command host's metrics, each named once here and handed out as a typed
//! handle (docs/http.md lists what they mean).

use platform::metrics::{Counter, Gauge, Histogram, Metrics};

#[derive(Debug, Clone)]
pub struct CommandMetrics {
    /// Everything `/metrics` renders, the HTTP layer's series included.
    pub registry: Metrics,
    pub events_appended: Counter,
    pub append_conflicts: Counter,
    pub idempotent_replays: Counter,
    pub registry_failures: Counter,
    pub outbox_unpublished: Gauge,
    pub events_published: Counter,
    pub publish_failures: Counter,
    /// From the command that made an event until the broker acknowledged it.
    pub outbox_delay: Histogram,
    /// Appends of commands to one post decided together, and how many
    /// commands they carried: their ratio is the mean batch.
    pub write_batches: Counter,
    pub batched_commands: Counter,
    pub snapshots_saved: Counter,
    /// Loads that started from a snapshot; snapshots passed over because
    /// they were of another layout, or did not read back.
    pub snapshots_used: Counter,
    pub snapshots_of_other_layout: Counter,
    pub snapshots_unreadable: Counter,
}

impl CommandMetrics {
    pub fn new(registry: &Metrics) -> Self {
        Self {
            registry: registry.clone(),
            events_appended: registry.counter("sourcegram_events_appended_total", &[]),
            append_conflicts: registry.counter("sourcegram_append_conflicts_total", &[]),
            idempotent_replays: registry.counter("sourcegram_idempotent_replays_total", &[]),
            registry_failures: registry.counter("sourcegram_registry_failures_total", &[]),
            outbox_unpublished: registry.gauge("sourcegram_outbox_unpublished", &[]),
            events_published: registry.counter("sourcegram_events_published_total", &[]),
            publish_failures: registry.counter("sourcegram_publish_failures_total", &[]),
            outbox_delay: registry.histogram("sourcegram_outbox_delay_seconds", &[]),
            write_batches: registry.counter("sourcegram_write_batches_total", &[]),
            batched_commands: registry.counter("sourcegram_batched_commands_total", &[]),
            snapshots_saved: registry.counter("sourcegram_snapshots_saved_total", &[]),
            snapshots_used: registry
                .counter("sourcegram_snapshot_loads_total", &[("outcome", "used")]),
            snapshots_of_other_layout: registry.counter(
                "sourcegram_snapshot_loads_total",
                &[("outcome", "other_layout")],
            ),
            snapshots_unreadable: registry.counter(
                "sourcegram_snapshot_loads_total",
                &[("outcome", "unreadable")],
            ),
        }
    }
}
