//! Sourcegram's query host: every read of the PostgreSQL read model.
//!
//! - [`queries`]: requests parsed into the closed `Query` enum.
//! - [`reads`]: the SQL, keyset-paginated and prepared.
//! - [`cursor`]: opaque pagination cursors.
//! - [`changes`]: LISTEN for projector changes, for read-your-writes.
//! - [`config`]: configuration from the environment.
//!
//! **Architecture invariant:** the query host never writes.
#![forbid(unsafe_code)]

pub mod changes;
pub mod config;
pub mod cursor;
pub mod queries;
pub mod reads;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use domain::PostId;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, ETAG, HeaderValue};
use hyper::{Request, StatusCode};
use platform::auth::{self, AuthError, TokenKey};
use platform::http::{self, HttpResponse, Problem, RequestContext, ServerConfig};
use platform::metrics::Metrics;
use platform::stop::Background;
use plumbing::pg::PgPool;
use read_model::SchemaName;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_postgres::error::SqlState;

use crate::changes::Change;
use crate::cursor::{Cursor, ListKind};
use crate::queries::{PostFilter, Query};
use crate::reads::{CommentView, PostLookup, Reads};

/// The query host's HTTP contract, served at `GET /openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi/query-host.json");

/// What the query host runs on.
#[derive(Debug)]
pub struct QueryHostDeps {
    pub pool: PgPool,
    pub read_model_schema: SchemaName,
    pub notifications_schema: SchemaName,
    /// `None`: `/me/notifications` answers 503 saying tokens are not configured.
    pub token_key: Option<TokenKey>,
    /// How long `?min_version=N` waits for the read model to reach N.
    pub min_version_wait: Duration,
    pub server: ServerConfig,
    pub metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("{}", .0.detail)]
    Http(Problem),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such post")]
    NotFound,
    #[error("the post was deleted")]
    Gone,
    #[error("notifications are disabled: TOKEN_SECRET is not configured")]
    TokensNotConfigured,
    #[error("read model unavailable: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// The only place a query-host error becomes a status code.
fn problem_for(error: QueryError) -> Problem {
    let detail = error.to_string();
    match error {
        QueryError::Http(problem) => problem,
        QueryError::Auth(_) => Problem::new(StatusCode::UNAUTHORIZED, detail),
        QueryError::NotFound => Problem::new(StatusCode::NOT_FOUND, detail),
        QueryError::Gone => Problem::new(StatusCode::GONE, detail),
        QueryError::TokensNotConfigured => Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail),
        QueryError::Database(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the read model has not been created yet: the projection host creates it when it starts",
        ),
        QueryError::Database(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the read model is unavailable; try again",
        ),
    }
}

/// Serves the query host until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    deps: QueryHostDeps,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (changes, _) = broadcast::channel(1_024);
    let (listening, _) = watch::channel(false);
    let mut background = Background::new();
    // The listener has nothing to finish: it stops wherever it is.
    let listen = changes::listen(deps.pool.config().clone(), changes.clone(), listening);
    let stopping = background.stopping();
    background.spawn("change listener", async move {
        stopping.or_until_stopped(listen).await;
    });
    // Every read finds its rows by key or in an index's order
    // (docs/performance.md#keyed-plans).
    let pool = plumbing::pg::keyed(&deps.pool);
    let app = Arc::new(App {
        reads: Reads::new(pool, &deps.read_model_schema, &deps.notifications_schema),
        token_key: deps.token_key,
        changes,
        min_version_wait: deps.min_version_wait,
    });
    let served = http::serve(
        listener,
        deps.server,
        deps.metrics.clone(),
        move |request, context| {
            let app = Arc::clone(&app);
            let metrics = deps.metrics.clone();
            async move { app.handle(request, context, &metrics).await }
        },
        shutdown,
    )
    .await;
    background.stop().await;
    served
}

struct App {
    reads: Reads,
    token_key: Option<TokenKey>,
    changes: broadcast::Sender<Change>,
    min_version_wait: Duration,
}

impl App {
    async fn handle(
        &self,
        request: Request<Incoming>,
        _context: RequestContext,
        metrics: &Metrics,
    ) -> HttpResponse {
        let uri = request.uri();
        let (query, label) =
            match queries::parse(request.method(), uri.path(), uri.query(), request.headers()) {
                Ok(parsed) => parsed,
                Err(problem) => {
                    return http::with_route(
                        problem_for(QueryError::Http(problem)).into_response(),
                        "unmatched",
                    );
                }
            };
        let response = match self.dispatch(query, &request, metrics).await {
            Ok(response) => response,
            Err(error) => problem_for(error).into_response(),
        };
        http::with_route(response, label)
    }

    /// The mediator: one handler per query.
    async fn dispatch(
        &self,
        query: Query,
        request: &Request<Incoming>,
        metrics: &Metrics,
    ) -> Result<HttpResponse, QueryError> {
        match query {
            Query::ListPosts {
                filter,
                limit,
                cursor,
            } => self.list_posts(&filter, limit, cursor).await,
            Query::GetPost {
                id,
                min_version,
                if_none_match,
            } => self.get_post(id, min_version, if_none_match).await,
            Query::ListComments { id, limit, cursor } => {
                self.list_comments(id, limit, cursor).await
            }
            Query::Notifications { limit, cursor } => {
                self.notifications(request, limit, cursor).await
            }
            Query::Healthz => Ok(http::healthz()),
            Query::Readyz => Ok(match self.reads.missing_tables().await {
                Ok(missing) => http::readyz(
                    &missing
                        .iter()
                        .map(|t| format!("{t}: not created yet (the projection host creates it)"))
                        .collect::<Vec<_>>(),
                ),
                Err(e) => http::readyz(&[http::unready("read model", &e)]),
            }),
            Query::Metrics => Ok(http::metrics_response(metrics)),
            Query::OpenApi => Ok(http::openapi(OPENAPI)),
        }
    }

    async fn list_posts(
        &self,
        filter: &PostFilter,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<HttpResponse, QueryError> {
        let mut posts = self.reads.list_posts(filter, limit, cursor).await?;
        let next = next_cursor(&mut posts, limit, ListKind::Posts, |p| Cursor {
            at: p.created_at,
            id: p.id,
        });
        Ok(uncached(http::json(
            StatusCode::OK,
            &json!({ "posts": posts, "next_cursor": next }),
        )))
    }

    async fn get_post(
        &self,
        id: PostId,
        min_version: Option<u64>,
        if_none_match: Option<u64>,
    ) -> Result<HttpResponse, QueryError> {
        let (lookup, comments, fresh) = match min_version {
            None => {
                let (lookup, comments) = self.reads.get_post_with_comments(id).await?;
                (lookup, Some(comments), None)
            }
            Some(wanted) => {
                let (lookup, fresh) = self.wait_for_version(id, wanted).await?;
                (lookup, None, Some(fresh))
            }
        };
        let post = match lookup {
            PostLookup::Missing => return Err(QueryError::NotFound),
            PostLookup::Deleted => return Err(QueryError::Gone),
            PostLookup::Live(post) => post,
        };
        let etag = HeaderValue::from_str(&format!("\"{}\"", post.version))
            .expect("a quoted number is a valid header");
        let mut response = if if_none_match == Some(post.version.get()) {
            http::empty(StatusCode::NOT_MODIFIED)
        } else {
            let mut comments = match comments {
                Some(comments) => comments,
                None => self.reads.post_comments(id).await?,
            };
            let next = next_cursor(
                &mut comments,
                reads::COMMENTS_ON_A_POST,
                ListKind::Comments,
                comment_position,
            );
            let mut body = serde_json::to_value(&post).expect("a post view serializes");
            body["comments"] = serde_json::to_value(comments).expect("comment views serialize");
            body["comments_next_cursor"] = next.into();
            http::json(StatusCode::OK, &body)
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, etag);
        // Clients may keep a copy but must revalidate: cheap with the ETag.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Some(fresh) = fresh {
            headers.insert(
                "x-read-model-fresh",
                HeaderValue::from_static(if fresh { "true" } else { "false" }),
            );
        }
        Ok(response)
    }

    /// Waits until the post reaches `wanted` or the bound passes. Subscribes to
    /// changes before reading, so a change between the read and the wait is not
    /// missed; each request waits on the broadcast, never polling PostgreSQL.
    async fn wait_for_version(
        &self,
        id: PostId,
        wanted: u64,
    ) -> Result<(PostLookup, bool), QueryError> {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + self.min_version_wait;
        loop {
            let lookup = self.reads.get_post(id).await?;
            match &lookup {
                PostLookup::Live(post) if post.version.get() >= wanted => {
                    return Ok((lookup, true));
                }
                PostLookup::Deleted => return Ok((lookup, true)),
                _ => {}
            }
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    // One last read: a change may have landed while the
                    // listener was reconnecting and its notification was lost.
                    Err(_elapsed) => {
                        let last = self.reads.get_post(id).await?;
                        let fresh = match &last {
                            PostLookup::Live(post) => post.version.get() >= wanted,
                            PostLookup::Deleted => true,
                            PostLookup::Missing => false,
                        };
                        return Ok((last, fresh));
                    }
                    Ok(Ok(change)) if change.post == id.as_uuid() && change.version >= wanted => {
                        break;
                    }
                    Ok(Ok(_)) => {}
                    // Missed some changes: read again rather than guess.
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    // The listener task is gone (only at shutdown): stop waiting.
                    Ok(Err(broadcast::error::RecvError::Closed)) => return Ok((lookup, false)),
                }
            }
        }
    }

    async fn list_comments(
        &self,
        id: PostId,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<HttpResponse, QueryError> {
        match self.reads.get_post(id).await? {
            PostLookup::Missing => return Err(QueryError::NotFound),
            PostLookup::Deleted => return Err(QueryError::Gone),
            PostLookup::Live(_) => {}
        }
        let mut comments = self.reads.list_comments(id, limit, cursor).await?;
        let next = next_cursor(&mut comments, limit, ListKind::Comments, comment_position);
        Ok(uncached(http::json(
            StatusCode::OK,
            &json!({ "comments": comments, "next_cursor": next }),
        )))
    }

    async fn notifications(
        &self,
        request: &Request<Incoming>,
        limit: i64,
        cursor: Option<Cursor>,
    ) -> Result<HttpResponse, QueryError> {
        let key = self
            .token_key
            .as_ref()
            .ok_or(QueryError::TokensNotConfigured)?;
        let user = key.verify(auth::bearer(request.headers())?, platform::clock::now())?;
        let mut notifications = self
            .reads
            .notifications(user.as_str(), limit, cursor)
            .await?;
        let next = next_cursor(&mut notifications, limit, ListKind::Notifications, |n| {
            Cursor {
                at: n.created_at,
                id: n.id,
            }
        });
        let mut response = http::json(
            StatusCode::OK,
            &json!({ "notifications": notifications, "next_cursor": next }),
        );
        response
            .headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        Ok(response)
    }
}

/// Lists change with every write: nothing may reuse them without asking again.
fn uncached(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Where a list of comments continues after `comment`: the same for the
/// comments route and the comments shown with a post.
fn comment_position(comment: &CommentView) -> Cursor {
    Cursor {
        at: comment.created_at,
        id: comment.id,
    }
}

/// Trims the extra row fetched to detect a next page, and returns its cursor.
fn next_cursor<T>(
    rows: &mut Vec<T>,
    limit: i64,
    kind: ListKind,
    position: impl Fn(&T) -> Cursor,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|row| position(row).encode(kind))
}
