//! A small PostgreSQL connection pool shared by every PostgreSQL adapter.
//!
//! Connections are opened lazily up to a bound, each with its own cache of
//! prepared statements, and dropped when PostgreSQL closed them (after a server
//! restart the next checkout simply reconnects).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};

use domain::Version;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config, NoTls, Statement};

/// How long opening a connection may take, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A bounded pool of PostgreSQL connections. Cloning shares the pool.
#[derive(Clone)]
pub struct PgPool {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    max_size: usize,
    idle: Mutex<Vec<PgConn>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for PgPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgPool")
            .field("available", &self.inner.permits.available_permits())
            .finish()
    }
}

/// One connection and the statements prepared on it.
#[derive(Debug)]
pub struct PgConn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl PgConn {
    /// The statement for `sql`, prepared once per connection.
    pub async fn prepared(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Deref for PgConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// A checked-out connection; it returns to the pool when dropped, unless closed.
pub struct PooledConn {
    conn: Option<PgConn>,
    pool: Arc<Inner>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("conn", &self.conn)
            .finish()
    }
}

impl Deref for PooledConn {
    type Target = PgConn;
    fn deref(&self) -> &PgConn {
        // `conn` is only taken in `drop`.
        self.conn.as_ref().expect("connection present until drop")
    }
}

impl DerefMut for PooledConn {
    fn deref_mut(&mut self) -> &mut PgConn {
        self.conn.as_mut().expect("connection present until drop")
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && !conn.client.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(conn);
        }
    }
}

impl PgPool {
    /// A pool of at most `max_size` connections. Connects lazily; a connection
    /// attempt gives up after 5 s unless the configuration says otherwise.
    pub fn new(mut config: Config, max_size: usize) -> Self {
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Self {
            inner: Arc::new(Inner {
                config,
                max_size: max_size.max(1),
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(max_size.max(1))),
            }),
        }
    }

    /// Parses a `postgres://` URL (or key=value string) into a pool.
    pub fn from_url(url: &str, max_size: usize) -> Result<Self, tokio_postgres::Error> {
        Ok(Self::new(url.parse::<Config>()?, max_size))
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A new pool of the same size and database whose connections start with
    /// the server setting `name = value` (after any options already given).
    pub fn with_setting(&self, name: &str, value: &str) -> Self {
        let mut config = self.inner.config.clone();
        let setting = format!("-c {name}={value}");
        let options = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {setting}"),
            _ => setting,
        };
        config.options(options);
        Self::new(config, self.inner.max_size)
    }

    /// Waits for a free slot, then hands out an idle connection or opens one.
    pub async fn get(&self) -> Result<PooledConn, tokio_postgres::Error> {
        // The semaphore is never closed, so acquiring can only wait, not fail.
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .expect("pool semaphore is never closed");
        let idle = self.inner.idle.lock().ok().and_then(|mut idle| {
            loop {
                match idle.pop() {
                    Some(conn) if conn.client.is_closed() => continue,
                    other => break other,
                }
            }
        });
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        Ok(PooledConn {
            conn: Some(conn),
            pool: Arc::clone(&self.inner),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<PgConn, tokio_postgres::Error> {
        Ok(PgConn {
            client: self.dedicated().await?,
            statements: HashMap::new(),
        })
    }

    /// A connection to the pool's database outside the pool and its bound,
    /// closed when dropped: for a session-level lock held for long, which must
    /// neither take a slot from the pool nor go back into it.
    pub async fn dedicated(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.inner.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres connection closed");
            }
        });
        Ok(client)
    }
}

/// `pool` with every statement cut off by the server after `timeout`: the
/// server rolls it back, so a caller that gave up on it knows it did nothing.
pub fn with_statement_timeout(pool: &PgPool, timeout: std::time::Duration) -> PgPool {
    pool.with_setting("statement_timeout", &timeout.as_millis().max(1).to_string())
}

/// `pool` for statements that all find their rows by key or in an index's
/// order, as every adapter's do: its connections run with sequential scans
/// off (docs/performance.md#keyed-plans).
pub fn keyed(pool: &PgPool) -> PgPool {
    pool.with_setting("enable_seqscan", "off")
}

#[cfg(test)]
mod tests {
    use super::PgPool;

    #[test]
    fn a_setting_is_added_after_the_options_already_given() {
        let pool = PgPool::from_url(
            "postgres://u:p@127.0.0.1:5432/db?options=-c%20search_path%3Dmine",
            3,
        )
        .expect("url");
        let keyed = pool.with_setting("enable_seqscan", "off");
        assert_eq!(
            keyed.config().get_options(),
            Some("-c search_path=mine -c enable_seqscan=off")
        );
        assert_eq!(pool.config().get_options(), Some("-c search_path=mine"));
        let plain = PgPool::from_url("postgres://u:p@127.0.0.1:5432/db", 3).expect("url");
        assert_eq!(
            plain
                .with_setting("enable_seqscan", "off")
                .config()
                .get_options(),
            Some("-c enable_seqscan=off")
        );
    }
}

/// A stored version that cannot be one: negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored version {0} is negative")]
pub struct NegativeVersion(pub i64);

/// A stream version as SQL stores it (`bigint`). No stream comes near
/// `i64::MAX` events; saturating keeps the conversion total.
pub fn version_to_sql(version: Version) -> i64 {
    i64::try_from(version.get()).unwrap_or(i64::MAX)
}

/// A stored `bigint` back as a stream version.
pub fn version_from_sql(value: i64) -> Result<Version, NegativeVersion> {
    u64::try_from(value)
        .map(Version::new)
        .map_err(|_| NegativeVersion(value))
}

#[cfg(test)]
mod version_tests {
    use domain::Version;

    use super::{NegativeVersion, version_from_sql, version_to_sql};

    #[test]
    fn versions_round_trip_through_sql() {
        for v in [0, 1, 42, i64::MAX.unsigned_abs()] {
            let version = Version::new(v);
            assert_eq!(version_from_sql(version_to_sql(version)), Ok(version));
        }
        assert_eq!(version_to_sql(Version::new(u64::MAX)), i64::MAX);
        assert_eq!(version_from_sql(-1), Err(NegativeVersion(-1)));
    }
}
