//! Configuration from environment variables, with loopback defaults so a
//! newcomer's machine needs none of them set.

use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://sourcegram:sourcegram@127.0.0.1:5432/sourcegram";

#[derive(Debug, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

/// The variable's value, or `default` when unset or empty.
pub fn var_or(name: &'static str, default: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => default.to_owned(),
    }
}

/// The variable's value; an error naming it when unset or empty.
pub fn required(name: &'static str, why: &str) -> Result<String, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(ConfigError {
            name,
            reason: format!("must be set ({why})"),
        }),
    }
}

/// Parses the variable with `FromStr`, or `default` when unset.
pub fn parsed_or<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value.parse().map_err(|e: T::Err| ConfigError {
            name,
            reason: format!("{value:?} is not valid: {e}"),
        }),
        _ => Ok(default),
    }
}

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
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: parsed_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8081)))?,
            event_store_url: var_or("EVENT_STORE_URL", DEFAULT_POSTGRES_URL),
            records_url: var_or("RECORDS_URL", DEFAULT_POSTGRES_URL),
            kafka_brokers: var_or("KAFKA_BROKERS", "127.0.0.1:9092"),
            kafka_topic: var_or("KAFKA_TOPIC", "post-events"),
            token_secret: required("TOKEN_SECRET", "it signs and verifies bearer tokens")?,
            pool_size: parsed_or("PG_POOL_SIZE", 16)?,
            max_body_bytes: parsed_or("MAX_BODY_BYTES", 64 * 1024)?,
            shutdown_grace: Duration::from_millis(parsed_or("SHUTDOWN_GRACE_MS", 10_000)?),
        })
    }
}
