//! The command host over HTTP, against real PostgreSQL and a real broker: every
//! command and status code of the API, identity, conditional and idempotent
//! writes, and hostile input.

mod support;

use domain::{PostEvent, PostId, Version};
use event_store::EventStore;
use hyper::{Method, StatusCode};
use serde_json::json;
use support::{TestApp, ok_version, spawn_app};

fn assert_problem(answer: &support::Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    let body = answer.json();
    assert_eq!(body["status"], status.as_u16());
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    assert!(answer.header("x-request-id").is_some());
}

#[tokio::test]
async fn every_command_succeeds_with_the_documented_status_and_shape() {
    let app = spawn_app().await;

    let created = app.create("alice", "  hello world  ").await;
    assert_eq!(created.status, StatusCode::CREATED);
    let body = created.json();
    let post = body["id"].as_str().expect("id").to_owned();
    assert_eq!(body["version"], 1);
    assert_eq!(
        created.header("location"),
        Some(format!("/posts/{post}").as_str())
    );
    assert!(created.header("x-request-id").is_some());

    assert_eq!(
        ok_version(&app.edit_message(&post, "alice", "edited").await),
        2
    );

    // A repeated like, and an unlike of a post not liked, change nothing.
    assert_eq!(ok_version(&app.like(&post, "bob").await), 3);
    assert_eq!(ok_version(&app.like(&post, "bob").await), 3);
    assert_eq!(ok_version(&app.unlike(&post, "bob").await), 4);
    assert_eq!(ok_version(&app.unlike(&post, "carol").await), 4);

    let commented = app.comment(&post, "carol", "nice").await;
    assert_eq!(commented.status, StatusCode::CREATED);
    let comment = commented.json();
    assert_eq!(comment["id"], post.as_str());
    assert_eq!(comment["version"], 5);
    let cid = comment["comment_id"]
        .as_str()
        .expect("comment_id")
        .to_owned();

    let comment_edited = app.edit_comment(&post, &cid, "carol", "very nice").await;
    assert_eq!(comment_edited.status, StatusCode::OK);
    let removed = app.remove_comment(&post, &cid, "alice").await;
    assert_eq!(
        removed.status,
        StatusCode::OK,
        "the post's author may remove a comment"
    );
    assert_eq!(ok_version(&app.delete_post(&post, "alice").await), 8);

    let events = app.history(&post).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        PostEvent::TYPES,
        "an event of every type, in the order the commands ran"
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["version"], i as u64 + 1);
        assert_eq!(event["stream_id"], post.as_str());
        assert_eq!(event["stream_type"], "post");
        assert_eq!(event["schema"], 1);
    }
    assert_eq!(
        events[0]["data"]["message"], "hello world",
        "messages are stored trimmed"
    );
    assert_eq!(events[0]["metadata"]["user"], "alice");
    assert_eq!(events[2]["data"]["user"], "bob");
    app.stop().await;
}

#[tokio::test]
async fn refusals_carry_their_status_and_change_nothing() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "mine").await;
    let unknown = PostId::from_uuid(uuid::Uuid::new_v4());

    let cases: Vec<(support::Answer, StatusCode)> = vec![
        (app.create("alice", "   ").await, StatusCode::BAD_REQUEST),
        (
            app.create("alice", &"x".repeat(2_001)).await,
            StatusCode::BAD_REQUEST,
        ),
        (
            app.create("alice", "bell\u{7}").await,
            StatusCode::BAD_REQUEST,
        ),
        (
            app.edit_message(&post, "mallory", "pwned").await,
            StatusCode::FORBIDDEN,
        ),
        (
            app.delete_post(&post, "mallory").await,
            StatusCode::FORBIDDEN,
        ),
        (
            app.edit_message(unknown, "alice", "x").await,
            StatusCode::NOT_FOUND,
        ),
        (app.like(unknown, "bob").await, StatusCode::NOT_FOUND),
        (
            app.edit_comment(&post, uuid::Uuid::new_v4(), "bob", "x")
                .await,
            StatusCode::NOT_FOUND,
        ),
        (
            app.get_as(&format!("/posts/{unknown}/events"), "bob").await,
            StatusCode::NOT_FOUND,
        ),
        (
            app.get_as("/posts/not-a-uuid/events", "bob").await,
            StatusCode::BAD_REQUEST,
        ),
        (app.get_as("/nowhere", "bob").await, StatusCode::NOT_FOUND),
        (
            app.call_as(Method::PATCH, "/posts", "bob").await,
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (answer, status) in &cases {
        assert_problem(answer, *status);
    }
    let not_allowed = &cases.last().expect("the 405 case").0;
    assert_eq!(
        not_allowed.header("allow"),
        Some("POST"),
        "405 names what is allowed"
    );
    assert_eq!(
        app.history(&post).await.len(),
        1,
        "refused commands appended nothing"
    );

    let cid = app.add_comment(&post, "bob", "hi").await;
    let edit_other = app
        .edit_comment(&post, &cid, "alice", "edited by post author")
        .await;
    assert_problem(&edit_other, StatusCode::FORBIDDEN);
    let remove_third = app.remove_comment(&post, &cid, "carol").await;
    assert_problem(&remove_third, StatusCode::FORBIDDEN);

    let deleted = app.delete_post(&post, "alice").await;
    assert_eq!(deleted.status, StatusCode::OK);
    for answer in [
        app.like(&post, "bob").await,
        app.edit_message(&post, "alice", "back").await,
        app.comment(&post, "bob", "hello?").await,
        app.delete_post(&post, "alice").await,
    ] {
        assert_problem(&answer, StatusCode::GONE);
    }
    assert_eq!(app.history(&post).await.len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn identity_comes_only_from_a_valid_token() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "hello").await;
    let path = format!("/posts/{post}/likes");

    let missing = app.send(Method::POST, &path, None, &[], None).await;
    assert_problem(&missing, StatusCode::UNAUTHORIZED);
    let expired = format!("Bearer {}", app.expired_token("bob"));
    let forged_key = platform::auth::TokenKey::new(b"not the secret");
    let forged = forged_key.mint(
        &domain::UserId::parse("bob").expect("valid"),
        domain::Timestamp::from_unix_millis(i64::MAX / 2),
    );
    let forged = format!("Bearer {forged}");
    let tampered = format!("Bearer {}", app.token("bob").replacen("bob", "alice", 1));
    for authorization in [&expired, &forged, &tampered, "Basic Ym9iOmJvYg=="] {
        let headers = [("authorization", authorization)];
        let answer = app.send(Method::POST, &path, None, &headers, None).await;
        assert_problem(&answer, StatusCode::UNAUTHORIZED);
    }

    // A body cannot name the actor: the unknown field is refused outright.
    let answer = app
        .put_json(
            &format!("/posts/{post}/message"),
            "mallory",
            json!({"message": "x", "author": "alice"}),
        )
        .await;
    assert_problem(&answer, StatusCode::BAD_REQUEST);
    assert_eq!(app.history(&post).await.len(), 1);

    for open in ["/healthz", "/metrics"] {
        assert_eq!(app.get(open).await.status, StatusCode::OK, "{open}");
    }
    app.stop().await;
}

#[tokio::test]
async fn one_hundred_concurrent_likes_give_exactly_one_hundred_events() {
    let app = std::sync::Arc::new(spawn_app().await);
    let post = app.create_post("alice", "like me").await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (app, post) = (std::sync::Arc::clone(&app), post.clone());
        tasks.push(tokio::spawn(async move {
            app.like(&post, &format!("user{i}")).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("task"), StatusCode::OK);
    }
    let events = app.history(&post).await;
    assert_eq!(events.len(), 101);
    let versions: Vec<u64> = events[1..]
        .iter()
        .map(|e| e["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(versions, (2..=101).collect::<Vec<_>>());
    assert!(events[1..].iter().all(|e| e["type"] == "PostLiked"));
    let mut users: Vec<&str> = events[1..]
        .iter()
        .map(|e| e["data"]["user"].as_str().expect("user"))
        .collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), 100);
}

#[tokio::test]
async fn if_match_makes_a_write_conditional() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "v1").await;

    let stale = app.edit_if_match(&post, "alice", "\"7\"", "v2").await;
    assert_problem(&stale, StatusCode::PRECONDITION_FAILED);
    let fresh = app.edit_if_match(&post, "alice", "\"1\"", "v2").await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert_eq!(fresh.header("etag"), Some("\"2\""));
    let replay = app.edit_if_match(&post, "alice", "\"1\"", "v2").await;
    assert_problem(&replay, StatusCode::PRECONDITION_FAILED);
    let garbage = app.edit_if_match(&post, "alice", "seven", "v2").await;
    assert_problem(&garbage, StatusCode::BAD_REQUEST);
    assert_eq!(app.history(&post).await.len(), 2);
    app.stop().await;
}

/// `user` creates a post under the idempotency key `create-1`.
async fn create_once(app: &TestApp, user: &str) -> support::Answer {
    let body = json!({"message": "once"});
    app.send_keyed(Method::POST, "/posts", user, "create-1", Some(body))
        .await
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer_even_after_a_restart() {
    let app = spawn_app().await;
    let first = create_once(&app, "alice").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = create_once(&app, "alice").await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body, first.body);
    assert_eq!(second.header("location"), first.header("location"));
    assert_eq!(second.header("idempotent-replayed"), Some("true"));

    let other_body = Some(json!({"message": "twice"}));
    let mismatch = app
        .send_keyed(Method::POST, "/posts", "alice", "create-1", other_body)
        .await;
    assert_problem(&mismatch, StatusCode::UNPROCESSABLE_ENTITY);

    // The same key from another user is another key.
    let bobs = create_once(&app, "bob").await;
    assert_eq!(bobs.status, StatusCode::CREATED);
    assert_ne!(bobs.json()["id"], first.json()["id"]);

    // A refused request is answered the same on retry.
    let post = first.json()["id"].as_str().expect("id").to_owned();
    let steal = || {
        let path = format!("/posts/{post}");
        let app = &app;
        async move {
            app.send_keyed(Method::DELETE, &path, "mallory", "steal-1", None)
                .await
        }
    };
    let stolen = steal().await;
    assert_problem(&stolen, StatusCode::FORBIDDEN);
    let stolen_again = steal().await;
    assert_eq!(
        (stolen_again.status, stolen_again.body.clone()),
        (stolen.status, stolen.body.clone())
    );

    let likes = format!("/posts/{post}/likes");
    let like = app
        .send_keyed(Method::POST, &likes, "bob", "like-1", None)
        .await;
    assert_eq!(like.status, StatusCode::OK);

    let restarted = app.restart().await;
    let after_restart = create_once(&restarted, "alice").await;
    assert_eq!(
        (after_restart.status, after_restart.body.clone()),
        (StatusCode::CREATED, first.body.clone())
    );
    let like_after = restarted
        .send_keyed(Method::POST, &likes, "bob", "like-1", None)
        .await;
    assert_eq!(like_after.body, like.body);
    assert_eq!(
        restarted.history(&post).await.len(),
        2,
        "created and liked once each"
    );
    let bad_key = restarted
        .send_keyed(Method::POST, &likes, "bob", "", None)
        .await;
    assert_problem(&bad_key, StatusCode::BAD_REQUEST);
    restarted.stop().await;
}

#[tokio::test]
async fn hostile_bodies_get_4xx_and_the_host_keeps_serving() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "target").await;
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut big = b"{\"text\":\"".to_vec();
    big.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    big.extend(b"\"}");
    let cases: Vec<(Vec<u8>, Option<&str>, StatusCode)> = vec![
        (b"{\"text\":".to_vec(), None, StatusCode::BAD_REQUEST),
        (b"not json".to_vec(), None, StatusCode::BAD_REQUEST),
        (br#"{"text": 42}"#.to_vec(), None, StatusCode::BAD_REQUEST),
        (
            br#"{"text": ["a"]}"#.to_vec(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (br#"{}"#.to_vec(), None, StatusCode::BAD_REQUEST),
        (
            br#"{"text":"ok","extra":1}"#.to_vec(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            b"{\"text\":\"\xff\xfe\"}".to_vec(),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (nested.into_bytes(), None, StatusCode::BAD_REQUEST),
        (big, None, StatusCode::PAYLOAD_TOO_LARGE),
        (
            br#"{"text":"ok"}"#.to_vec(),
            Some("text/plain"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            br#"{"text":"ok"}"#.to_vec(),
            Some("application/xml"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    let path = format!("/posts/{post}/comments");
    for (body, content_type, status) in cases {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| ("content-type", c))
            .into_iter()
            .collect();
        let answer = app
            .send(Method::POST, &path, Some("bob"), &headers, Some(body))
            .await;
        assert_problem(&answer, status);
    }
    let no_type = app
        .send(
            Method::POST,
            "/posts",
            Some("bob"),
            &[("content-type", "")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(no_type.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let sql = "'); DROP TABLE events; -- \u{1F600} مرحبا";
    let stored = app.comment(&post, "bob", sql).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.body);
    let events = app.history(&post).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["data"]["text"], sql, "stored verbatim");
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn readyz_and_metrics_report_the_dependencies_and_the_work() {
    let app = spawn_app().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    app.create_post("alice", "counted").await;
    let post = PostId::parse(&app.create_post("alice", "counted too").await).expect("uuid");
    assert_eq!(
        app.store
            .load_stream(post, Version::new(1))
            .await
            .expect("load")
            .len(),
        1
    );
    let metrics = app.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    for line in [
        "sourcegram_events_appended_total 2",
        "http_requests_total{route=\"POST /posts\",status=\"201\"} 2",
        "# TYPE http_request_duration_seconds histogram",
        "sourcegram_outbox_unpublished",
    ] {
        assert!(
            metrics.body.contains(line),
            "metrics lack {line:?}:\n{}",
            metrics.body
        );
    }
    // Once the relay published both events, each one's wait in the outbox is
    // in the histogram.
    let delays = |body: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix("sourcegram_outbox_delay_seconds_count "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut body = String::new();
    while std::time::Instant::now() < deadline {
        body = app.get("/metrics").await.body;
        if delays(&body) >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(delays(&body) >= 2, "no outbox delays observed:\n{body}");
    app.stop().await;
}

/// Ids the host chooses (posts, comments, events) are UUIDv7: time-ordered, so
/// the primary-key indexes they go into grow at one end instead of at random
/// pages.
#[tokio::test]
async fn ids_the_host_chooses_are_time_ordered() {
    let app = spawn_app().await;
    let first = app.create_post("alice", "first").await;
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    let second = app.create_post("alice", "second").await;
    let comment = app.add_comment(&second, "bob", "hi").await;
    let events = app.history(&second).await;
    let mut ids = vec![first.clone(), second.clone(), comment];
    ids.extend(
        events
            .iter()
            .map(|e| e["event_id"].as_str().expect("event id").to_owned()),
    );
    for id in &ids {
        let uuid = uuid::Uuid::parse_str(id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7, "{id} is not a UUIDv7");
    }
    assert!(
        uuid::Uuid::parse_str(&first).expect("uuid")
            < uuid::Uuid::parse_str(&second).expect("uuid"),
        "{first} was created before {second}"
    );
}

/// `GET /posts/{id}/events` answers in pages of at most 1,000 events, each
/// linking the next; following the links reads the whole history once.
#[tokio::test]
async fn the_history_is_paginated_and_every_page_links_the_next() {
    let app = spawn_app().await;
    let post = app.create_post("alice", "a long history").await;
    for i in 0..6 {
        ok_version(&app.like(&post, &format!("fan{i}")).await);
    }
    let get = |path: String| {
        let app = &app;
        async move { app.get_as(&path, "auditor").await }
    };
    // Pages of 3: versions 1-3, 4-6, 7, then no next.
    let mut versions = Vec::new();
    let mut next = Some(format!("/posts/{post}/events?limit=3"));
    let mut pages = 0;
    while let Some(path) = next {
        let answer = get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let body = answer.json();
        let events = body["events"].as_array().expect("events").clone();
        assert!(events.len() <= 3, "a page holds at most the limit");
        versions.extend(
            events
                .iter()
                .map(|e| e["version"].as_u64().expect("version")),
        );
        next = body["next"].as_str().map(str::to_owned);
        pages += 1;
    }
    assert_eq!(versions, (1..=7).collect::<Vec<u64>>());
    assert_eq!(pages, 3);
    // Without parameters: from the start, up to 1,000, and no next here.
    let whole = get(format!("/posts/{post}/events")).await.json();
    assert_eq!(whole["events"].as_array().expect("events").len(), 7);
    assert!(whole["next"].is_null());
    // From the middle; past the end is an empty page, not 404.
    let tail = get(format!("/posts/{post}/events?from_version=6"))
        .await
        .json();
    assert_eq!(tail["events"][0]["version"], 6);
    let past = get(format!("/posts/{post}/events?from_version=50")).await;
    assert_eq!(past.status, StatusCode::OK);
    assert_eq!(past.json()["events"].as_array().expect("events").len(), 0);
    // The page size is capped, and parameters are checked.
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "from_version=0",
        "from_version=-1",
        "page=2",
    ] {
        let answer = get(format!("/posts/{post}/events?{bad}")).await;
        assert_problem(&answer, StatusCode::BAD_REQUEST);
    }
    let unknown = uuid::Uuid::now_v7();
    let answer = get(format!("/posts/{unknown}/events?from_version=3")).await;
    assert_problem(&answer, StatusCode::NOT_FOUND);
}

/// A signed-in client that sends its headers and then trickles its body gets
/// 408 once the body read timeout (2 s here) is up, and nothing is written.
#[tokio::test]
async fn a_body_that_trickles_in_is_answered_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = support::spawn_app().await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /posts HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"mess",
        app.token("alice")
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered before the test gave up")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1_500));
    let mut conn = app.pool.get().await.expect("connection");
    let events: i64 = conn
        .client()
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(events, 0, "nothing was written");
}

/// With the broker unreachable the command host stays ready (writes wait in
/// the outbox), says so, and names no internal address.
#[tokio::test]
async fn the_command_host_stays_ready_while_kafka_is_down() {
    let (pool, schema) = testkit::fresh_pg_schema("cmd").await;
    let app = support::spawn_app_on(
        pool,
        schema,
        "post-events".to_owned(),
        "127.0.0.1:1".to_owned(),
    )
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert!(ready.body.contains("kafka unavailable"), "{}", ready.body);
    assert!(!ready.body.contains("127.0.0.1"), "{}", ready.body);
    app.create_post("alice", "written while the broker is down")
        .await;
}
