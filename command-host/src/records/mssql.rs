//! Command records on SQL Server (tiberius): `idempotency_keys` and
//! `stream_registry`. Ids are stored as text and instants as epoch
//! milliseconds, so no driver type mapping can shift them.

use plumbing::pg::{version_from_sql, version_to_sql};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tiberius::{AuthMethod, Client, Config};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use domain::{PostId, Timestamp, UserId};

use super::{
    ClaimToken, CommandRecords, IdempotencyClaim, RecordsError, StoredResponse, StreamHead,
};

type Connection = Client<Compat<TcpStream>>;

const DUPLICATE_KEYS: [u32; 2] = [2_627, 2_601];

/// Keys compare as the bytes they are: the server's default collation is
/// usually case-insensitive, which would give `BOB` the stored answer of `bob`.
const MIGRATE: &str = "
IF OBJECT_ID('idempotency_keys') IS NULL
CREATE TABLE idempotency_keys (
    user_id           NVARCHAR(64)  COLLATE Latin1_General_100_BIN2 NOT NULL,
    idem_key          NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NOT NULL,
    fingerprint       VARBINARY(32) NOT NULL,
    completed         BIT           NOT NULL DEFAULT 0,
    response_status   INT           NULL,
    response_location NVARCHAR(400) NULL,
    response_body     NVARCHAR(MAX) NULL,
    claimed_at_ms     BIGINT        NOT NULL,
    owner             NVARCHAR(36)  COLLATE Latin1_General_100_BIN2 NULL,
    CONSTRAINT pk_idempotency_keys PRIMARY KEY (user_id, idem_key)
);
IF COL_LENGTH('idempotency_keys', 'owner') IS NULL
    ALTER TABLE idempotency_keys ADD owner NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NULL;
IF EXISTS (SELECT 1 FROM sys.columns WHERE object_id = OBJECT_ID('idempotency_keys')
           AND name = 'user_id' AND collation_name <> 'Latin1_General_100_BIN2')
BEGIN
    ALTER TABLE idempotency_keys DROP CONSTRAINT pk_idempotency_keys;
    ALTER TABLE idempotency_keys ALTER COLUMN user_id NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL;
    ALTER TABLE idempotency_keys ALTER COLUMN idem_key NVARCHAR(200) COLLATE Latin1_General_100_BIN2 NOT NULL;
    ALTER TABLE idempotency_keys ADD CONSTRAINT pk_idempotency_keys PRIMARY KEY (user_id, idem_key);
END;
IF OBJECT_ID('stream_registry') IS NULL
CREATE TABLE stream_registry (
    post_id       NVARCHAR(36) COLLATE Latin1_General_100_BIN2 NOT NULL CONSTRAINT pk_stream_registry PRIMARY KEY,
    author        NVARCHAR(64) COLLATE Latin1_General_100_BIN2 NOT NULL,
    version       BIGINT       NOT NULL,
    deleted       BIT          NOT NULL,
    updated_at_ms BIGINT       NOT NULL
);";

/// The server's clock in epoch milliseconds: claims are aged by it alone.
const NOW_MS: &str = "DATEDIFF_BIG(MILLISECOND, '19700101', SYSUTCDATETIME())";

#[derive(Clone)]
pub struct MssqlCommandRecords {
    config: Arc<Config>,
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for MssqlCommandRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MssqlCommandRecords")
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl std::fmt::Display) -> RecordsError {
    RecordsError::Unavailable(error.to_string())
}

fn corrupt(error: impl std::fmt::Display) -> RecordsError {
    RecordsError::Corrupt(error.to_string())
}

fn is_duplicate_key(error: &tiberius::error::Error) -> bool {
    matches!(error, tiberius::error::Error::Server(e) if DUPLICATE_KEYS.contains(&e.code()))
}

/// `mssql://user:password@host:port/database`, or an ADO.NET connection string
/// (`server=tcp:host,1433;user=sa;password=...;database=...;TrustServerCertificate=true`).
pub fn parse_config(url: &str) -> Result<Config, RecordsError> {
    let Some(rest) = url.strip_prefix("mssql://") else {
        return Config::from_ado_string(url)
            .map_err(|e| unavailable(format!("bad SQL Server connection string: {e}")));
    };
    let bad =
        || unavailable("bad SQL Server URL: expected mssql://user:password@host[:port]/database");
    let (credentials, location) = rest.rsplit_once('@').ok_or_else(bad)?;
    let (user, password) = credentials.split_once(':').ok_or_else(bad)?;
    let (address, database) = location.split_once('/').unwrap_or((location, "sourcegram"));
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
        None => (address, 1_433),
    };
    let mut config = Config::new();
    config.host(host);
    config.port(port);
    config.database(database.split('?').next().unwrap_or(database));
    config.authentication(AuthMethod::sql_server(user, password));
    // Local and container servers use self-signed certificates.
    config.trust_cert();
    Ok(config)
}

impl MssqlCommandRecords {
    pub fn new(config: Config, pool_size: usize) -> Self {
        Self {
            config: Arc::new(config),
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(Semaphore::new(pool_size.max(1))),
        }
    }

    pub async fn migrate(&self) -> Result<(), RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let result = conn.simple_query(MIGRATE).await.map(|_| ());
        self.finish(conn, permit, result)
    }

    async fn checkout(&self) -> Result<(Connection, OwnedSemaphorePermit), RecordsError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed");
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let tcp = TcpStream::connect(self.config.get_addr())
                    .await
                    .map_err(unavailable)?;
                tcp.set_nodelay(true).map_err(unavailable)?;
                Client::connect(Config::clone(&self.config), tcp.compat_write())
                    .await
                    .map_err(unavailable)?
            }
        };
        Ok((conn, permit))
    }

    /// Returns the connection to the pool unless the call failed in a way that
    /// may have broken it; server-side refusals keep the connection.
    fn finish<T>(
        &self,
        conn: Connection,
        _permit: OwnedSemaphorePermit,
        result: Result<T, tiberius::error::Error>,
    ) -> Result<T, RecordsError> {
        let healthy = match &result {
            Ok(_) => true,
            Err(error) => matches!(error, tiberius::error::Error::Server(_)),
        };
        if healthy && let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        result.map_err(unavailable)
    }
}

async fn claim(
    conn: &mut Connection,
    user: &str,
    key: &str,
    fingerprint: &[u8],
    stale_after_ms: i64,
) -> Result<Result<IdempotencyClaim, RecordsError>, tiberius::error::Error> {
    let token = ClaimToken::new();
    let owner = token.0.to_string();
    let inserted = conn
        .execute(
            format!(
                "INSERT INTO idempotency_keys (user_id, idem_key, fingerprint, claimed_at_ms, owner)
                 VALUES (@P1, @P2, @P3, {NOW_MS}, @P4)"
            ),
            &[&user, &key, &fingerprint, &owner.as_str()],
        )
        .await;
    match inserted {
        Ok(_) => return Ok(Ok(IdempotencyClaim::Claimed(token))),
        Err(error) if is_duplicate_key(&error) => {}
        Err(error) => return Err(error),
    }
    // Taking over a stale claim: the row lock lets exactly one updater match.
    let taken = conn
        .execute(
            format!(
                "UPDATE idempotency_keys SET claimed_at_ms = {NOW_MS}, owner = @P3
                 WHERE user_id = @P1 AND idem_key = @P2 AND completed = 0 AND fingerprint = @P4
                   AND claimed_at_ms < {NOW_MS} - @P5"
            ),
            &[&user, &key, &owner.as_str(), &fingerprint, &stale_after_ms],
        )
        .await?;
    if taken.total() == 1 {
        return Ok(Ok(IdempotencyClaim::Claimed(token)));
    }
    let row = conn
        .query(
            "SELECT fingerprint, completed, response_status, response_location, response_body
             FROM idempotency_keys WHERE user_id = @P1 AND idem_key = @P2",
            &[&user, &key],
        )
        .await?
        .into_row()
        .await?;
    let Some(row) = row else {
        return Ok(Ok(IdempotencyClaim::InProgress));
    };
    let classify = || -> Result<IdempotencyClaim, RecordsError> {
        let stored: &[u8] = row.try_get(0).map_err(corrupt)?.unwrap_or_default();
        if stored != fingerprint {
            return Ok(IdempotencyClaim::Mismatch);
        }
        if !row.try_get::<bool, _>(1).map_err(corrupt)?.unwrap_or(false) {
            return Ok(IdempotencyClaim::InProgress);
        }
        let status: i32 = row.try_get(2).map_err(corrupt)?.unwrap_or(500);
        Ok(IdempotencyClaim::Completed(StoredResponse {
            status: u16::try_from(status).map_err(corrupt)?,
            location: row
                .try_get::<&str, _>(3)
                .map_err(corrupt)?
                .map(str::to_owned),
            body: row
                .try_get::<&str, _>(4)
                .map_err(corrupt)?
                .unwrap_or_default()
                .to_owned(),
        }))
    };
    Ok(classify())
}

impl CommandRecords for MssqlCommandRecords {
    async fn claim_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        fingerprint: &[u8; 32],
        stale_after: Duration,
    ) -> Result<IdempotencyClaim, RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let stale_after_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        let result = claim(&mut conn, user.as_str(), key, fingerprint, stale_after_ms).await;
        self.finish(conn, permit, result)?
    }

    async fn complete_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
        response: &StoredResponse,
    ) -> Result<bool, RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let status = i32::from(response.status);
        let location = response.location.as_deref();
        let owner = claim.0.to_string();
        let result = conn
            .execute(
                "UPDATE idempotency_keys SET completed = 1, response_status = @P3, response_location = @P4, response_body = @P5
                 WHERE user_id = @P1 AND idem_key = @P2 AND owner = @P6",
                &[&user.as_str(), &key, &status, &location, &response.body.as_str(), &owner.as_str()],
            )
            .await
            .map(|done| done.total() == 1);
        self.finish(conn, permit, result)
    }

    async fn release_idempotency_key(
        &self,
        user: &UserId,
        key: &str,
        claim: ClaimToken,
    ) -> Result<(), RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let owner = claim.0.to_string();
        let result = conn
            .execute(
                "DELETE FROM idempotency_keys WHERE user_id = @P1 AND idem_key = @P2 AND completed = 0 AND owner = @P3",
                &[&user.as_str(), &key, &owner.as_str()],
            )
            .await
            .map(|_| ());
        self.finish(conn, permit, result)
    }

    async fn record_stream_head(&self, head: &StreamHead) -> Result<(), RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let post = head.post_id.to_string();
        let version = version_to_sql(head.version);
        let updated_at = head.updated_at.unix_millis();
        let result = conn
            .execute(
                "MERGE stream_registry WITH (HOLDLOCK) AS t
                 USING (SELECT @P1 AS post_id) AS s ON t.post_id = s.post_id
                 WHEN MATCHED AND t.version < @P3 THEN
                     UPDATE SET author = @P2, version = @P3, deleted = @P4, updated_at_ms = @P5
                 WHEN NOT MATCHED THEN
                     INSERT (post_id, author, version, deleted, updated_at_ms) VALUES (@P1, @P2, @P3, @P4, @P5);",
                &[&post.as_str(), &head.author.as_str(), &version, &head.deleted, &updated_at],
            )
            .await
            .map(|_| ());
        self.finish(conn, permit, result)
    }

    async fn stream_head(&self, post_id: PostId) -> Result<Option<StreamHead>, RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let post = post_id.to_string();
        let result = async {
            conn.query(
                "SELECT author, version, deleted, updated_at_ms FROM stream_registry WHERE post_id = @P1",
                &[&post.as_str()],
            )
            .await?
            .into_row()
            .await
        }
        .await;
        let Some(row) = self.finish(conn, permit, result)? else {
            return Ok(None);
        };
        let author: &str = row.try_get(0).map_err(corrupt)?.unwrap_or_default();
        let version: i64 = row.try_get(1).map_err(corrupt)?.unwrap_or(0);
        Ok(Some(StreamHead {
            post_id,
            author: UserId::parse(author).map_err(corrupt)?,
            version: version_from_sql(version).map_err(corrupt)?,
            deleted: row.try_get(2).map_err(corrupt)?.unwrap_or(false),
            updated_at: Timestamp::from_unix_millis(row.try_get(3).map_err(corrupt)?.unwrap_or(0)),
        }))
    }

    async fn ping(&self) -> Result<(), RecordsError> {
        let (mut conn, permit) = self.checkout().await?;
        let result = async {
            conn.simple_query("SELECT 1")
                .await?
                .into_results()
                .await
                .map(|_| ())
        }
        .await;
        self.finish(conn, permit, result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_url_forms_parse() {
        let config = parse_config("mssql://sa:pa:ss@db.local:1444/sourcegram").expect("url");
        assert_eq!(config.get_addr(), "db.local:1444");
        let ado = parse_config("server=tcp:localhost,1433;user=sa;password=x;database=sourcegram;TrustServerCertificate=true")
            .expect("ado");
        assert_eq!(ado.get_addr(), "localhost:1433");
        assert!(parse_config("mssql://nobody").is_err());
    }
}
