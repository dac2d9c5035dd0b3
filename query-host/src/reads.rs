//! The SQL the query host runs: keyset-paginated selects over the read model,
//! formatted once per schema and prepared once per connection.

use std::time::SystemTime;

use domain::{PostId, Timestamp};
use plumbing::pg::PgPool;
use read_model::SchemaName;
use read_model::rows::{CommentRow, PostRow};
use read_model::schema::{COMMENTS, POSTS, READ_MODEL_TABLES};
use serde::Serialize;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::queries::PostFilter;

/// A post as the API shows it: its row, without `deleted_at`.
pub type PostView = PostRow;

/// A comment as the API shows it: its row, without `post_id` and `removed`.
pub type CommentView = CommentRow;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NotificationView {
    pub id: Uuid,
    pub kind: String,
    pub actor: String,
    pub post_id: Uuid,
    pub comment_id: Option<Uuid>,
    pub created_at: Timestamp,
}

/// A post as stored, including whether it was deleted.
#[derive(Debug, Clone)]
pub enum PostLookup {
    Missing,
    Deleted,
    Live(PostView),
}

/// The most comments `GET /posts/{id}` shows; the rest are a page away
/// (`GET /posts/{id}/comments`), so a post with many comments answers as fast
/// as any other.
pub const COMMENTS_ON_A_POST: i64 = 100;

/// Which filters a list of posts has, and whether it starts after a cursor:
/// each combination has a statement of its own, with only its conditions, so
/// that every plan can use the index made for it. (One statement with
/// `$n IS NULL OR ...` for every filter gets, once PostgreSQL caches a generic
/// plan, the same plan for every combination: a walk of all posts from the
/// newest, filtering.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListShape {
    author: bool,
    min_likes: bool,
    has_comments: Option<bool>,
    after: bool,
}

impl ListShape {
    fn of(filter: &PostFilter, cursor: Option<Cursor>) -> Self {
        Self {
            author: filter.author.is_some(),
            min_likes: filter.min_likes.is_some(),
            has_comments: filter.has_comments,
            after: cursor.is_some(),
        }
    }

    fn index(self) -> usize {
        let comments = match self.has_comments {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        ((usize::from(self.author) * 2 + usize::from(self.min_likes)) * 3 + comments) * 2
            + usize::from(self.after)
    }

    fn all() -> impl Iterator<Item = Self> {
        [false, true].into_iter().flat_map(|author| {
            [false, true].into_iter().flat_map(move |min_likes| {
                [None, Some(true), Some(false)]
                    .into_iter()
                    .flat_map(move |has_comments| {
                        [false, true].into_iter().map(move |after| Self {
                            author,
                            min_likes,
                            has_comments,
                            after,
                        })
                    })
            })
        })
    }

    /// Newest first, keyset on (created_at, id). Parameters in this order:
    /// author, min_likes, the cursor's time and id, the limit.
    fn sql(self, schema: &SchemaName) -> String {
        let mut conditions = vec!["deleted_at IS NULL".to_owned()];
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if self.author {
            conditions.push(format!("author = {}", param()));
        }
        if self.min_likes {
            conditions.push(format!("likes >= {}::int", param()));
        }
        match self.has_comments {
            Some(true) => conditions.push("comment_count > 0".to_owned()),
            Some(false) => conditions.push("comment_count = 0".to_owned()),
            None => {}
        }
        if self.after {
            let (at, id) = (param(), param());
            conditions.push(format!(
                "(created_at, id) < ({at}::timestamptz, {id}::uuid)"
            ));
        }
        format!(
            "SELECT {} FROM {schema}.posts WHERE {} ORDER BY created_at DESC, id DESC LIMIT {}",
            POSTS.column_list(),
            conditions.join(" AND "),
            param()
        )
    }
}

#[derive(Debug)]
struct Sql {
    /// By [`ListShape::index`].
    list_posts: Vec<String>,
    get_post: String,
    get_post_with_comments: String,
    post_comments: String,
    list_comments: String,
    notifications: String,
}

/// Read access to the read model and the notifications.
#[derive(Debug)]
pub struct Reads {
    pool: PgPool,
    sql: Sql,
    tables: Vec<String>,
}

fn ts(t: SystemTime) -> Timestamp {
    t.into()
}

/// A post row as the API shows it, or how it is missing.
fn post_lookup(row: Option<&Row>) -> Result<PostLookup, tokio_postgres::Error> {
    let Some(row) = row else {
        return Ok(PostLookup::Missing);
    };
    let post = PostRow::from_row(row)?;
    if post.deleted_at.is_some() {
        return Ok(PostLookup::Deleted);
    }
    Ok(PostLookup::Live(post))
}

fn cursor_params(cursor: Option<Cursor>) -> (Option<SystemTime>, Option<Uuid>) {
    (cursor.map(|c| SystemTime::from(c.at)), cursor.map(|c| c.id))
}

impl Reads {
    pub fn new(pool: PgPool, read_model: &SchemaName, notifications: &SchemaName) -> Self {
        let (r, n) = (read_model, notifications);
        let (posts, comments) = (POSTS.column_list(), COMMENTS.column_list());
        let mut tables: Vec<String> = READ_MODEL_TABLES
            .iter()
            .map(|t| format!("{r}.{}", t.name))
            .collect();
        tables.push(format!("{n}.notifications"));
        Self {
            pool,
            tables,
            sql: Sql {
                // `all` yields the shapes in the order of their index.
                list_posts: ListShape::all()
                    .enumerate()
                    .map(|(i, shape)| {
                        debug_assert_eq!(shape.index(), i);
                        shape.sql(r)
                    })
                    .collect(),
                get_post: format!("SELECT {posts} FROM {r}.posts WHERE id = $1"),
                // The post and its first live comments (one more than shown,
                // to tell whether there are more) in one round trip: the
                // comments come as one array per column, oldest first.
                get_post_with_comments: format!(
                    "SELECT {posts}, c.ids, c.authors, c.texts, c.created, c.edited
                     FROM {r}.posts p
                     LEFT JOIN LATERAL (
                         SELECT array_agg(id ORDER BY created_at, id) AS ids,
                                array_agg(author ORDER BY created_at, id) AS authors,
                                array_agg(text ORDER BY created_at, id) AS texts,
                                array_agg(created_at ORDER BY created_at, id) AS created,
                                array_agg(edited_at ORDER BY created_at, id) AS edited
                         FROM (
                             SELECT id, author, text, created_at, edited_at FROM {r}.comments
                             WHERE post_id = p.id AND NOT removed
                             ORDER BY created_at, id LIMIT {first}
                         ) first_comments
                     ) c ON p.deleted_at IS NULL
                     WHERE p.id = $1",
                    first = COMMENTS_ON_A_POST + 1
                ),
                post_comments: format!(
                    "SELECT {comments} FROM {r}.comments
                     WHERE post_id = $1 AND NOT removed ORDER BY created_at, id LIMIT {first}",
                    first = COMMENTS_ON_A_POST + 1
                ),
                list_comments: format!(
                    "SELECT {comments} FROM {r}.comments
                     WHERE post_id = $1 AND NOT removed
                       AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid))
                     ORDER BY created_at, id LIMIT $4"
                ),
                notifications: format!(
                    "SELECT event_id, kind, actor, post_id, comment_id, created_at FROM {n}.notifications
                     WHERE recipient = $1
                       AND ($2::timestamptz IS NULL OR (created_at, event_id) < ($2, $3::uuid))
                     ORDER BY created_at DESC, event_id DESC LIMIT $4"
                ),
            },
        }
    }

    /// The tables this host reads that do not exist yet: the projection host
    /// creates them, the query host never writes.
    pub async fn missing_tables(&self) -> Result<Vec<String>, tokio_postgres::Error> {
        let conn = self.pool.get().await?;
        let rows = conn
            .query(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
                &[&self.tables],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Up to `limit + 1` posts, so the caller can tell whether a next page exists.
    pub async fn list_posts(
        &self,
        filter: &PostFilter,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<PostView>, tokio_postgres::Error> {
        let shape = ListShape::of(filter, cursor);
        let sql = &self.sql.list_posts[shape.index()];
        let author = filter.author.as_ref().map(|a| a.as_str());
        let (at, id) = cursor_params(cursor);
        let limit = limit + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(5);
        if let Some(author) = &author {
            params.push(author);
        }
        if let Some(min_likes) = &filter.min_likes {
            params.push(min_likes);
        }
        if let (Some(at), Some(id)) = (&at, &id) {
            params.push(at);
            params.push(id);
        }
        params.push(&limit);
        let mut conn = self.pool.get().await?;
        let rows = if shape.min_likes {
            // Planned for its threshold each time (an unnamed statement): how
            // many posts have that many likes decides between walking the
            // newest (most qualify) and the likes index (few do), which a
            // cached generic plan cannot.
            conn.client().query(sql.as_str(), &params).await?
        } else {
            let statement = conn.prepared(sql).await?;
            conn.query(&statement, &params).await?
        };
        rows.iter().map(PostRow::from_row).collect()
    }

    /// Runs the prepared statement `sql` on a pooled connection.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let mut conn = self.pool.get().await?;
        let statement = conn.prepared(sql).await?;
        conn.query(&statement, params).await
    }

    pub async fn get_post(&self, id: PostId) -> Result<PostLookup, tokio_postgres::Error> {
        let rows = self.query(&self.sql.get_post, &[&id.as_uuid()]).await?;
        post_lookup(rows.first())
    }

    /// The post and, if it is live, its comments oldest first: one statement.
    pub async fn get_post_with_comments(
        &self,
        id: PostId,
    ) -> Result<(PostLookup, Vec<CommentView>), tokio_postgres::Error> {
        let sql = &self.sql.get_post_with_comments;
        // One row at most: the post is found by its key.
        let row = self.query(sql, &[&id.as_uuid()]).await?.into_iter().next();
        let lookup = post_lookup(row.as_ref())?;
        let (Some(row), PostLookup::Live(_)) = (row, &lookup) else {
            return Ok((lookup, Vec::new()));
        };
        let ids: Vec<Uuid> = row.try_get::<_, Option<_>>("ids")?.unwrap_or_default();
        let authors: Vec<String> = row.try_get::<_, Option<_>>("authors")?.unwrap_or_default();
        let texts: Vec<String> = row.try_get::<_, Option<_>>("texts")?.unwrap_or_default();
        let created: Vec<SystemTime> = row.try_get::<_, Option<_>>("created")?.unwrap_or_default();
        let edited: Vec<Option<SystemTime>> =
            row.try_get::<_, Option<_>>("edited")?.unwrap_or_default();
        let post_id = id.as_uuid();
        let comments = ids
            .into_iter()
            .zip(authors)
            .zip(texts)
            .zip(created.into_iter().zip(edited))
            .map(
                |(((id, author), text), (created_at, edited_at))| CommentView {
                    post_id,
                    id,
                    author,
                    text,
                    created_at: ts(created_at),
                    edited_at: edited_at.map(ts),
                    removed: false,
                },
            )
            .collect();
        Ok((lookup, comments))
    }

    pub async fn post_comments(
        &self,
        id: PostId,
    ) -> Result<Vec<CommentView>, tokio_postgres::Error> {
        let rows = self
            .query(&self.sql.post_comments, &[&id.as_uuid()])
            .await?;
        rows.iter().map(CommentRow::from_row).collect()
    }

    /// Up to `limit + 1` comments, oldest first.
    pub async fn list_comments(
        &self,
        id: PostId,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<CommentView>, tokio_postgres::Error> {
        let (at, after) = cursor_params(cursor);
        let params: [&(dyn ToSql + Sync); 4] = [&id.as_uuid(), &at, &after, &(limit + 1)];
        let rows = self.query(&self.sql.list_comments, &params).await?;
        rows.iter().map(CommentRow::from_row).collect()
    }

    /// Up to `limit + 1` notifications, newest first.
    pub async fn notifications(
        &self,
        recipient: &str,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<Vec<NotificationView>, tokio_postgres::Error> {
        let (at, id) = cursor_params(cursor);
        let params: [&(dyn ToSql + Sync); 4] = [&recipient, &at, &id, &(limit + 1)];
        let rows = self.query(&self.sql.notifications, &params).await?;
        Ok(rows
            .iter()
            .map(|row| NotificationView {
                id: row.get(0),
                kind: row.get(1),
                actor: row.get(2),
                post_id: row.get(3),
                comment_id: row.get(4),
                created_at: ts(row.get(5)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Rows every scan in an `EXPLAIN (ANALYZE, FORMAT JSON)` plan read: those
    /// it returned and those its filter threw away.
    fn rows_read(plan: &Value) -> u64 {
        let own = if plan["Node Type"]
            .as_str()
            .is_some_and(|t| t.contains("Scan"))
        {
            plan["Actual Rows"].as_u64().unwrap_or(0)
                + plan["Rows Removed by Filter"].as_u64().unwrap_or(0)
        } else {
            0
        };
        own + plan["Plans"]
            .as_array()
            .map_or(0, |plans| plans.iter().map(rows_read).sum())
    }

    /// 20,000 posts, of which the 20 oldest are by a rare author and have
    /// likes and comments: every combination of filters, on the first page and
    /// deep behind a cursor, reads about a page of rows, never every post.
    #[tokio::test]
    async fn every_list_of_posts_reads_about_a_page_whatever_its_filters() {
        let (pool, _) = testkit::fresh_pg_schema("plans").await;
        let schema = SchemaName::parse(&testkit::unique_name("rm")).expect("schema name");
        let conn = pool.get().await.expect("conn");
        read_model::schema::create_read_model(&conn, &schema)
            .await
            .expect("tables");
        conn.batch_execute(&format!(
            "INSERT INTO {schema}.posts (id, author, message, likes, comment_count, created_at, version)
             SELECT gen_random_uuid(),
                    CASE WHEN i <= 20 THEN 'rare' ELSE 'bulk' END, 'm',
                    CASE WHEN i <= 20 THEN 1000 ELSE 0 END,
                    CASE WHEN i <= 20 THEN 3 ELSE 0 END,
                    timestamptz '2026-01-01' + i * interval '1 second', 1
             FROM generate_series(1, 20000) AS i;
             ANALYZE {schema}.posts;"
        ))
        .await
        .expect("seed");
        let middle_at = "timestamptz '2026-01-01' + 10000 * interval '1 second'";
        let middle_id: Uuid = conn
            .query_one(
                &format!("SELECT id FROM {schema}.posts WHERE created_at = {middle_at}"),
                &[],
            )
            .await
            .expect("middle")
            .get(0);
        assert_eq!(ListShape::all().count(), 24, "every combination");
        let mut worst = Vec::new();
        for shape in ListShape::all() {
            let mut values: Vec<String> = Vec::new();
            if shape.author {
                values.push("'bulk'".to_owned());
            }
            if shape.min_likes {
                values.push("500".to_owned());
            }
            if shape.after {
                values.push(middle_at.to_owned());
                values.push(format!("'{middle_id}'"));
            }
            values.push("21".to_owned());
            // As the host runs it: prepared once, executed again and again
            // (PostgreSQL settles on a generic plan after five runs).
            let name = format!("shape_{}", shape.index());
            conn.batch_execute(&format!("PREPARE {name} AS {}", shape.sql(&schema)))
                .await
                .expect("prepare");
            let mut read = 0;
            for _ in 0..7 {
                let explained = conn
                    .query_one(
                        &format!(
                            "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}({})",
                            values.join(", ")
                        ),
                        &[],
                    )
                    .await
                    .expect("explain");
                let plan: Value = explained.get(0);
                read = rows_read(&plan[0]["Plan"]);
            }
            if read > 200 {
                worst.push(format!("{shape:?} read {read} rows"));
            }
        }
        drop(conn);
        testkit::pg_client()
            .await
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .expect("drop");
        assert!(worst.is_empty(), "{worst:#?}");
    }
}
