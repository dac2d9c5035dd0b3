//! The query host over HTTP against a seeded read model in real PostgreSQL:
//! every query and filter, pagination under concurrent inserts, ETag/304,
//! read-your-writes and bad input.

use std::time::{Duration, Instant, SystemTime};

use domain::{Timestamp, UserId};
use hyper::StatusCode;
use platform::auth::TokenKey;
use platform::http::ServerConfig;
use platform::metrics::Metrics;
use plumbing::pg::PgPool;
use query_host::{QueryHostDeps, run};
use read_model::SchemaName;
use serde_json::Value;
use testkit::http::{Answer, HttpClient};
use uuid::Uuid;

const SECRET: &[u8] = b"query-test-secret";
const BASE: i64 = 1_795_428_000_000;

struct App {
    pool: PgPool,
    rm: SchemaName,
    nt: SchemaName,
    client: HttpClient,
}

async fn spawn_app(min_version_wait: Duration) -> App {
    let app = spawn_app_without_tables(min_version_wait).await;
    app.create_tables().await;
    app
}

/// The host on schemas whose tables nobody has created yet: the projection
/// host creates them, the query host never does.
async fn spawn_app_without_tables(min_version_wait: Duration) -> App {
    let (pool, _) = testkit::fresh_pg_schema("qh").await;
    let rm = SchemaName::parse(&testkit::unique_name("rm")).expect("schema name");
    let nt = SchemaName::parse(&testkit::unique_name("nt")).expect("schema name");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let deps = QueryHostDeps {
        pool: pool.clone(),
        read_model_schema: rm.clone(),
        notifications_schema: nt.clone(),
        token_key: Some(TokenKey::new(SECRET)),
        min_version_wait,
        server: ServerConfig::default(),
        metrics: Metrics::new(),
    };
    tokio::spawn(run(listener, deps, std::future::pending()));
    App {
        pool,
        rm,
        nt,
        client: HttpClient::new(addr),
    }
}

impl App {
    /// What the projection host does when it starts.
    async fn create_tables(&self) {
        let conn = self.pool.get().await.expect("conn");
        read_model::schema::create_read_model(&conn, &self.rm)
            .await
            .expect("tables");
        read_model::schema::create_notifications(&conn, &self.nt)
            .await
            .expect("tables");
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        self.client.get(path, headers).await
    }

    async fn post(&self, author: &str, at: i64, likes: i32, comments: i32, version: i64) -> Uuid {
        let id = Uuid::new_v4();
        let conn = self.pool.get().await.expect("conn");
        let sql = format!(
            "INSERT INTO {}.posts (id, author, message, likes, comment_count, created_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            self.rm
        );
        let created_at = SystemTime::from(Timestamp::from_unix_millis(at));
        let message = format!("post by {author}");
        conn.execute(
            &sql,
            &[
                &id,
                &author,
                &message,
                &likes,
                &comments,
                &created_at,
                &version,
            ],
        )
        .await
        .expect("seed post");
        id
    }

    async fn comment(&self, post: Uuid, author: &str, at: i64, removed: bool) -> Uuid {
        let id = Uuid::new_v4();
        let conn = self.pool.get().await.expect("conn");
        let sql = format!(
            "INSERT INTO {}.comments (post_id, id, author, text, created_at, removed) VALUES ($1, $2, $3, 'c', $4, $5)",
            self.rm
        );
        let created_at = SystemTime::from(Timestamp::from_unix_millis(at));
        conn.execute(&sql, &[&post, &id, &author, &created_at, &removed])
            .await
            .expect("seed comment");
        id
    }

    async fn sql(&self, statement: &str, post: Uuid) {
        let conn = self.pool.get().await.expect("conn");
        conn.execute(&statement.replace("{rm}", self.rm.as_str()), &[&post])
            .await
            .expect("sql");
    }

    fn token(&self, user: &str) -> String {
        let in_a_minute =
            Timestamp::from_unix_millis(platform::clock::now().unix_millis() + 60_000);
        TokenKey::new(SECRET).mint(&UserId::parse(user).expect("valid"), in_a_minute)
    }
}

fn ids(answer: &Answer, list: &str) -> Vec<String> {
    answer.json()[list]
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}

fn strings(ids: &[Uuid]) -> Vec<String> {
    ids.iter().map(Uuid::to_string).collect()
}

fn assert_problem(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert!(answer.json()["detail"].is_string());
}

#[tokio::test]
async fn lists_newest_first_and_filters_combine() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let a1 = app.post("alice", BASE + 1_000, 12, 0, 1).await;
    let b1 = app.post("bob", BASE + 2_000, 3, 2, 1).await;
    let a2 = app.post("alice", BASE + 3_000, 0, 1, 1).await;
    let a3 = app.post("alice", BASE + 4_000, 20, 5, 1).await;
    let deleted = app.post("alice", BASE + 5_000, 50, 5, 2).await;
    app.sql(
        "UPDATE {rm}.posts SET deleted_at = now() WHERE id = $1",
        deleted,
    )
    .await;

    let all = app.get("/posts", &[]).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(all.header("cache-control"), Some("no-store"));
    assert_eq!(ids(&all, "posts"), strings(&[a3, a2, b1, a1]));
    assert!(all.json()["next_cursor"].is_null());
    let first = &all.json()["posts"][0];
    for field in [
        "id",
        "author",
        "message",
        "likes",
        "comment_count",
        "created_at",
        "edited_at",
        "version",
    ] {
        assert!(first.get(field).is_some(), "post lacks {field}: {first}");
    }
    assert_eq!(first["created_at"], "2026-11-23T10:00:04.000Z");

    for (query, expected) in [
        ("author=alice", vec![a3, a2, a1]),
        ("min_likes=10", vec![a3, a1]),
        ("has_comments=true", vec![a3, a2, b1]),
        ("has_comments=false", vec![a1]),
        ("author=alice&min_likes=10&has_comments=true", vec![a3]),
        ("author=nobody", vec![]),
    ] {
        let answer = app.get(&format!("/posts?{query}"), &[]).await;
        assert_eq!(ids(&answer, "posts"), strings(&expected), "{query}");
    }
}

/// A post shows its first 100 comments and a cursor to the rest, which the
/// comments route pages through: no answer grows with the post's comments.
#[tokio::test]
async fn a_post_shows_its_first_hundred_comments_and_pages_the_rest() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let post = app.post("alice", BASE, 0, 103, 104).await;
    let mut comments = Vec::new();
    for i in 0..103 {
        comments.push(app.comment(post, "bob", BASE + 10 + i, false).await);
    }
    // Removed comments are neither shown nor counted towards the 100.
    app.comment(post, "carol", BASE + 5, true).await;
    for path in [
        format!("/posts/{post}"),
        format!("/posts/{post}?min_version=104"),
    ] {
        let answer = app.get(&path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        assert_eq!(
            ids(&answer, "comments"),
            strings(&comments[..100]),
            "{path}"
        );
        let cursor = answer.json()["comments_next_cursor"]
            .as_str()
            .expect("more comments")
            .to_owned();
        let rest = app
            .get(&format!("/posts/{post}/comments?cursor={cursor}"), &[])
            .await;
        assert_eq!(ids(&rest, "comments"), strings(&comments[100..]), "{path}");
        assert!(rest.json()["next_cursor"].is_null());
    }
}

#[tokio::test]
async fn pagination_has_no_duplicates_or_gaps_while_posts_arrive() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let mut expected: Vec<(i64, Uuid)> = Vec::new();
    for i in 0..25 {
        // Two posts share each timestamp, so the id breaks ties.
        let at = (i / 2) * 1_000;
        expected.push((at, app.post("alice", BASE + at, 0, 0, 1).await));
    }
    expected.sort_by(|a, b| b.cmp(a));
    let mut seen = Vec::new();
    let mut path = "/posts?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let answer = app.get(&path, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        seen.extend(ids(&answer, "posts"));
        pages += 1;
        // Newer posts arrive between pages; they belong before the first page.
        app.post("bob", BASE + 100_000 + pages, 0, 0, 1).await;
        match answer.json()["next_cursor"].as_str() {
            Some(cursor) => path = format!("/posts?limit=10&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<Uuid> = expected.iter().map(|(_, id)| *id).collect();
    assert_eq!(seen, strings(&expected));
}

#[tokio::test]
async fn one_post_with_live_comments_etag_and_304() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let post = app.post("alice", BASE, 2, 2, 7).await;
    let c1 = app.comment(post, "bob", BASE + 10, false).await;
    app.comment(post, "carol", BASE + 20, true).await;
    let c3 = app.comment(post, "dave", BASE + 30, false).await;
    app.sql(
        "UPDATE {rm}.comments SET text = 'edited', edited_at = created_at + interval '5 seconds' WHERE id = $1",
        c3,
    )
    .await;

    let answer = app.get(&format!("/posts/{post}"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("etag"), Some("\"7\""));
    assert_eq!(answer.header("cache-control"), Some("no-cache"));
    let body = answer.json();
    assert_eq!(
        (body["likes"].clone(), body["version"].clone()),
        (Value::from(2), Value::from(7))
    );
    assert_eq!(ids(&answer, "comments"), strings(&[c1, c3]));
    assert!(body["comments_next_cursor"].is_null(), "all shown");
    // The post's comments read with the post are the ones the comments route
    // lists, field for field.
    let listed = app.get(&format!("/posts/{post}/comments"), &[]).await;
    assert_eq!(body["comments"], listed.json()["comments"]);
    assert_eq!(body["comments"][1]["author"], "dave");
    assert_eq!(body["comments"][1]["text"], "edited");
    assert_eq!(body["comments"][1]["edited_at"], "2026-11-23T10:00:05.030Z");
    for field in ["id", "author", "text", "created_at", "edited_at"] {
        assert!(
            body["comments"][0].get(field).is_some(),
            "comment lacks {field}"
        );
    }

    let unchanged = app
        .get(&format!("/posts/{post}"), &[("if-none-match", "\"7\"")])
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());
    assert_eq!(unchanged.header("etag"), Some("\"7\""));
    let changed = app
        .get(&format!("/posts/{post}"), &[("if-none-match", "\"6\"")])
        .await;
    assert_eq!(changed.status, StatusCode::OK);

    let comments = app
        .get(&format!("/posts/{post}/comments?limit=1"), &[])
        .await;
    assert_eq!(ids(&comments, "comments"), strings(&[c1]));
    let cursor = comments.json()["next_cursor"]
        .as_str()
        .expect("more")
        .to_owned();
    let rest = app
        .get(
            &format!("/posts/{post}/comments?limit=1&cursor={cursor}"),
            &[],
        )
        .await;
    assert_eq!(ids(&rest, "comments"), strings(&[c3]));
    assert!(rest.json()["next_cursor"].is_null());
    let cross = app.get(&format!("/posts?cursor={cursor}"), &[]).await;
    assert_problem(&cross, StatusCode::BAD_REQUEST);

    app.sql(
        "UPDATE {rm}.posts SET deleted_at = now() WHERE id = $1",
        post,
    )
    .await;
    // The deleted post is gone; an unknown one was never there.
    let unknown = Uuid::new_v4();
    for (post, status) in [(post, StatusCode::GONE), (unknown, StatusCode::NOT_FOUND)] {
        for path in [format!("/posts/{post}"), format!("/posts/{post}/comments")] {
            assert_problem(&app.get(&path, &[]).await, status);
        }
    }
}

#[tokio::test]
async fn min_version_waits_for_the_projection_then_says_whether_it_is_fresh() {
    let app = spawn_app(Duration::from_millis(1_500)).await;
    let post = app.post("alice", BASE, 0, 0, 1).await;

    let pool = app.pool.clone();
    let rm = app.rm.clone();
    let projector = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let conn = pool.get().await.expect("conn");
        conn.execute(
            &format!("UPDATE {rm}.posts SET version = 2, likes = 1 WHERE id = $1"),
            &[&post],
        )
        .await
        .expect("update");
        conn.execute(
            "SELECT pg_notify('read_model_changed', $1)",
            &[&format!("{post}:2")],
        )
        .await
        .expect("notify");
    });
    let (fresh, version, took) = read_at_least(&app, post, 2).await;
    assert_eq!((fresh.as_deref(), version), (Some("true"), Value::from(2)));
    assert!(
        took < Duration::from_millis(1_400),
        "answered when the change arrived"
    );
    projector.await.expect("projector");

    let (fresh, version, took) = read_at_least(&app, post, 9).await;
    assert_eq!((fresh.as_deref(), version), (Some("false"), Value::from(2)));
    assert!(took >= Duration::from_millis(1_400), "waited for the bound");

    let (fresh, _, _) = read_at_least(&app, post, 1).await;
    assert_eq!(fresh.as_deref(), Some("true"));
}

/// Reads `post` at `min_version` or later: whether the answer says the read
/// model had caught up, the version it read, and how long it took.
async fn read_at_least(
    app: &App,
    post: Uuid,
    min_version: u64,
) -> (Option<String>, Value, Duration) {
    let started = Instant::now();
    let path = format!("/posts/{post}?min_version={min_version}");
    let answer = app.get(&path, &[]).await;
    let body = answer.expect_json(StatusCode::OK);
    let fresh = answer.header("x-read-model-fresh").map(str::to_owned);
    (fresh, body["version"].clone(), started.elapsed())
}

#[tokio::test]
async fn notifications_are_private_to_the_signed_in_user() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let post = Uuid::new_v4();
    let conn = app.pool.get().await.expect("conn");
    let sql = format!(
        "INSERT INTO {}.notifications (event_id, recipient, kind, actor, post_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        app.nt
    );
    let seeds = [
        ("alice", "liked", "bob"),
        ("alice", "commented", "carol"),
        ("bob", "liked", "alice"),
    ];
    for (i, (recipient, kind, actor)) in seeds.iter().enumerate() {
        let at = SystemTime::from(Timestamp::from_unix_millis(BASE + i as i64));
        conn.execute(&sql, &[&Uuid::new_v4(), recipient, kind, actor, &post, &at])
            .await
            .expect("seed");
    }
    let token = format!("Bearer {}", app.token("alice"));
    let mine = app
        .get("/me/notifications?limit=1", &[("authorization", &token)])
        .await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    assert_eq!(mine.header("cache-control"), Some("private, no-store"));
    let body = mine.json();
    assert_eq!(body["notifications"][0]["kind"], "commented");
    assert_eq!(body["notifications"][0]["actor"], "carol");
    let cursor = body["next_cursor"].as_str().expect("more");
    let rest = app
        .get(
            &format!("/me/notifications?cursor={cursor}"),
            &[("authorization", &token)],
        )
        .await;
    let rest = rest.json();
    assert_eq!(rest["notifications"].as_array().expect("list").len(), 1);
    assert_eq!(rest["notifications"][0]["actor"], "bob");

    assert_problem(
        &app.get("/me/notifications", &[]).await,
        StatusCode::UNAUTHORIZED,
    );
    let forged = TokenKey::new(b"other").mint(
        &UserId::parse("alice").expect("valid"),
        Timestamp::from_unix_millis(i64::MAX / 4),
    );
    let forged = format!("Bearer {forged}");
    assert_problem(
        &app.get("/me/notifications", &[("authorization", &forged)])
            .await,
        StatusCode::UNAUTHORIZED,
    );
}

#[tokio::test]
async fn bad_input_is_400_and_the_host_keeps_serving() {
    let app = spawn_app(Duration::from_secs(1)).await;
    for path in [
        "/posts?sort=likes",
        "/posts?limit=-1",
        "/posts?limit=0",
        "/posts?limit=101",
        "/posts?limit=lots",
        "/posts?min_likes=-5",
        "/posts?has_comments=maybe",
        "/posts?author=%00",
        "/posts?cursor=not-a-cursor",
        "/posts?cursor=70317c317c32",
        "/posts/not-a-uuid",
        "/posts/not-a-uuid/comments",
        "/posts?limit=%zz",
    ] {
        assert_problem(&app.get(path, &[]).await, StatusCode::BAD_REQUEST);
    }
    // Well-formed cursors whose instant PostgreSQL cannot hold (found by
    // fuzzing: they were 503, the database refusing the parameter).
    let hex = |plain: String| {
        plain
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    for millis in ["-236273862771077", "9300000000000000", "-210866803200001"] {
        let id = "0192f0c18a5e7c3b9a413f2d5e6a7b80";
        let posts = hex(format!("p1|{millis}|{id}"));
        assert_problem(
            &app.get(&format!("/posts?cursor={posts}"), &[]).await,
            StatusCode::BAD_REQUEST,
        );
    }
    // HEAD is GET without the body; other methods are 405 naming both.
    let head = app
        .client
        .send(hyper::Method::HEAD, "/posts", &[], None)
        .await;
    assert_eq!((head.status, head.body.as_str()), (StatusCode::OK, ""));
    let refused = app
        .client
        .send(hyper::Method::PUT, "/posts", &[], None)
        .await;
    assert_eq!(refused.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(refused.header("allow"), Some("GET, HEAD"));
    assert_problem(&app.get("/nowhere", &[]).await, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", &[]).await.status, StatusCode::OK);
    let metrics = app.get("/metrics", &[]).await;
    assert!(
        metrics
            .body
            .contains("http_requests_total{route=\"unmatched\",status=\"400\"}"),
        "{}",
        metrics.body
    );
}

/// A read model analyzed while it held three posts, then grown to 20,000: the
/// host's connections planned their reads back then, and must still find a
/// post by its key rather than read the whole table for every request.
#[tokio::test]
async fn reads_find_posts_by_key_after_the_table_outgrew_its_statistics() {
    let app = spawn_app(Duration::from_secs(1)).await;
    let admin = app.pool.get().await.expect("conn");
    let mut posts = Vec::new();
    for (i, author) in ["alice", "bob", "carol"].into_iter().enumerate() {
        posts.push(app.post(author, BASE + i as i64, 0, 0, 1).await);
    }
    testkit::analyze_and_hold_statistics(&admin, app.rm.as_str(), "posts").await;
    // One request at a time, so they reuse a connection: after five, it runs
    // generic plans made for a table of three rows.
    for _ in 0..20 {
        let answer = app.get(&format!("/posts/{}", posts[0]), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    admin
        .batch_execute(&format!(
            "INSERT INTO {}.posts (id, author, message, created_at, version)
             SELECT gen_random_uuid(), 'filler', 'm', now(), 1 FROM generate_series(1, 20000)",
            app.rm
        ))
        .await
        .expect("grow the table");
    for _ in 0..20 {
        let answer = app.get(&format!("/posts/{}", posts[1]), &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    // Forty requests, each reading the table once, by index or not.
    testkit::assert_read_by_key(&admin, app.rm.as_str(), "posts", 40, 20_000).await;
}

/// Before the projection host has made the tables, the query host says so
/// (503, and /readyz names them) and creates nothing itself.
#[tokio::test]
async fn before_the_tables_exist_reads_are_503_and_nothing_is_created() {
    let app = spawn_app_without_tables(Duration::from_millis(100)).await;
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    assert!(
        ready.body.contains(&format!("{}.posts", app.rm)),
        "{}",
        ready.body
    );
    let posts = app.get("/posts", &[]).await;
    assert_problem(&posts, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        posts.body.contains("not been created yet"),
        "{}",
        posts.body
    );
    let conn = app.pool.get().await.expect("conn");
    let made: i64 = conn
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = ANY($1)",
            &[&vec![app.rm.as_str(), app.nt.as_str()]],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(made, 0, "the query host created a schema");
    // Once the tables are there, it is ready and reads answer.
    app.create_tables().await;
    assert_eq!(app.get("/readyz", &[]).await.status, StatusCode::OK);
    assert_eq!(app.get("/posts", &[]).await.status, StatusCode::OK);
}
