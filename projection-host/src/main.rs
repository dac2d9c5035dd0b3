//! `projection-host`: consumes `post-events` into the read model and the
//! notifications, and serves health, metrics and the replay admin surface.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use event_store::AnyEventStore;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use platform::shutdown_signal;
use projection_host::config::Config;
use projection_host::{ProjectionHostDeps, run};

fn main() -> ExitCode {
    platform::host_main("projection-host", serve)
}

async fn serve() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let store = AnyEventStore::connect(&config.event_store_url, config.pool_size)
        .await
        .map_err(|e| format!("connect event store: {e}"))?;
    let pool = config.read_model.pool(config.pool_size)?;
    if config.admin_token.is_none() {
        tracing::warn!("ADMIN_TOKEN is not set: the replay admin surface is disabled");
    }
    let listener = platform::bind(config.listen_addr, "projection host").await?;
    let deps = ProjectionHostDeps {
        store,
        pool,
        read_model_schema: config.read_model.schema,
        notifications_schema: config.read_model.notifications,
        consumer: config.consumer,
        notifications_group: config.notifications_group,
        admin_token: config.admin_token,
        server: ServerConfig::default(),
        metrics: Metrics::new(),
    };
    run(listener, deps, shutdown_signal())
        .await
        .map_err(|e| format!("serve: {e}"))
}
