//! The query host's configuration, from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use platform::config::{ConfigError, DEFAULT_POSTGRES_URL, parsed_or, var_or};
use read_model::SchemaName;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub read_model_url: String,
    pub read_model_schema: SchemaName,
    pub notifications_schema: SchemaName,
    pub token_secret: Option<String>,
    pub pool_size: usize,
    pub min_version_wait: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let (read_model_schema, notifications_schema) = read_model::schema::schemas_from_env()?;
        Ok(Self {
            listen_addr: parsed_or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8082)))?,
            read_model_url: var_or("READ_MODEL_URL", DEFAULT_POSTGRES_URL),
            read_model_schema,
            notifications_schema,
            token_secret: std::env::var("TOKEN_SECRET").ok().filter(|s| !s.is_empty()),
            pool_size: parsed_or("PG_POOL_SIZE", 16)?,
            min_version_wait: Duration::from_millis(parsed_or("MIN_VERSION_WAIT_MS", 3_000)?),
        })
    }
}
