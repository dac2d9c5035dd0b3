//! The projection host as a process: killed with SIGKILL mid-work and started
//! again, it takes its partitions back and finishes the model exactly.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use command_host::testkit;
use projection_host::projector::ReadModel;
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

fn start(w: &World, instance: &Instance) -> Host {
    let url = testkit::postgres_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let child = Command::new(env!("CARGO_BIN_EXE_projection-host"))
        .env(
            "EVENT_STORE_URL",
            format!("{url}{separator}options=-csearch_path%3D{}", w.schema),
        )
        .env("READ_MODEL_URL", &url)
        .env("READ_MODEL_SCHEMA", &w.read_model)
        .env("NOTIFICATIONS_SCHEMA", &w.notifications)
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
/// one, which keeps every partition until the broker expires its session (30 s;
/// under load tansu was seen never to expire it at all).
#[tokio::test]
async fn a_killed_projection_host_restarts_and_finishes_the_model() {
    let mut w = support::world().await;
    let instance = Instance {
        id: testkit::unique_name("instance"),
        read_model_group: testkit::unique_name("rm"),
        notifications_group: testkit::unique_name("nt"),
    };
    // The tables exist before the host starts, so the model can be compared at once.
    ReadModel::open(w.pool.clone(), &w.read_model)
        .await
        .expect("read model");
    let first = w.write(10, 100).await;
    w.publish(&first).await;
    let mut host = start(&w, &instance);
    assert!(
        w.converges(&w.read_model, Duration::from_secs(60)).await,
        "the first instance projects what was published"
    );
    host.0.kill().expect("SIGKILL");
    host.0.wait().expect("reaped");

    let second = w.write(10, 100).await;
    w.publish(&second).await;
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
