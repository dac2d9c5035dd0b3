//! `command-host`: serves the write side, or mints a bearer token for local use.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use command_host::config::Config;
use command_host::records::AnyCommandRecords;
use command_host::relay::RelayConfig;
use command_host::{CommandHostDeps, WriteLimits};
use domain::{Timestamp, UserId};
use event_bus::KafkaPublisher;
use event_store::AnyEventStore;
use platform::auth::TokenKey;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use platform::{clock, shutdown_signal};
use plumbing::config;

const USAGE: &str = "usage:
  command-host                                  serve (configuration from the environment)
  command-host mint-token <user> [--ttl-seconds N] [--count N]
                                                print a bearer token for <user>, signed with TOKEN_SECRET;
                                                with --count, one each for <user>1 .. <user>N
  command-host repair-registry                  rebuild the stream registry (RECORDS_URL) from the
                                                event store (EVENT_STORE_URL); safe while hosts serve";

fn main() -> ExitCode {
    platform::host_main("command-host", || async {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match args.first().map(String::as_str) {
            None | Some("serve") => serve().await,
            Some("mint-token") => mint_token(&args[1..]),
            Some("repair-registry") => repair_registry().await,
            Some("-h" | "--help" | "help") => {
                println!("{USAGE}");
                Ok(())
            }
            Some(other) => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
        }
    })
}

async fn serve() -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let limits = WriteLimits::for_stale_window(config.idempotency_stale_after);
    let timeout = Some(limits.write_deadline);
    let store = AnyEventStore::connect_bounded(&config.event_store_url, config.pool_size, timeout)
        .await
        .map_err(|e| format!("connect event store: {e}"))?;
    let records =
        AnyCommandRecords::connect_bounded(&config.records_url, config.pool_size, timeout)
            .await
            .map_err(|e| format!("connect command records: {e}"))?;
    let publisher = KafkaPublisher::new(&config.kafka_brokers, &config.kafka_topic)
        .map_err(|e| e.to_string())?;
    let listener = platform::bind(config.listen_addr, "command host").await?;
    let deps = CommandHostDeps {
        store,
        records,
        publisher,
        token_key: TokenKey::new(config.token_secret.as_bytes()),
        server: ServerConfig {
            max_body_bytes: config.max_body_bytes,
            shutdown_grace: config.shutdown_grace,
            ..ServerConfig::default()
        },
        relay: RelayConfig::default(),
        metrics: Metrics::new(),
        limits,
    };
    command_host::run(listener, deps, shutdown_signal())
        .await
        .map_err(|e| format!("serve: {e}"))
}

async fn repair_registry() -> Result<(), String> {
    let pool_size = 4;
    let store = AnyEventStore::connect(
        &config::var_or("EVENT_STORE_URL", config::DEFAULT_POSTGRES_URL),
        pool_size,
    )
    .await
    .map_err(|e| format!("connect event store: {e}"))?;
    let records = AnyCommandRecords::connect(
        &config::var_or("RECORDS_URL", config::DEFAULT_POSTGRES_URL),
        pool_size,
    )
    .await
    .map_err(|e| format!("connect command records: {e}"))?;
    let report = command_host::registry::repair(&store, &records).await?;
    println!(
        "stream registry repaired: {} streams, {} events read",
        report.streams, report.events
    );
    Ok(())
}

fn mint_token(args: &[String]) -> Result<(), String> {
    let (user, rest) = args.split_first().ok_or_else(|| USAGE.to_owned())?;
    let (mut ttl_seconds, mut count) = (24 * 3_600, None);
    for pair in rest.chunks(2) {
        let number = |value: &String| {
            value
                .parse::<u64>()
                .map_err(|_| format!("bad {} {value:?}", pair[0]))
        };
        match pair {
            [flag, value] if flag == "--ttl-seconds" => ttl_seconds = number(value)?,
            [flag, value] if flag == "--count" => count = Some(number(value)?),
            _ => return Err(USAGE.to_owned()),
        }
    }
    let users: Vec<UserId> = match count {
        None => vec![UserId::parse(user).map_err(|e| e.to_string())?],
        Some(n) => (1..=n)
            .map(|i| UserId::parse(&format!("{user}{i}")).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?,
    };
    let secret =
        config::required_secret("TOKEN_SECRET", "it signs the token").map_err(|e| e.to_string())?;
    let ttl = Duration::from_secs(ttl_seconds);
    let expires_at = Timestamp::from_unix_millis(
        clock::now().unix_millis() + i64::try_from(ttl.as_millis()).map_err(|_| "ttl too large")?,
    );
    let key = TokenKey::new(secret.as_bytes());
    let mut out = String::new();
    for user in &users {
        out.push_str(&key.mint(user, expires_at));
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
