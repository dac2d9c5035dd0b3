//! What Sourcegram's three hosts share, and nothing of any one host's domain:
//!
//! - [`http`]: the hyper accept loop, problem+json, JSON bodies, route tables.
//! - [`auth`]: HMAC-signed bearer tokens.
//! - [`metrics`]: a small Prometheus registry with typed handles.
//! - [`routes`]: route tables: matching, 404, 405 with `Allow`, labels.
//! - [`clock`]: where the hosts read the time.
//! - [`stop`]: the background tasks of a host, and how they stop.
//!
//! It links no broker client and no database driver; the PostgreSQL pool,
//! group commit and configuration are in `plumbing`, which the stores use
//! without pulling in HTTP.
#![forbid(unsafe_code)]

pub mod auth;
pub mod clock;
pub mod http;
pub mod metrics;
pub mod routes;
pub mod stop;

/// A host's `main`: logging, a multi-threaded runtime, then `run` on it; the
/// exit status says how `run` ended.
pub fn host_main<F>(host: &str, run: impl FnOnce() -> F) -> std::process::ExitCode
where
    F: std::future::Future<Output = Result<(), String>>,
{
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start the runtime: {e}"));
    exit_code(host, runtime.and_then(|runtime| runtime.block_on(run())))
}

/// A host's exit status from what its `main` did; an error is printed first,
/// prefixed with the host's name.
fn exit_code(host: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{host}: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Binds a host's listener, saying where it listens.
pub async fn bind(
    addr: std::net::SocketAddr,
    host: &str,
) -> Result<tokio::net::TcpListener, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("bind {addr}: {e}"))?;
    tracing::info!(%addr, "{host} listening");
    Ok(listener)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
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
