//! Sourcegram's command host: the write side.
//!
//! - [`app`]: the mediator and the write, history and health handlers.
//! - [`routes`]: the URL space as a closed enum.
//! - [`error`]: the host's errors and their one mapping to problem+json.
//! - [`event_store`]: the `EventStore` port and its adapters.
//! - [`records`]: the `CommandRecords` port (idempotency, stream registry) and its adapters.
//! - [`registry`]: repairs the stream registry from the event store.
//! - [`publisher`] and [`relay`]: the outbox relay that publishes every event to Kafka.
//! - [`config`]: configuration from the environment.
//! - [`batch`]: group commit, so concurrent writes share a statement.
//!
//! Pieces the other hosts share live here too:
//! - [`http`]: the hyper accept loop, problem+json, JSON bodies.
//! - [`auth`]: HMAC-signed bearer tokens.
//! - [`metrics`]: a small Prometheus registry.
//! - [`pg`]: the PostgreSQL connection pool.
//! - [`clock`]: where the hosts read the time.
//! - [`testkit`]: fresh schemas and topics on the real services, for tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod batch;
pub mod clock;
pub mod config;
pub mod error;
pub mod event_store;
pub mod http;
pub mod metrics;
pub mod pg;
pub mod publisher;
pub mod records;
pub mod registry;
pub mod relay;
pub mod routes;
pub mod testkit;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::app::{App, StreamSlots};
use crate::auth::TokenKey;
use crate::event_store::EventStore;
use crate::http::ServerConfig;
use crate::metrics::Metrics;
use crate::publisher::KafkaPublisher;
use crate::records::CommandRecords;
use crate::relay::RelayConfig;

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
    let store = Arc::new(deps.store);
    let relay_wake = Arc::new(Notify::new());
    let (stop_relay, relay_stopped) = watch::channel(false);
    let relay = tokio::spawn(relay::run_relay(
        Arc::clone(&store),
        deps.publisher.clone(),
        Arc::clone(&relay_wake),
        deps.metrics.clone(),
        deps.relay,
        relay_stopped,
    ));
    let records = Arc::new(deps.records);
    let app = Arc::new(App {
        store,
        registry: app::registry_batcher(Arc::clone(&records), deps.metrics.clone()),
        records,
        publisher: deps.publisher,
        relay_wake,
        token_key: deps.token_key,
        metrics: deps.metrics.clone(),
        max_body_bytes: deps.server.max_body_bytes,
        streams: StreamSlots::default(),
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
    if tokio::time::timeout(grace, app.registry.idle())
        .await
        .is_err()
    {
        tracing::warn!(
            "stream registry writes still pending at shutdown; repair-registry brings the registry up to date"
        );
    }
    // Sending fails only if the relay already ended, which is what we want anyway.
    let _ = stop_relay.send(true);
    if let Err(error) = relay.await {
        tracing::error!(%error, "outbox relay task failed");
    }
    served
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Each host's `main`
/// calls this first.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// Completes on Ctrl-C or SIGTERM: the shutdown future every host's `main` uses.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
