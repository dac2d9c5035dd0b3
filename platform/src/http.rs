//! HTTP plumbing shared by the three hosts: the hyper 1.x accept loop with
//! graceful shutdown, request ids, problem+json errors, bounded JSON bodies and
//! small response builders. Routing and handlers stay in each host.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::metrics::Metrics;

/// Every response body is a single buffer: answers here are small JSON documents.
pub type HttpResponse = Response<Full<Bytes>>;

pub const REQUEST_ID: &str = "x-request-id";

/// Limits and timeouts of one server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Request bodies above this many bytes are refused with 413.
    pub max_body_bytes: usize,
    /// A client that has not sent its whole header by then is disconnected.
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived whole by then is answered 408, so
    /// a client trickling bodies cannot hold connections for long.
    pub body_read_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Connections served at once; further clients wait in the accept backlog.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_connections: 4_096,
        }
    }
}

/// What the server knows about a request before the handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// From a valid UUID `x-request-id` header, or new. Echoed on the response.
    pub request_id: Uuid,
    pub received_at: Instant,
}

/// The route label a handler attaches to its response, for metrics. Paths are
/// not used as labels: ids in them would make every request its own series.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

pub fn with_route(mut response: HttpResponse, route: &'static str) -> HttpResponse {
    response.extensions_mut().insert(RouteLabel(route));
    response
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then stops accepting
/// and gives in-flight requests `config.shutdown_grace` to finish.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    config: ServerConfig,
    metrics: Metrics,
    handler: H,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    H: Fn(Request<Incoming>, RequestContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // Wait for a connection slot first, so a flood of clients queues in the
        // kernel's backlog instead of growing this process without bound.
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Running out of file descriptors is transient; back off briefly
                    // rather than spinning or giving up the listener.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let metrics = metrics.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let handler = handler.clone();
            let metrics = metrics.clone();
            async move {
                Ok::<_, std::convert::Infallible>(handle_one(request, &handler, &metrics).await)
            }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("shutdown grace elapsed with connections still open");
        }
    }
    Ok(())
}

async fn handle_one<H, Fut>(
    request: Request<Incoming>,
    handler: &H,
    metrics: &Metrics,
) -> HttpResponse
where
    H: Fn(Request<Incoming>, RequestContext) -> Fut,
    Fut: Future<Output = HttpResponse>,
{
    let context = RequestContext {
        request_id: request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Uuid::try_parse(v).ok())
            .unwrap_or_else(Uuid::new_v4),
        received_at: Instant::now(),
    };
    let mut response = handler(request, context).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |r| r.0);
    let status = response.status().as_u16().to_string();
    metrics
        .counter(
            "http_requests_total",
            &[("route", route), ("status", &status)],
        )
        .inc(1);
    metrics
        .histogram("http_request_duration_seconds", &[("route", route)])
        .observe(context.received_at.elapsed().as_secs_f64());
    response.headers_mut().insert(
        REQUEST_ID,
        HeaderValue::from_str(&context.request_id.to_string())
            .expect("a UUID is a valid header value"),
    );
    response
}

/// An `application/problem+json` error (RFC 9457). Hosts map their error enums to
/// this in one function each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub detail: String,
    /// A short slug naming the kind of problem; the body's `type` is `/problems/<slug>`.
    pub kind: &'static str,
    /// For 405: the methods the resource takes, sent as `Allow`.
    pub allow: Option<String>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            kind: default_kind(status),
            allow: None,
        }
    }

    pub fn with_allow(mut self, methods: String) -> Self {
        self.allow = Some(methods);
        self
    }

    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    /// The `application/problem+json` body.
    pub fn to_json(&self) -> String {
        let body = ProblemBody {
            type_uri: format!("/problems/{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
        };
        serde_json::to_string(&body).expect("a problem body always serializes")
    }

    pub fn into_response(self) -> HttpResponse {
        let mut response = Response::new(Full::new(Bytes::from(self.to_json())));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(allow) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            response.headers_mut().insert(ALLOW, allow);
        }
        response
    }
}

fn default_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad-request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not-found",
        405 => "method-not-allowed",
        409 => "conflict",
        410 => "gone",
        412 => "precondition-failed",
        413 => "too-large",
        415 => "unsupported-media-type",
        422 => "unprocessable",
        503 => "unavailable",
        _ => "error",
    }
}

/// Reads a JSON request body of at most `max_body_bytes` and returns its raw bytes (for fingerprinting) after the
/// same content-type and size checks.
/// A body that has not arrived whole within `read_timeout` is 408.
pub async fn read_json_bytes(
    request: Request<Incoming>,
    max_body_bytes: usize,
    read_timeout: Duration,
) -> Result<Bytes, Problem> {
    check_json_content_type(request.headers())?;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body_bytes as u64) {
        return Err(too_large(max_body_bytes));
    }
    let read = Limited::new(request.into_body(), max_body_bytes).collect();
    let Ok(read) = tokio::time::timeout(read_timeout, read).await else {
        return Err(Problem::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                read_timeout.as_secs_f64()
            ),
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(max_body_bytes))
        }
        Err(error) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("could not read the request body: {error}"),
        )),
    }
}

/// Parses JSON bytes read by [`read_json_bytes`]: 400 when they are not UTF-8
/// JSON of the expected shape (including nesting past serde_json's recursion limit).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "the request body is not valid UTF-8",
        )
        .with_kind("invalid-json"));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not acceptable JSON: {error}"),
        )
        .with_kind("invalid-json")
    })
}

fn too_large(max: usize) -> Problem {
    Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {max} bytes"),
    )
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), Problem> {
    let media_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match media_type.as_deref() {
        Some("application/json") => Ok(()),
        Some(other) if other.starts_with("application/") && other.ends_with("+json") => Ok(()),
        _ => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON (Content-Type: application/json)",
        )),
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: &impl Serialize) -> HttpResponse {
    let bytes =
        serde_json::to_vec(body).expect("response bodies are plain data and always serialize");
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain response with a fixed content type (health checks, metrics).
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An empty response (e.g. 304).
pub fn empty(status: StatusCode) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// The path's segments without empty ones from leading, trailing or doubled
/// slashes. Segments are not percent-decoded: every segment a host accepts is an
/// ASCII literal or a UUID, which never needs decoding.
pub fn path_segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The query string's `key=value` pairs, percent-decoded (`+` is a space).
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Problem> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(key)?, percent_decode(value)?))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Result<String, Problem> {
    let bad = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "the query string is not validly percent-encoded",
        )
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes
                    .next()
                    .and_then(|c| (c as char).to_digit(16))
                    .ok_or_else(bad)?;
                let lo = bytes
                    .next()
                    .and_then(|c| (c as char).to_digit(16))
                    .ok_or_else(bad)?;
                out.push((hi * 16 + lo) as u8);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// `GET /healthz`: the process is up and serving.
pub fn healthz() -> HttpResponse {
    with_route(
        text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        "GET /healthz",
    )
}

/// `GET /readyz`: 200 when every dependency answered, else 503 naming the failures.
/// A failed dependency as `/readyz` names it: the component alone. The error
/// itself, which may name internal addresses, goes to the log only.
pub fn unready(component: &str, error: &dyn std::fmt::Display) -> String {
    tracing::warn!(%error, "not ready: {component} unavailable");
    format!("{component} unavailable")
}

/// `GET /readyz` when ready but running with a dependency down that it can
/// do without for a while: 200, with what is degraded.
pub fn ready_degraded(notes: &[String]) -> HttpResponse {
    let body = format!("ready; degraded: {}\n", notes.join("; "));
    with_route(
        text(StatusCode::OK, "text/plain; charset=utf-8", body),
        "GET /readyz",
    )
}

pub fn readyz(failures: &[String]) -> HttpResponse {
    let response = if failures.is_empty() {
        text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ready\n".to_owned(),
        )
    } else {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}", failures.join("; ")),
        )
        .into_response()
    };
    with_route(response, "GET /readyz")
}

/// `GET /metrics` in Prometheus text format.
/// A host's OpenAPI document, as kept in the repository.
pub fn openapi(document: &'static str) -> HttpResponse {
    let mut response = Response::new(Full::new(Bytes::from_static(document.as_bytes())));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn metrics_response(metrics: &Metrics) -> HttpResponse {
    with_route(
        text(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "GET /metrics",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_ignore_empty_parts() {
        assert_eq!(path_segments("/posts//abc/"), vec!["posts", "abc"]);
        assert!(path_segments("/").is_empty());
    }

    #[test]
    fn query_pairs_decode_percent_and_plus() {
        let pairs = query_pairs(Some("author=al%69ce&x=a+b&flag")).expect("valid");
        assert_eq!(
            pairs,
            vec![
                ("author".to_owned(), "alice".to_owned()),
                ("x".to_owned(), "a b".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert!(query_pairs(Some("a=%zz")).is_err());
        assert!(
            query_pairs(Some("a=%ff")).is_err(),
            "invalid UTF-8 is refused"
        );
    }
}
