//! The query host's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use plumbing::config::{ConfigError, parsed_or, secret};
use read_model::schema::Location;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub read_model: Location,
    pub token_secret: Option<String>,
    pub pool_size: usize,
    pub min_version_wait: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            listen_addr: parsed_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8082)))?,
            read_model: Location::from_env()?,
            token_secret: secret("TOKEN_SECRET")?,
            pool_size: parsed_or("PG_POOL_SIZE", 16)?,
            min_version_wait: Duration::from_millis(parsed_or("MIN_VERSION_WAIT_MS", 3_000)?),
        })
    }
}
