//! Sourcegram's projection host: builds the PostgreSQL read model and the
//! notifications from Kafka, and rebuilds the read model from the event store.
//!
//! - [`projector`]: applies a batch to the read model, exactly once in effect.
//! - [`notifications`]: the second projection, with its own consumer group.
//! - [`consumer`]: Kafka micro-batches, offsets committed after the transaction.
//! - [`replay`]: full rebuild from the event store into a fresh schema, then swap.
//! - [`fence`]: the swap fence and the replay lease, shared by every host.
//! - [`config`]: configuration from the environment.
#![forbid(unsafe_code)]

pub mod config;
pub mod consumer;
pub mod fence;
pub mod notifications;
pub mod projector;
pub mod replay;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use event_store::EventStore;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use platform::http::{self, HttpResponse, Problem, RequestContext, ServerConfig};
use platform::metrics::Metrics;
use platform::routes::{Route, find};
use platform::stop::{Background, Stopping};
use plumbing::pg::PgPool;
use read_model::SchemaName;
use tokio::net::TcpListener;

use crate::consumer::{ConsumerConfig, Projection, run_consumer};
use crate::notifications::Notifications;
use crate::projector::ReadModel;
use crate::replay::{ReplayError, Replayer};

/// What the projection host runs on.
#[derive(Debug)]
pub struct ProjectionHostDeps<S> {
    pub store: S,
    pub pool: PgPool,
    pub read_model_schema: SchemaName,
    pub notifications_schema: SchemaName,
    /// Consumer settings of the read model; the notifications use the same
    /// with `notifications_group`.
    pub consumer: ConsumerConfig,
    pub notifications_group: String,
    /// `None`: the admin surface answers 503 saying the token is not configured.
    pub admin_token: Option<String>,
    pub server: ServerConfig,
    pub metrics: Metrics,
}

/// The notifications' consumer: the read model's settings in a group of its
/// own, so each projection keeps its own offsets and pace.
pub fn notifications_consumer(read_model: &ConsumerConfig, group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group: group.to_owned(),
        ..read_model.clone()
    }
}

/// Runs both projections and the HTTP surface until `shutdown` completes.
pub async fn run<S: EventStore + 'static>(
    listener: TcpListener,
    deps: ProjectionHostDeps<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let to_io = |e: projector::ProjectionError| std::io::Error::other(e.to_string());
    let store = Arc::new(deps.store);
    let read_model = ReadModel::open(deps.pool.clone(), &deps.read_model_schema)
        .await
        .map_err(to_io)?;
    let notifications = Notifications::open(deps.pool.clone(), &deps.notifications_schema)
        .await
        .map_err(to_io)?;
    let replayer = Arc::new(Replayer::new(
        Arc::clone(&store),
        deps.pool.clone(),
        &deps.read_model_schema,
    ));
    // Tables an older build made lack the columns this one writes: they are
    // rebuilt by a replay before this host projects into them.
    let outdated = {
        let conn = deps.pool.get().await.map_err(|e| to_io(e.into()))?;
        read_model::schema::missing_columns(&conn, &deps.read_model_schema)
            .await
            .map_err(|e| to_io(e.into()))?
    };
    let rebuilding = Arc::new(AtomicBool::new(!outdated.is_empty()));
    let mut background = Background::new();
    let mut joined = Vec::new();
    let notifications_config = notifications_consumer(&deps.consumer, &deps.notifications_group);
    for (projection, config) in [
        (Projection::ReadModel(read_model), deps.consumer.clone()),
        (
            Projection::Notifications(notifications),
            notifications_config,
        ),
    ] {
        let flag = Arc::new(AtomicBool::new(false));
        let projection_name = projection.name();
        joined.push((projection_name, Arc::clone(&flag)));
        let rebuild = (matches!(projection, Projection::ReadModel(_)) && !outdated.is_empty())
            .then(|| (Arc::clone(&replayer), Arc::clone(&rebuilding)));
        let consumer = run_consumer(
            config,
            Arc::new(projection),
            Arc::clone(&store),
            deps.metrics.clone(),
            background.stopping(),
            flag,
        );
        let missing = outdated.join(", ");
        let stopping = background.stopping();
        // A consumer that cannot start says so at once, not at shutdown.
        background.spawn(projection_name, async move {
            if let Some((replayer, rebuilding)) = rebuild {
                if !rebuild_outdated(&replayer, &missing, &stopping).await {
                    return;
                }
                rebuilding.store(false, Ordering::Release);
            }
            if let Err(error) = consumer.await {
                tracing::error!(%error, "consumer could not start");
            }
        });
    }
    let app = Arc::new(App {
        replayer,
        rebuilding,
        store,
        pool: deps.pool,
        admin_token: deps.admin_token,
        metrics: deps.metrics.clone(),
        joined,
    });
    let served = http::serve(
        listener,
        deps.server,
        deps.metrics,
        move |request, context| {
            let app = Arc::clone(&app);
            async move { app.handle(request, context).await }
        },
        shutdown,
    )
    .await;
    background.stop().await;
    served
}

/// Replays the read model into fresh tables, for live tables that lack the
/// columns `missing`. Another host may be replaying already; then this one
/// tries again every 5 s. False if the host stopped first.
async fn rebuild_outdated<S: EventStore + 'static>(
    replayer: &Replayer<S>,
    missing: &str,
    stopping: &Stopping,
) -> bool {
    tracing::warn!(%missing, "the read model's tables predate this build: rebuilding them by a replay");
    loop {
        match replayer.replay().await {
            Ok(()) => return true,
            Err(_) if stopping.is_requested() => return false,
            Err(error) => {
                tracing::error!(%error, "the rebuild failed; trying again in 5 s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Every request the projection host answers.
#[derive(Debug, Clone, Copy)]
enum AdminRequest {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    StartReplay,
    ReplayProgress,
}

/// The projection host's routes, declared once: routing, 404 and 405 with
/// `Allow`, and the labels metrics use all come from here.
const ROUTES: &[Route<AdminRequest>] = &[
    Route::new("GET /healthz", AdminRequest::Healthz),
    Route::new("GET /readyz", AdminRequest::Readyz),
    Route::new("GET /metrics", AdminRequest::Metrics),
    Route::new("GET /openapi.json", AdminRequest::OpenApi),
    Route::new("POST /admin/replay", AdminRequest::StartReplay),
    Route::new("GET /admin/replay", AdminRequest::ReplayProgress),
];

/// The projection host's HTTP contract, served at `GET /openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi/projection-host.json");

struct App<S> {
    store: Arc<S>,
    pool: PgPool,
    replayer: Arc<Replayer<S>>,
    /// Set while the tables an older build made are rebuilt, before the live
    /// read-model projection starts.
    rebuilding: Arc<AtomicBool>,
    admin_token: Option<String>,
    metrics: Metrics,
    /// Per projection: has its consumer joined its group yet?
    joined: Vec<(&'static str, Arc<AtomicBool>)>,
}

impl<S: EventStore + 'static> App<S> {
    async fn handle(&self, request: Request<Incoming>, _context: RequestContext) -> HttpResponse {
        let (endpoint, label) = match find(ROUTES, request.method(), request.uri().path()) {
            Ok(matched) => (matched.endpoint, matched.label),
            Err(problem) => return http::with_route(problem.into_response(), "unmatched"),
        };
        let response = self
            .dispatch(endpoint, &request)
            .await
            .unwrap_or_else(Problem::into_response);
        http::with_route(response, label)
    }

    /// The mediator: one handler per request.
    async fn dispatch(
        &self,
        endpoint: AdminRequest,
        request: &Request<Incoming>,
    ) -> Result<HttpResponse, Problem> {
        match endpoint {
            AdminRequest::Healthz => Ok(http::healthz()),
            AdminRequest::Readyz => Ok(self.readyz().await),
            AdminRequest::Metrics => Ok(self.metrics()),
            AdminRequest::OpenApi => Ok(http::openapi(OPENAPI)),
            AdminRequest::StartReplay => {
                self.authorize(request)?;
                self.start_replay().await
            }
            AdminRequest::ReplayProgress => {
                self.authorize(request)?;
                Ok(http::json(StatusCode::OK, &self.replayer.progress()))
            }
        }
    }

    fn authorize(&self, request: &Request<Incoming>) -> Result<(), Problem> {
        let Some(expected) = &self.admin_token else {
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the admin surface is disabled: ADMIN_TOKEN is not configured",
            ));
        };
        let given = platform::auth::bearer(request.headers())
            .map_err(|e| Problem::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "the admin token is wrong",
            ));
        }
        Ok(())
    }

    async fn start_replay(&self) -> Result<HttpResponse, Problem> {
        let lease = self.replayer.begin().await.map_err(|e| match e {
            ReplayError::AlreadyRunning => Problem::new(StatusCode::CONFLICT, e.to_string()),
            other => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        })?;
        let replayer = Arc::clone(&self.replayer);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let outcome = match replayer.run(lease).await {
                Ok(()) => "succeeded",
                Err(error) => {
                    tracing::error!(%error, "replay failed; the live read model is untouched");
                    "failed"
                }
            };
            metrics
                .counter("sourcegram_replays_total", &[("outcome", outcome)])
                .inc(1);
        });
        Ok(http::json(StatusCode::ACCEPTED, &self.replayer.progress()))
    }

    async fn readyz(&self) -> HttpResponse {
        let mut failures = Vec::new();
        match self.pool.get().await {
            Ok(conn) => {
                if let Err(e) = conn.simple_query("SELECT 1").await {
                    failures.push(http::unready("read model", &e));
                }
            }
            Err(e) => failures.push(http::unready("read model", &e)),
        }
        if let Err(e) = self.store.ping().await {
            failures.push(http::unready("event store", &e));
        }
        if self.rebuilding.load(Ordering::Acquire) {
            failures.push(
                "read model: rebuilding tables an older build made (see GET /admin/replay)"
                    .to_owned(),
            );
        }
        for (projection, joined) in &self.joined {
            if !joined.load(Ordering::Acquire) {
                failures.push(format!("{projection}: not yet joined its consumer group"));
            }
        }
        http::readyz(&failures)
    }

    fn metrics(&self) -> HttpResponse {
        let progress = self.replayer.progress();
        self.metrics
            .gauge("sourcegram_replay_events_done", &[])
            .set(progress.events_done as f64);
        self.metrics
            .gauge("sourcegram_replay_events_total", &[])
            .set(progress.events_total as f64);
        http::metrics_response(&self.metrics)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::notifications_consumer;
    use crate::consumer::ConsumerConfig;

    #[test]
    fn notifications_consume_in_their_own_group() {
        let read_model = ConsumerConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            topic: "post-events".to_owned(),
            group: "post-read-model".to_owned(),
            max_batch: 500,
            max_wait: Duration::ZERO,
            fetch_wait: Duration::from_millis(10),
            instance_id: Some("host-1".to_owned()),
            debug: None,
        };
        let notifications = notifications_consumer(&read_model, "post-notifications");
        assert_eq!(notifications.group, "post-notifications");
        assert_eq!(notifications.fetch_wait, read_model.fetch_wait);
        assert_eq!(notifications.topic, read_model.topic);
        assert_eq!(notifications.instance_id, read_model.instance_id);
    }

    /// Every route is in the OpenAPI document the host serves, and the
    /// document has no operation the host does not serve.
    #[test]
    fn the_openapi_document_lists_exactly_the_routes_served() {
        platform::routes::assert_documented(
            super::ROUTES,
            include_str!("../../docs/openapi/projection-host.json"),
        );
    }
}
