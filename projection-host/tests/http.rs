//! The projection host over HTTP: health, metrics and the admin replay surface.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use projection_host::{ProjectionHostDeps, run};
use testkit::http::HttpClient;

async fn call(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let authorization = token.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = authorization
        .as_deref()
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    let answer = HttpClient::new(addr)
        .send(method, path, &headers, None)
        .await;
    (answer.status, answer.body)
}

/// The host on `w`'s store, read model and broker, with the admin token
/// `admin-secret`: its address, the sender that stops it, and its task.
async fn spawn_host(
    w: &support::World,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let deps = ProjectionHostDeps {
        store: event_store::postgres::PostgresEventStore::new(w.pool.clone()),
        pool: w.pool.clone(),
        read_model_schema: w.read_model.clone(),
        notifications_schema: w.notifications.clone(),
        consumer: w.consumer_config(&testkit::unique_name("g")),
        notifications_group: testkit::unique_name("n"),
        admin_token: Some("admin-secret".to_owned()),
        server: ServerConfig::default(),
        metrics: Metrics::new(),
    };
    let server = tokio::spawn(run(listener, deps, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

#[tokio::test]
async fn admin_replay_needs_the_token_and_reports_progress() {
    let mut w = support::world().await;
    let events = w.write_and_publish(10, 50).await;
    let (addr, stop, server) = spawn_host(&w).await;
    // The listener is bound already, so this waits until the host serves, which
    // it does only after its tables exist.
    assert_eq!(
        call(addr, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    // Serving is not ready: until both consumers have joined their groups the
    // host projects nothing (a group join takes the broker seconds).
    let (status, body) = call(addr, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("not yet joined its consumer group"), "{body}");
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "live projection runs"
    );
    let ready = testkit::eventually(Duration::from_secs(30), || async move {
        let (status, _) = call(addr, Method::GET, "/readyz", None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "ready once both consumers joined");
    for token in [None, Some("wrong")] {
        let (status, body) = call(addr, Method::POST, "/admin/replay", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(
            call(addr, Method::GET, "/admin/replay", token).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (status, body) = call(addr, Method::POST, "/admin/replay", Some("admin-secret")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = testkit::eventually(Duration::from_secs(60), || async move {
        let (_, body) = call(addr, Method::GET, "/admin/replay", Some("admin-secret")).await;
        let progress: serde_json::Value = serde_json::from_str(&body).ok()?;
        (progress["state"] != "running").then_some(progress)
    })
    .await
    .expect("replay finishes");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["events_done"], events.len());
    assert!(w.converges(&w.read_model, Duration::from_secs(10)).await);

    let (status, metrics) = call(addr, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "sourcegram_events_projected_total{projection=\"read_model\"}",
        "sourcegram_projection_lag_ms{projection=\"read_model\"",
        "sourcegram_replays_total{outcome=\"succeeded\"} 1",
        "sourcegram_replay_events_done",
    ] {
        assert!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");
    }
    // Every event projected live has its end-to-end lag in the histogram,
    // and the broker's share of it, from the relay's producer to this consumer.
    for (histogram, what) in [
        ("sourcegram_projection_lag_seconds", "lag"),
        ("sourcegram_broker_transit_seconds", "broker transit"),
    ] {
        let prefix = format!("{histogram}_count{{projection=\"read_model\"}} ");
        let observed: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        assert!(observed >= 1.0, "no {what} observed:\n{metrics}");
    }
    assert_eq!(
        call(addr, Method::GET, "/nowhere", None).await.0,
        StatusCode::NOT_FOUND
    );
    stop.send(()).expect("stop");
    server.await.expect("server task").expect("server");
}

/// Tables an older build made lack a column this build writes (here: posts
/// without `edited_at`). The host rebuilds them by a replay when it starts,
/// is not ready meanwhile, and projects live into the rebuilt tables.
#[tokio::test]
async fn tables_an_older_build_made_are_rebuilt_before_the_host_projects() {
    let mut w = support::world().await;
    {
        let conn = w.pool.get().await.expect("conn");
        read_model::schema::create_read_model(&conn, &w.read_model)
            .await
            .expect("tables");
        conn.batch_execute(&format!(
            "ALTER TABLE {}.posts DROP COLUMN edited_at",
            w.read_model
        ))
        .await
        .expect("an older build's table");
    }
    let events = w.write_and_publish(10, 50).await;
    let (addr, stop, server) = spawn_host(&w).await;
    let (status, body) = call(addr, Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let pool = w.pool.clone();
    let schema = w.read_model.clone();
    let rebuilt = testkit::eventually(Duration::from_secs(60), || {
        let (pool, schema) = (pool.clone(), schema.clone());
        async move {
            let conn = pool.get().await.ok()?;
            let missing = read_model::schema::missing_columns(&conn, &schema)
                .await
                .ok()?;
            missing.is_empty().then_some(())
        }
    })
    .await;
    assert!(
        rebuilt.is_some(),
        "the tables were rebuilt with every column"
    );
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "the rebuilt model equals the store"
    );
    // The swap is visible before the replay has dropped its scratch schemas
    // and reported its end.
    let body = testkit::eventually(Duration::from_secs(30), || async move {
        let (_, body) = call(addr, Method::GET, "/admin/replay", Some("admin-secret")).await;
        (!body.contains("\"state\":\"running\"")).then_some(body)
    })
    .await
    .expect("the rebuild's replay ends");
    assert!(body.contains("\"state\":\"succeeded\""), "{body}");
    // Live events after the rebuild land in the rebuilt tables.
    w.write_and_publish(5, 20).await;
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "projects live after the rebuild ({} events before)",
        events.len()
    );
    stop.send(()).expect("stop");
    server.await.expect("server task").expect("server");
}
