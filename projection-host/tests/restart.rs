//! The projection host as a process: killed with SIGKILL mid-work, or stopped
//! with SIGTERM while writes go on, and started again, it takes its partitions
//! back and finishes the model exactly. Both print how long that took.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::World;

/// Kills the process when the test ends, however it ends.
struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Instance {
    id: String,
    read_model_group: String,
    notifications_group: String,
}

/// A fresh instance id and groups, and the read model's tables, made before
/// the host starts so the model can be compared at once.
async fn prepare(w: &World) -> Instance {
    w.open_read_model().await;
    Instance {
        id: testkit::unique_name("instance"),
        read_model_group: testkit::unique_name("rm"),
        notifications_group: testkit::unique_name("nt"),
    }
}

fn start(w: &World, instance: &Instance) -> Host {
    let child = Command::new(env!("CARGO_BIN_EXE_projection-host"))
        .env("EVENT_STORE_URL", testkit::postgres_url_in(&w.schema))
        .env("READ_MODEL_URL", testkit::postgres_url())
        .env("READ_MODEL_SCHEMA", w.read_model.as_str())
        .env("NOTIFICATIONS_SCHEMA", w.notifications.as_str())
        .env("KAFKA_BROKERS", testkit::kafka_brokers())
        .env("KAFKA_TOPIC", &w.topic)
        .env("READ_MODEL_GROUP", &instance.read_model_group)
        .env("NOTIFICATIONS_GROUP", &instance.notifications_group)
        .env("PROJECTION_INSTANCE_ID", &instance.id)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start projection-host");
    Host(child)
}

/// Without static membership the restarted instance joins behind the killed
/// one, which keeps every partition until the broker expires its session (30 s).
#[tokio::test]
async fn a_killed_projection_host_restarts_and_finishes_the_model() {
    let mut w = support::world().await;
    let instance = prepare(&w).await;
    w.write_and_publish(10, 100).await;
    let mut host = start(&w, &instance);
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "the first instance projects what was published"
    );
    host.0.kill().expect("SIGKILL");
    host.0.wait().expect("reaped");

    w.write_and_publish(10, 100).await;
    let restarted = std::time::Instant::now();
    let _host = start(&w, &instance);
    // Well inside the 30 s session timeout: the restarted instance must not wait
    // for the broker to expire the killed one.
    let converged = w.converges(&w.read_model, Duration::from_secs(20)).await;
    eprintln!(
        "restarted instance converged after {:?}",
        restarted.elapsed()
    );
    assert!(
        converged,
        "the restarted instance takes its partitions back and catches up"
    );
}

/// How many posts' read-model rows are behind the versions in `heads`.
async fn behind(w: &World, heads: &[(uuid::Uuid, i64)]) -> usize {
    let mut conn = w.pool.get().await.expect("connection");
    let query = format!(
        "SELECT count(*) FROM unnest($1::uuid[], $2::bigint[]) AS h(id, version)
         LEFT JOIN {}.posts p ON p.id = h.id
         WHERE p.id IS NULL OR p.version < h.version",
        w.read_model
    );
    let (ids, versions): (Vec<uuid::Uuid>, Vec<i64>) = heads.iter().copied().unzip();
    let row = conn
        .client()
        .query_one(&query, &[&ids, &versions])
        .await
        .expect("compare heads");
    row.get::<_, i64>(0) as usize
}

/// Every post's version in the event store now.
async fn heads(w: &World) -> Vec<(uuid::Uuid, i64)> {
    let mut conn = w.pool.get().await.expect("connection");
    conn.client()
        .query(
            &format!(
                "SELECT stream_id, max(version) FROM {}.events GROUP BY stream_id",
                w.schema
            ),
            &[],
        )
        .await
        .expect("stream heads")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Stopped the way an operator stops it (SIGTERM) while writes go on, and
/// started again: the new process resumes from the committed offsets and
/// catches up with what was written meanwhile, and the model ends exact.
#[tokio::test]
async fn a_stopped_projection_host_resumes_under_write_load() {
    let mut w = support::world().await;
    let instance = prepare(&w).await;
    let mut host = start(&w, &instance);
    let writing = std::time::Instant::now();
    while writing.elapsed() < Duration::from_secs(3) {
        w.write_and_publish(2, 20).await;
    }

    let pid = host.0.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(sent.success(), "SIGTERM sent");
    host.0.wait().expect("the host exits");
    let down = std::time::Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        w.write_and_publish(2, 20).await;
    }

    // Resumed: everything written before the restart is projected, while
    // writes go on.
    let before_restart = heads(&w).await;
    let restarted = std::time::Instant::now();
    let _host = start(&w, &instance);
    let mut resumed = None;
    while restarted.elapsed() < Duration::from_secs(30) {
        w.write_and_publish(2, 20).await;
        if behind(&w, &before_restart).await == 0 {
            resumed = Some(restarted.elapsed());
            break;
        }
    }
    eprintln!("stopped and restarted instance caught up after {resumed:?}");
    assert!(resumed.is_some(), "the restarted instance catches up");
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "the model ends equal to the store"
    );
}
