//! The projection host's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use plumbing::config::{ConfigError, DEFAULT_POSTGRES_URL, parsed_or, secret, var_or};
use read_model::schema::Location;

use crate::consumer::ConsumerConfig;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub read_model: Location,
    pub event_store_url: String,
    /// The read model's consumer; the notifications' is the same in its own group.
    pub consumer: ConsumerConfig,
    pub notifications_group: String,
    pub admin_token: Option<String>,
    pub pool_size: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: parsed_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8083)))?,
            read_model: Location::from_env()?,
            event_store_url: var_or("EVENT_STORE_URL", DEFAULT_POSTGRES_URL),
            consumer: ConsumerConfig {
                brokers: var_or("KAFKA_BROKERS", "127.0.0.1:9092"),
                topic: var_or("KAFKA_TOPIC", "post-events"),
                group: var_or("READ_MODEL_GROUP", "post-read-model"),
                max_batch: parsed_or("PROJECTION_MAX_BATCH", 500)?,
                max_wait: Duration::from_millis(parsed_or("PROJECTION_MAX_WAIT_MS", 0)?),
                fetch_wait: Duration::from_millis(parsed_or("PROJECTION_FETCH_WAIT_MS", 500)?),
                instance_id: non_empty("PROJECTION_INSTANCE_ID"),
                debug: non_empty("KAFKA_DEBUG"),
            },
            notifications_group: var_or("NOTIFICATIONS_GROUP", "post-notifications"),
            admin_token: secret("ADMIN_TOKEN")?,
            pool_size: parsed_or("PG_POOL_SIZE", 8)?,
        })
    }
}

/// The variable's value, unless it is unset or empty.
fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
