//! The read model's tables (see docs/read-model.md), created in a named schema so
//! a replay can build a second copy beside the live one.

/// Creates the read-model tables in `schema` if they do not exist yet.
pub async fn create_read_model(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&read_model_ddl(schema)).await
}

/// Creates the notification projection's tables in `schema` if they do not exist yet.
pub async fn create_notifications(
    client: &tokio_postgres::Client,
    schema: &str,
) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(&notifications_ddl(schema)).await
}

/// Schema names are configuration or generated, never user input; still, only
/// plain identifiers are accepted so they can be spliced into DDL safely.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

pub fn read_model_ddl(schema: &str) -> String {
    assert!(
        is_plain_identifier(schema),
        "schema name {schema:?} is not a plain identifier"
    );
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

pub fn notifications_ddl(schema: &str) -> String {
    assert!(
        is_plain_identifier(schema),
        "schema name {schema:?} is not a plain identifier"
    );
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
