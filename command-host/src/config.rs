//! Configuration from environment variables, with loopback defaults so a
//! newcomer's machine needs none of them set.

use std::net::SocketAddr;
use std::time::Duration;

use plumbing::config::{
    ConfigError, DEFAULT_POSTGRES_URL, dev_setup, parsed_or, refuse_placeholder, required_secret,
    var_or,
};

/// The command host's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub event_store_url: String,
    pub records_url: String,
    pub kafka_brokers: String,
    pub kafka_topic: String,
    pub token_secret: String,
    pub pool_size: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// After this an idempotency claim whose write never finished may be
    /// taken over by a retry; writes get a quarter of it.
    pub idempotency_stale_after: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: parsed_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            event_store_url: var_or("EVENT_STORE_URL", DEFAULT_POSTGRES_URL),
            records_url: {
                let url = var_or("RECORDS_URL", DEFAULT_POSTGRES_URL);
                refuse_placeholder("RECORDS_URL", &url, dev_setup())?;
                url
            },
            kafka_brokers: var_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            kafka_topic: var_or("KAFKA_TOPIC", "post-events"),
            token_secret: required_secret("TOKEN_SECRET", "it signs and verifies bearer tokens")?,
            pool_size: parsed_or("PG_POOL_SIZE", 16)?,
            max_body_bytes: parsed_or("MAX_BODY_BYTES", 64 * 1024)?,
            shutdown_grace: Duration::from_millis(parsed_or("SHUTDOWN_GRACE_MS", 10_000)?),
            idempotency_stale_after: Duration::from_millis(
                parsed_or("IDEMPOTENCY_STALE_MS", 30_000u64)?.max(400),
            ),
        })
    }
}
