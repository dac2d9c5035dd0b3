//! Sourcegram's command host: the write side.

//! - [`app`]: the mediator: HTTP to requests, requests to handlers, answers to HTTP.
//! - [`routes`]: the URL space as a closed enum; [`commands`]: one handler per write route.
//! - [`service`]: the write pipeline behind `CommandService::execute`.
//! - [`history`]: a post's events, a page at a time.
//! - [`error`]: the host's errors and their one mapping to problem+json.
//! - [`records`]: the `CommandRecords` port (idempotency, stream registry) and its adapters.
//! - [`registry`]: repairs the stream registry from the event store.
//! - [`relay`]: the outbox relay that publishes every event to Kafka (through `event_bus`).
//! - [`config`]: configuration from the environment.

#![forbid(unsafe_code)]

pub mod app;
pub mod commands;
pub mod config;
pub mod error;
pub mod history;
pub mod metrics;
pub mod records;
pub mod registry;
pub mod relay;
pub mod routes;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use event_store::EventStore;
use platform::auth::TokenKey;
use platform::http::{self, ServerConfig};
use platform::metrics::Metrics;
use platform::stop::Background;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::app::App;
use crate::metrics::CommandMetrics;
use crate::records::CommandRecords;
use crate::relay::RelayConfig;
use crate::service::CommandService;
pub use crate::service::WriteLimits;
use event_bus::KafkaPublisher;

/// What the command host runs on. The caller connects the stores and the
/// producer, so tests can hand in fresh ones.
#[derive(Debug)]
pub struct CommandHostDeps<S, R> {
    pub store: S,
    pub records: R,
    pub publisher: KafkaPublisher,
    pub token_key: TokenKey,
    pub server: ServerConfig,
    pub relay: RelayConfig,
    pub metrics: Metrics,
    /// How long keyed writes may be in flight; the store's and the records'
    /// statement timeouts should be `limits.write_deadline` or less.
    pub limits: WriteLimits,
}

/// Serves the command host on `listener` and runs the outbox relay until
/// `shutdown` completes; then drains requests and registry writes and stops
/// the relay.
pub async fn run<S, R>(
    listener: TcpListener,
    deps: CommandHostDeps<S, R>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    S: EventStore + 'static,
    R: CommandRecords + 'static,
{
    let metrics = CommandMetrics::new(&deps.metrics);
    let store = Arc::new(deps.store);
    let relay_wake = Arc::new(Notify::new());
    let mut background = Background::new();
    background.spawn(
        "outbox relay",
        relay::run_relay(
            Arc::clone(&store),
            deps.publisher.clone(),
            Arc::clone(&relay_wake),
            metrics.clone(),
            deps.relay,
            background.stopping(),
        ),
    );
    let service = Arc::new(CommandService::new(
        store,
        Arc::new(deps.records),
        relay_wake,
        metrics.clone(),
        deps.limits,
    ));
    let app = Arc::new(App {
        service: Arc::clone(&service),
        publisher: deps.publisher,
        token_key: deps.token_key,
        metrics,
        max_body_bytes: deps.server.max_body_bytes,
        body_read_timeout: deps.server.body_read_timeout,
    });
    let grace = deps.server.shutdown_grace;
    let served = http::serve(
        listener,
        deps.server,
        deps.metrics,
        {
            let app = Arc::clone(&app);
            move |request, context| {
                let app = Arc::clone(&app);
                async move { app.handle(request, context).await }
            }
        },
        shutdown,
    )
    .await;
    // Registry writes are not waited for by requests; they are by shutdown.
    if tokio::time::timeout(grace, service.registry_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "stream registry writes still pending at shutdown; repair-registry brings the registry up to date"
        );
    }
    background.stop().await;
    served
}
