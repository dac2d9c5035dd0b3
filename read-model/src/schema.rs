//! The read model's tables (see docs/read-model.md), created in a named schema so
//! a replay can build a second copy beside the live one, and the names of those
//! schemas.

use std::fmt;

use plumbing::config::{ConfigError, DEFAULT_POSTGRES_URL, parsed_or, var_or};
use tokio_postgres::types::Type;

/// The longest suffix a schema name is given for a copy of it ([`SchemaName::next`],
/// [`SchemaName::retired`]).
const LONGEST_SUFFIX: usize = "_retired".len();
/// PostgreSQL truncates identifiers longer than this, silently.
const POSTGRES_NAME_MAX: usize = 63;

/// The name of a schema the read model or the notifications live in: a plain
/// lowercase identifier, short enough that the names derived from it for a
/// replay stay distinct. PostgreSQL truncates identifiers at 63 bytes, so a
/// 63-byte live name would make its `_next` copy truncate to the live name
/// itself, and a replay would then drop the live model. Schema names are
/// spliced into SQL, which their validation makes safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a schema name: use 1 to {max} lowercase letters, digits and underscores, not starting with a digit",
    max = POSTGRES_NAME_MAX - LONGEST_SUFFIX
)]
pub struct InvalidSchemaName(pub String);

impl SchemaName {
    pub fn parse(name: &str) -> Result<Self, InvalidSchemaName> {
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let starts_well = name.bytes().next().is_some_and(|b| !b.is_ascii_digit());
        if plain && starts_well && name.len() <= POSTGRES_NAME_MAX - LONGEST_SUFFIX {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidSchemaName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where a replay builds the new read model.
    pub fn next(&self) -> Self {
        self.derived("_next")
    }

    /// Where a replay moves the old tables during the swap.
    pub fn retired(&self) -> Self {
        self.derived("_retired")
    }

    fn derived(&self, suffix: &str) -> Self {
        debug_assert!(suffix.len() <= LONGEST_SUFFIX);
        Self(format!("{}{suffix}", self.0))
    }
}

impl fmt::Display for SchemaName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SchemaName {
    type Err = InvalidSchemaName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Where the read model and the notifications live: the projection host
/// writes there and the query host reads there.
#[derive(Debug, Clone)]
pub struct Location {
    /// `READ_MODEL_URL`: the PostgreSQL database.
    pub url: String,
    /// `READ_MODEL_SCHEMA` (default `read_model`).
    pub schema: SchemaName,
    /// `NOTIFICATIONS_SCHEMA` (default `notifications`).
    pub notifications: SchemaName,
}

impl Location {
    pub fn from_env() -> Result<Self, ConfigError> {
        let plain = |name: &str| SchemaName::parse(name).expect("a plain name");
        Ok(Self {
            url: var_or("READ_MODEL_URL", DEFAULT_POSTGRES_URL),
            schema: parsed_or("READ_MODEL_SCHEMA", plain("read_model"))?,
            notifications: parsed_or("NOTIFICATIONS_SCHEMA", plain("notifications"))?,
        })
    }

    /// A pool of at most `size` connections to the read model's database.
    pub fn pool(&self, size: usize) -> Result<plumbing::pg::PgPool, String> {
        plumbing::pg::PgPool::from_url(&self.url, size).map_err(|e| format!("READ_MODEL_URL: {e}"))
    }
}

/// One table of the read model: its name and columns, in the order rows are
/// copied in and decoded.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Type)],
}

impl Table {
    /// `a, b, c`: the column list for SELECT and COPY.
    pub fn column_list(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
        names.join(", ")
    }

    pub fn types(&self) -> Vec<Type> {
        self.columns.iter().map(|(_, t)| t.clone()).collect()
    }

    /// The statement a replay writes this table's rows with.
    pub fn copy_in(&self, schema: &SchemaName) -> String {
        format!(
            "COPY {schema}.{} ({}) FROM STDIN BINARY",
            self.name,
            self.column_list()
        )
    }
}

pub const POSTS: Table = Table {
    name: "posts",
    columns: &[
        ("id", Type::UUID),
        ("author", Type::TEXT),
        ("message", Type::TEXT),
        ("likes", Type::INT4),
        ("comment_count", Type::INT4),
        ("created_at", Type::TIMESTAMPTZ),
        ("edited_at", Type::TIMESTAMPTZ),
        ("deleted_at", Type::TIMESTAMPTZ),
        ("version", Type::INT8),
    ],
};

pub const COMMENTS: Table = Table {
    name: "comments",
    columns: &[
        ("post_id", Type::UUID),
        ("id", Type::UUID),
        ("author", Type::TEXT),
        ("text", Type::TEXT),
        ("created_at", Type::TIMESTAMPTZ),
        ("edited_at", Type::TIMESTAMPTZ),
        ("removed", Type::BOOL),
    ],
};

pub const LIKES: Table = Table {
    name: "likes",
    columns: &[("post_id", Type::UUID), ("user_id", Type::TEXT)],
};

/// Every table of the read model: what a replay copies, analyzes and swaps.
pub const READ_MODEL_TABLES: [&Table; 3] = [&POSTS, &COMMENTS, &LIKES];

/// Creates the read-model tables in `schema` if they do not exist yet.
pub async fn create_read_model(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&read_model_ddl(schema)).await
}

/// The columns this build reads and writes that the tables in `schema` lack,
/// as `table.column`: tables an older build made. `CREATE TABLE IF NOT EXISTS`
/// leaves existing tables as they are, so a column added to the read model
/// reaches existing deployments only by a replay, which builds every table
/// afresh (docs/read-model.md).
pub async fn missing_columns(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let wanted: Vec<String> = READ_MODEL_TABLES
        .iter()
        .flat_map(|t| t.columns.iter().map(|(c, _)| format!("{}.{c}", t.name)))
        .collect();
    let rows = client
        .query(
            "SELECT w FROM unnest($1::text[]) WITH ORDINALITY AS wanted(w, n)
             WHERE NOT EXISTS (
                 SELECT 1 FROM information_schema.columns
                 WHERE table_schema = $2 AND table_name || '.' || column_name = w)
             ORDER BY n",
            &[&wanted, &schema.as_str()],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Creates the notification projection's tables in `schema` if they do not exist yet.
pub async fn create_notifications(
    client: &tokio_postgres::Client,
    schema: &SchemaName,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&notifications_ddl(schema)).await
}

pub fn read_model_ddl(schema: &SchemaName) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.posts (
    id            uuid PRIMARY KEY,
    author        text        NOT NULL,
    message       text        NOT NULL,
    likes         integer     NOT NULL DEFAULT 0,
    comment_count integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    edited_at     timestamptz,
    deleted_at    timestamptz,
    version       bigint      NOT NULL
);
CREATE INDEX IF NOT EXISTS posts_newest ON {schema}.posts (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS posts_by_author ON {schema}.posts (author, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS posts_by_likes ON {schema}.posts (likes, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS posts_with_comments ON {schema}.posts (created_at DESC, id DESC) WHERE deleted_at IS NULL AND comment_count > 0;
CREATE INDEX IF NOT EXISTS posts_without_comments ON {schema}.posts (created_at DESC, id DESC) WHERE deleted_at IS NULL AND comment_count = 0;
CREATE TABLE IF NOT EXISTS {schema}.comments (
    post_id    uuid        NOT NULL,
    id         uuid        NOT NULL,
    author     text        NOT NULL,
    text       text        NOT NULL,
    created_at timestamptz NOT NULL,
    edited_at  timestamptz,
    removed    boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (post_id, id)
);
CREATE INDEX IF NOT EXISTS comments_oldest ON {schema}.comments (post_id, created_at, id) WHERE NOT removed;
CREATE TABLE IF NOT EXISTS {schema}.likes (
    post_id uuid NOT NULL,
    user_id text NOT NULL,
    PRIMARY KEY (post_id, user_id)
);
"#
    )
}

pub fn notifications_ddl(schema: &SchemaName) -> String {
    format!(
        r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.notifications (
    event_id   uuid PRIMARY KEY,
    recipient  text        NOT NULL,
    kind       text        NOT NULL,
    actor      text        NOT NULL,
    post_id    uuid        NOT NULL,
    comment_id uuid,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_recipient ON {schema}.notifications (recipient, created_at DESC, event_id DESC);
CREATE TABLE IF NOT EXISTS {schema}.progress (
    stream_id uuid PRIMARY KEY,
    version   bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.post_authors (
    post_id uuid PRIMARY KEY,
    author  text NOT NULL
);
"#
    )
}

/// Statistics for every table of `schema`, as long-lived tables have.
pub fn analyze_sql(schema: &SchemaName) -> String {
    READ_MODEL_TABLES
        .iter()
        .map(|t| format!("ANALYZE {schema}.{};", t.name))
        .collect()
}

/// Moves the live tables aside into `retired` and the rebuilt ones from `next`
/// into `live`: run in one transaction, readers see one or the other.
pub fn swap_sql(live: &SchemaName, next: &SchemaName, retired: &SchemaName) -> String {
    let mut sql = format!("CREATE SCHEMA {retired};");
    for table in READ_MODEL_TABLES {
        sql += &format!("ALTER TABLE {live}.{} SET SCHEMA {retired};", table.name);
    }
    for table in READ_MODEL_TABLES {
        sql += &format!("ALTER TABLE {next}.{} SET SCHEMA {live};", table.name);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::{POSTGRES_NAME_MAX, SchemaName};

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["read_model", "a", "rm_2026", "_x"] {
            assert!(SchemaName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Read", "1st", "a-b", "a;drop", "a b", "ä"] {
            assert!(SchemaName::parse(bad).is_err(), "{bad}");
        }
    }

    /// A name whose replay copies PostgreSQL would truncate back onto the live
    /// name is refused; the longest accepted one keeps them distinct.
    #[test]
    fn a_schema_name_leaves_room_for_its_replay_copies() {
        assert!(SchemaName::parse(&"a".repeat(63)).is_err());
        let longest = (1..=63)
            .rev()
            .find_map(|n| SchemaName::parse(&"a".repeat(n)).ok())
            .expect("some length is accepted");
        for derived in [longest.next(), longest.retired()] {
            assert!(derived.as_str().len() <= POSTGRES_NAME_MAX, "{derived}");
            assert_ne!(derived, longest);
        }
    }
}
