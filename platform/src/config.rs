//! Configuration from environment variables, with loopback defaults so a
//! newcomer's machine needs none of them set. Each host's `Config` is built
//! from these helpers.

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
