//! `query-host`: serves the read model over HTTP.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use platform::auth::TokenKey;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use platform::shutdown_signal;
use query_host::config::Config;
use query_host::{QueryHostDeps, run};

fn main() -> ExitCode {
    platform::host_main("query-host", serve)
}

async fn serve() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let pool = config.read_model.pool(config.pool_size)?;
    if config.token_secret.is_none() {
        tracing::warn!("TOKEN_SECRET is not set: /me/notifications answers 503");
    }
    let listener = platform::bind(config.listen_addr, "query host").await?;
    let deps = QueryHostDeps {
        pool,
        read_model_schema: config.read_model.schema,
        notifications_schema: config.read_model.notifications,
        token_key: config.token_secret.map(|s| TokenKey::new(s.as_bytes())),
        min_version_wait: config.min_version_wait,
        server: ServerConfig::default(),
        metrics: Metrics::new(),
    };
    run(listener, deps, shutdown_signal())
        .await
        .map_err(|e| format!("serve: {e}"))
}
