//! The command host's mediator: a request becomes a closed [`CommandRequest`],
//! [`App::dispatch`] hands it to one handler each, and the answer becomes a
//! response. Writes go to the [`CommandService`]; this module only maps HTTP
//! to a [`WriteRequest`] and a write's answer back to HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ETAG, HeaderValue, IF_MATCH, LOCATION};
use hyper::{HeaderMap, Method, Request, StatusCode};
use sha2::{Digest, Sha256};

use domain::{PostId, Version};

use crate::error::{CommandError, problem_for};
use crate::history::{self, HistoryPage};
use crate::metrics::CommandMetrics;
use crate::records::CommandRecords;
use crate::routes::{self, Endpoint, route};
use crate::service::{CommandService, Executed, Recorded, WriteRequest, Written};
use event_bus::KafkaPublisher;
use event_store::EventStore;
use platform::auth::{self, TokenKey};
use platform::clock;
use platform::http::{self, HttpResponse, Problem, RequestContext};
use platform::routes::Matched;

const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// Everything the command host can be asked, after routing and parsing.
#[derive(Debug)]
pub enum CommandRequest {
    Write(WriteRequest),
    History(PostId, HistoryPage),
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
}

/// The command host's HTTP contract, served at `GET /openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi/command-host.json");

/// Shared state of one command host.
pub struct App<S, R> {
    pub(crate) service: Arc<CommandService<S, R>>,
    pub(crate) publisher: KafkaPublisher,
    pub(crate) token_key: TokenKey,
    pub(crate) metrics: CommandMetrics,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
}

impl<S, R> std::fmt::Debug for App<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl<S: EventStore + 'static, R: CommandRecords + 'static> App<S, R> {
    /// Turns one HTTP request into a response. Never fails: errors become problems.
    pub async fn handle(
        self: &Arc<Self>,
        request: Request<Incoming>,
        context: RequestContext,
    ) -> HttpResponse {
        let path = request.uri().path().to_owned();
        let matched = match route(request.method(), &path) {
            Ok(matched) => matched,
            Err(problem) => return http::with_route(problem.into_response(), "unmatched"),
        };
        let label = matched.label;
        let response = match self.parse(&matched, request, context).await {
            Ok(parsed) => self.dispatch(parsed).await,
            Err(error) => Err(error),
        };
        let response = response.unwrap_or_else(|error| problem_for(&error).into_response());
        http::with_route(response, label)
    }

    /// Authenticates and parses a request into a [`CommandRequest`].
    async fn parse(
        &self,
        matched: &Matched<'_, Endpoint>,
        request: Request<Incoming>,
        context: RequestContext,
    ) -> Result<CommandRequest, CommandError> {
        let handler = match matched.endpoint {
            Endpoint::Healthz => return Ok(CommandRequest::Healthz),
            Endpoint::Readyz => return Ok(CommandRequest::Readyz),
            Endpoint::Metrics => return Ok(CommandRequest::Metrics),
            Endpoint::OpenApi => return Ok(CommandRequest::OpenApi),
            Endpoint::History => None,
            Endpoint::Write(handler) => Some(handler),
        };
        let post_id = routes::target_post(matched)?;
        let actor = self
            .token_key
            .verify(auth::bearer(request.headers())?, clock::now())?;
        let Some(handler) = handler else {
            let page = HistoryPage::parse(request.uri().query())?;
            return Ok(CommandRequest::History(post_id, page));
        };
        let idempotency_key = idempotency_key(request.headers())?;
        let expected_version = if_match(request.headers())?;
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let body = if handler.reads_body {
            http::read_json_bytes(request, self.max_body_bytes, self.body_read_timeout).await?
        } else {
            Bytes::new()
        };
        Ok(CommandRequest::Write(WriteRequest {
            post_id,
            command: (handler.command)(matched, &body)?,
            actor,
            expected_version,
            idempotency_key,
            fingerprint: fingerprint(&method, &path, &body),
            request_id: context.request_id,
            deadline: tokio::time::Instant::now() + self.service.limits().write_deadline,
        }))
    }

    /// The mediator: one handler per request kind.
    pub async fn dispatch(
        self: &Arc<Self>,
        request: CommandRequest,
    ) -> Result<HttpResponse, CommandError> {
        match request {
            CommandRequest::Write(write) => match self.service.execute(write).await? {
                Executed::Written(written) => Ok(written_response(&written)),
                Executed::Replayed(recorded) => Ok(replayed_response(&recorded)),
            },
            CommandRequest::History(post_id, page) => {
                history::history(self.service.store(), post_id, page).await
            }
            CommandRequest::OpenApi => Ok(http::openapi(OPENAPI)),
            CommandRequest::Healthz => Ok(http::healthz()),
            CommandRequest::Readyz => Ok(self.readyz().await),
            CommandRequest::Metrics => Ok(self.metrics().await),
        }
    }

    async fn readyz(&self) -> HttpResponse {
        let (store, records, broker) = tokio::join!(
            self.service.store().ping(),
            self.service.records().ping(),
            self.publisher.ping()
        );
        let mut failures = Vec::new();
        if let Err(e) = store {
            failures.push(http::unready("event store", &e));
        }
        if let Err(e) = records {
            failures.push(http::unready("command records", &e));
        }
        // Writes go on while the broker is down: their events wait in the
        // outbox until the relay can publish them.
        match broker {
            Err(e) if failures.is_empty() => http::ready_degraded(&[format!(
                "{}; events wait in the outbox",
                http::unready("kafka", &e)
            )]),
            _ => http::readyz(&failures),
        }
    }

    async fn metrics(&self) -> HttpResponse {
        // The backlog is read when scraped, so it is right even after a restart.
        if let Ok(backlog) = self.service.store().unpublished_count().await {
            self.metrics.outbox_unpublished.set(backlog as f64);
        }
        http::metrics_response(&self.metrics.registry)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, CommandError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
            ),
        )
    };
    let key = value.to_str().map_err(|_| bad())?.trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(bad().into());
    }
    Ok(Some(key.to_owned()))
}

fn if_match(headers: &HeaderMap) -> Result<Option<Version>, CommandError> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let parsed = value.to_str().ok().and_then(|v| {
        v.trim()
            .strip_prefix('"')?
            .strip_suffix('"')?
            .parse::<u64>()
            .ok()
    });
    match parsed {
        Some(version) => Ok(Some(Version::new(version))),
        None => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "If-Match must be a quoted version, e.g. \"3\"",
        )
        .into()),
    }
}

fn fingerprint(method: &Method, path: &str, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(method.as_str().as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hash.finalize().into()
}

/// 201 with `Location` for what made a post or a comment, 200 for the rest;
/// the post's new version as the `ETag`.
fn written_response(written: &Written) -> HttpResponse {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = http::json(status, &written.body());
    let headers = response.headers_mut();
    if let Some(location) = written
        .location()
        .and_then(|l| HeaderValue::from_str(&l).ok())
    {
        headers.insert(LOCATION, location);
    }
    let etag = HeaderValue::from_str(&format!("\"{}\"", written.version))
        .expect("a quoted number is a valid header");
    headers.insert(ETAG, etag);
    response
}

/// A keyed retry's answer: the first attempt's, marked as replayed.
fn replayed_response(recorded: &Recorded) -> HttpResponse {
    let mut response = match recorded {
        Recorded::Written(written) => written_response(written),
        Recorded::Refused { status, problem } => {
            http::text(*status, "application/problem+json", problem.clone())
        }
    };
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
