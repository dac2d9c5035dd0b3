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

/// The secrets docker-compose.yml falls back to on a developer's machine. Known
/// to everyone who read the file, so a host refuses them unless told it runs in
/// a development setup ([`DEV_SETUP`] = `1`).
pub const PLACEHOLDER_SECRETS: &[&str] = &[
    "local-only-token-secret-change-me",
    "local-only-admin-token-change-me",
    "Sourcegram!Passw0rd",
];

/// The variable that tells a host it runs in a development setup, where the
/// placeholder secrets are allowed.
pub const DEV_SETUP: &str = "SOURCEGRAM_DEV";

/// Refuses `value` of the variable `name` when it holds one of the placeholder
/// secrets, unless `dev_setup`.
pub fn refuse_placeholder(
    name: &'static str,
    value: &str,
    dev_setup: bool,
) -> Result<(), ConfigError> {
    match PLACEHOLDER_SECRETS.iter().find(|p| value.contains(*p)) {
        Some(placeholder) if !dev_setup => Err(ConfigError {
            name,
            reason: format!(
                "holds the placeholder secret {placeholder:?} that docker-compose.yml publishes; \
                 set a secret of your own, or {DEV_SETUP}=1 on a development machine"
            ),
        }),
        _ => Ok(()),
    }
}

/// Whether [`DEV_SETUP`] is `1`.
pub fn dev_setup() -> bool {
    std::env::var(DEV_SETUP).is_ok_and(|v| v == "1")
}

/// The secret in variable `name` (unset or empty: `None`), refused when it is a
/// placeholder outside a development setup.
pub fn secret(name: &'static str) -> Result<Option<String>, ConfigError> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => {
            refuse_placeholder(name, &value, dev_setup())?;
            Ok(Some(value))
        }
        _ => Ok(None),
    }
}

/// Like [`required`], for a secret: refused when it is a placeholder outside a
/// development setup.
pub fn required_secret(name: &'static str, why: &str) -> Result<String, ConfigError> {
    let value = required(name, why)?;
    refuse_placeholder(name, &value, dev_setup())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::{PLACEHOLDER_SECRETS, refuse_placeholder};

    #[test]
    fn placeholder_secrets_are_refused_outside_a_development_setup() {
        for placeholder in PLACEHOLDER_SECRETS {
            let error = refuse_placeholder("TOKEN_SECRET", placeholder, false)
                .expect_err("a placeholder outside a development setup");
            assert!(error.to_string().contains("SOURCEGRAM_DEV=1"), "{error}");
            assert!(refuse_placeholder("TOKEN_SECRET", placeholder, true).is_ok());
        }
        // Inside a connection string too.
        let url = "server=tcp:mssql,1433;user=sa;password=Sourcegram!Passw0rd;database=sourcegram";
        assert!(refuse_placeholder("RECORDS_URL", url, false).is_err());
        assert!(refuse_placeholder("TOKEN_SECRET", "9f2c1e0b7a3d", false).is_ok());
    }

    /// docker-compose.yml publishes the hosts on loopback only: with its
    /// placeholder secrets, a host reachable from the network is open to all.
    #[test]
    fn compose_publishes_every_port_on_loopback_only() {
        let compose = include_str!("../../docker-compose.yml");
        let published: Vec<&str> = compose
            .lines()
            .filter(|line| line.trim_start().starts_with("ports:"))
            .collect();
        assert!(!published.is_empty());
        for line in published {
            let ports = line.trim_start().trim_start_matches("ports:").trim();
            let ports = ports.trim_start_matches('[').trim_end_matches(']');
            for port in ports.split(',') {
                assert!(
                    port.trim().trim_matches('"').starts_with("127.0.0.1:"),
                    "published beyond loopback: {line}"
                );
            }
        }
    }
}
