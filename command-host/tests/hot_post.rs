//! One post taking many writes at once: writes that arrive together are
//! decided one after the other and appended in one write, each keeps its own
//! answer, and a post's state is saved as a snapshot from time to time and
//! loaded from it.

mod support;

use std::time::Duration;

use hyper::{Method, StatusCode};
use support::{TestApp, spawn_app, spawn_app_on};
use uuid::Uuid;

async fn like(app: &TestApp, post: &str, user: &str) -> support::Answer {
    app.send(
        Method::POST,
        &format!("/posts/{post}/likes"),
        Some(user),
        &[],
        None,
    )
    .await
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics(app: &TestApp) -> String {
    app.send(Method::GET, "/metrics", None, &[], None)
        .await
        .body
}

/// The events of `post` in the store, per user.
async fn events_by_user(app: &TestApp, post: &str) -> Vec<(String, String, i64)> {
    let conn = app.pool.get().await.expect("connection");
    conn.query(
        "SELECT metadata->>'user', event_type, count(*) FROM events WHERE stream_id = $1
         GROUP BY 1, 2 ORDER BY 1, 2",
        &[&Uuid::parse_str(post).expect("uuid")],
    )
    .await
    .expect("events")
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// 200 likes from distinct users at once, with a few refusals among them:
/// fewer appends than commands, every acknowledged like in the store exactly
/// once with the version its answer named, and each refusal refused alone.
#[tokio::test]
async fn concurrent_writes_to_one_post_share_appends_and_keep_their_own_answers() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "going viral").await;
    let writes = (0..200).map(|i| {
        let (app, post) = (&app, post.clone());
        async move {
            match i % 50 {
                // A stale If-Match among the likes: 412, alone.
                7 => {
                    let answer = app
                        .send(
                            Method::PUT,
                            &format!("/posts/{post}/message"),
                            Some("alice"),
                            &[("if-match", "\"1\"")],
                            Some(br#"{"message":"edited"}"#.to_vec()),
                        )
                        .await;
                    (i, answer)
                }
                // Someone else's message: 403, alone.
                13 => {
                    let answer = app
                        .put_json(
                            &format!("/posts/{post}/message"),
                            "mallory",
                            serde_json::json!({ "message": "mine now" }),
                        )
                        .await;
                    (i, answer)
                }
                _ => (i, like(app, &post, &format!("fan{i}")).await),
            }
        }
    });
    let answers = futures_util::future::join_all(writes).await;
    let mut versions = std::collections::BTreeSet::new();
    let mut likes = 0;
    for (i, answer) in &answers {
        match i % 50 {
            7 => assert!(
                matches!(
                    answer.status,
                    StatusCode::PRECONDITION_FAILED | StatusCode::OK
                ),
                "{i}: {} {}",
                answer.status,
                answer.body
            ),
            13 => assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body),
            _ => {
                assert_eq!(answer.status, StatusCode::OK, "{i}: {}", answer.body);
                likes += 1;
                let version = answer.json()["version"].as_u64().expect("version");
                assert!(
                    versions.insert(version),
                    "two likes answered version {version}"
                );
            }
        }
    }
    // At least the four edits after the first like are stale; each answered alone.
    let stale = answers
        .iter()
        .filter(|(_, a)| a.status == StatusCode::PRECONDITION_FAILED)
        .count();
    assert!(stale >= 3, "{stale} edits refused for a stale If-Match");
    // Every acknowledged like is in the store once, under its own user.
    let stored = events_by_user(&app, &post).await;
    for i in (0..200).filter(|i| ![7, 13].contains(&(i % 50))) {
        let user = format!("fan{i}");
        assert!(
            stored.contains(&(user.clone(), "PostLiked".to_owned(), 1)),
            "{user}'s like is not in the store exactly once: {stored:?}"
        );
    }
    assert!(stored.iter().all(|(user, _, n)| *n == 1 || user == "alice"));
    assert!(!stored.iter().any(|(user, _, _)| user == "mallory"));
    let text = metrics(&app).await;
    let batches = metric(&text, "sourcegram_write_batches_total");
    let commands = metric(&text, "sourcegram_batched_commands_total");
    assert!(
        likes >= 190 && commands >= likes,
        "{commands} commands for {likes} likes"
    );
    assert!(
        batches < commands,
        "{commands} commands went in {batches} appends: none shared"
    );
    app.stop().await;
}

/// Snapshots: a post past the snapshot interval is saved; a restarted host
/// loads it from the snapshot and the events after it, and answers as one that
/// folded every event; a snapshot of another layout, or one that does not read
/// back, is passed over for the events.
#[tokio::test]
async fn a_post_loads_from_its_snapshot_and_ignores_one_it_cannot_use() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "snapshot me").await;
    // 1,050 likes (the interval is 1,000 events), sent 50 at a time.
    for round in 0..21 {
        let likes = (0..50).map(|i| {
            let (app, post) = (&app, post.clone());
            async move { like(app, &post, &format!("u{round}x{i}")).await }
        });
        for answer in futures_util::future::join_all(likes).await {
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
    }
    let post_uuid = Uuid::parse_str(&post).expect("uuid");
    let saved = testkit::eventually(Duration::from_secs(20), || {
        let pool = app.pool.clone();
        async move {
            let conn = pool.get().await.ok()?;
            let row = conn
                .query_opt(
                    "SELECT version FROM snapshots WHERE stream_id = $1",
                    &[&post_uuid],
                )
                .await
                .ok()??;
            Some(row.get::<_, i64>(0))
        }
    })
    .await
    .expect("a snapshot is saved");
    assert!(saved >= 1_000, "snapshot at version {saved}");
    let (pool, schema, topic, brokers) = (
        app.pool.clone(),
        app.schema.clone(),
        app.topic.clone(),
        app.brokers.clone(),
    );
    app.stop().await;

    // Three restarts: with the snapshot as saved, with its layout changed,
    // with its bytes broken. Each must answer exactly as a full fold would.
    let conn = pool.get().await.expect("connection");
    // The broken one also claims a version no later snapshot can replace.
    let broken = format!(
        "UPDATE snapshots SET schema = {}, version = 9000000, data = '\\x0000'::bytea",
        domain::SNAPSHOT_SCHEMA
    );
    for (case, tamper) in [
        ("as saved", ""),
        (
            "another layout",
            "UPDATE snapshots SET schema = schema + 100",
        ),
        ("broken bytes", broken.as_str()),
    ] {
        if !tamper.is_empty() {
            conn.batch_execute(tamper).await.expect("tamper");
        }
        let app = spawn_app_on(pool.clone(), schema.clone(), topic.clone(), brokers.clone()).await;
        // A like already given is a no-op at the current version; a new one
        // appends the next version.
        let head: u64 = 1
            + 1_050
            + 2 * ["as saved", "another layout", "broken bytes"]
                .iter()
                .position(|c| *c == case)
                .expect("case") as u64;
        let again = like(&app, &post, "u3x7").await;
        assert_eq!(again.status, StatusCode::OK, "{case}: {}", again.body);
        assert_eq!(
            again.json()["version"],
            head,
            "{case}: a repeated like is a no-op"
        );
        let fresh = like(&app, &post, &format!("late-{case}").replace(' ', "-")).await;
        assert_eq!(fresh.json()["version"], head + 1, "{case}: {}", fresh.body);
        let liker = format!("u20x4{}", (head - 1_051) / 2);
        let unlike = app
            .send(
                Method::DELETE,
                &format!("/posts/{post}/likes"),
                Some(&liker),
                &[],
                None,
            )
            .await;
        assert_eq!(
            unlike.json()["version"],
            head + 2,
            "{case}: {}",
            unlike.body
        );
        let text = metrics(&app).await;
        let outcome = match case {
            "as saved" => "used",
            "another layout" => "other_layout",
            _ => "unreadable",
        };
        assert_eq!(
            metric(
                &text,
                &format!("sourcegram_snapshot_loads_total{{outcome=\"{outcome}\"}}")
            ),
            1,
            "{case}: {text}"
        );
        app.stop().await;
    }
}

/// A batch whose append the server rolls back (here: cut off by the statement
/// timeout behind a lock on the events table) answers each write on its own:
/// the like that would have appended is 503, a batch-mate refused for not
/// being the author keeps its 403.
#[tokio::test]
async fn a_failed_append_keeps_each_refusals_own_answer() {
    let limits = command_host::WriteLimits::for_stale_window(Duration::from_secs(8));
    let (app, pool) = support::spawn_app_with_limits("hot", limits).await;
    let post = app.create_post("alice", "hello").await;
    let mut locker = pool.get().await.expect("connection");
    let lock = locker.client().transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE")
        .await
        .expect("lock");
    // The first like holds the post's slot while its append waits on the lock;
    // the next two queue behind it and form one batch.
    let first = tokio::spawn({
        let (app, post) = (std::sync::Arc::clone(&app), post.clone());
        async move { app.like(&post, "dave").await }
    });
    tokio::time::sleep(limits.write_deadline / 4).await;
    let like = tokio::spawn({
        let (app, post) = (std::sync::Arc::clone(&app), post.clone());
        async move { app.like(&post, "bob").await }
    });
    let edit = tokio::spawn({
        let (app, post) = (std::sync::Arc::clone(&app), post.clone());
        async move { app.edit_message(&post, "carol", "not mine").await }
    });
    let (first, like, edit) = (
        first.await.expect("first"),
        like.await.expect("like"),
        edit.await.expect("edit"),
    );
    lock.rollback().await.expect("unlock");
    assert_eq!(
        first.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        first.body
    );
    assert_eq!(
        like.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        like.body
    );
    assert_eq!(edit.status, StatusCode::FORBIDDEN, "{}", edit.body);
}
