//! The `CommandRecords` contract, written once and run against every adapter:
//! PostgreSQL always, SQL Server when `MSSQL_URL` is set (else a SKIPPED line).

mod support;

use std::sync::Arc;
use std::time::Duration;

use IdempotencyClaim::{Claimed, Completed, InProgress, Mismatch};
use command_host::records::postgres::PostgresCommandRecords;
use command_host::records::{
    AnyCommandRecords, ClaimToken, CommandRecords, IdempotencyClaim, StoredResponse, StreamHead,
};
use domain::{PostId, Timestamp, UserId, Version};
use uuid::Uuid;

/// A window no claim of these tests outlives unless it sleeps past it.
const STALE: Duration = Duration::from_secs(30);
/// A window every claim has outlived after [`outlive`].
const BRIEF: Duration = Duration::from_millis(20);

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid")
}

fn now() -> Timestamp {
    platform::clock::now()
}

fn fresh_key() -> String {
    format!("key-{}", Uuid::new_v4())
}

/// Sleeps past [`BRIEF`], by any clock.
async fn outlive() {
    tokio::time::sleep(BRIEF * 3).await;
}

/// What a claim came to, without the claim's token.
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Claimed,
    Completed(StoredResponse),
    InProgress,
    Mismatch,
}

async fn claim(
    records: &impl CommandRecords,
    who: &str,
    key: &str,
    fingerprint: u8,
    stale_after: Duration,
) -> IdempotencyClaim {
    records
        .claim_idempotency_key(&user(who), key, &[fingerprint; 32], stale_after)
        .await
        .expect("claim")
}

fn got(claim: &IdempotencyClaim) -> Got {
    match claim {
        Claimed(_) => Got::Claimed,
        Completed(response) => Got::Completed(response.clone()),
        InProgress => Got::InProgress,
        Mismatch => Got::Mismatch,
    }
}

/// Asserts what `who` gets for claiming `key` with `fingerprint`; the claim.
async fn expect_claim(
    records: &impl CommandRecords,
    who: &str,
    key: &str,
    fingerprint: u8,
    stale_after: Duration,
    expected: Got,
) -> IdempotencyClaim {
    let claimed = claim(records, who, key, fingerprint, stale_after).await;
    assert_eq!(
        got(&claimed),
        expected,
        "{who} claiming {key} with fingerprint {fingerprint}"
    );
    claimed
}

/// Gives back the key `claim` holds; the call must succeed.
async fn release(records: &impl CommandRecords, who: &str, key: &str, claim: &IdempotencyClaim) {
    records
        .release_idempotency_key(&user(who), key, token(claim))
        .await
        .expect("release");
}

fn token(claim: &IdempotencyClaim) -> ClaimToken {
    match claim {
        Claimed(token) => *token,
        other => panic!("not claimed: {other:?}"),
    }
}

fn response(body: &str) -> StoredResponse {
    StoredResponse {
        status: 201,
        location: Some("/posts/x".to_owned()),
        body: body.to_owned(),
    }
}

async fn claim_complete_and_replay(records: &impl CommandRecords) {
    let key = fresh_key();
    let alice = expect_claim(records, "alice", &key, 1, STALE, Got::Claimed).await;
    expect_claim(records, "alice", &key, 1, STALE, Got::InProgress).await;
    expect_claim(records, "alice", &key, 2, STALE, Got::Mismatch).await;
    // Keys are per user.
    expect_claim(records, "bob", &key, 2, STALE, Got::Claimed).await;
    let answer = response("{\"id\":\"x\",\"version\":1} ✓");
    let held = records
        .complete_idempotency_key(&user("alice"), &key, token(&alice), &answer)
        .await
        .expect("complete");
    assert!(held);
    expect_claim(records, "alice", &key, 1, STALE, Got::Completed(answer)).await;
    expect_claim(records, "alice", &key, 2, STALE, Got::Mismatch).await;
    records.ping().await.expect("ping");
}

async fn release_frees_the_key_and_stale_claims_are_taken_over(records: &impl CommandRecords) {
    let key = fresh_key();
    let first = expect_claim(records, "alice", &key, 1, STALE, Got::Claimed).await;
    release(records, "alice", &key, &first).await;
    expect_claim(records, "alice", &key, 1, STALE, Got::Claimed).await;

    let stale = fresh_key();
    expect_claim(records, "alice", &stale, 1, STALE, Got::Claimed).await;
    outlive().await;
    expect_claim(records, "alice", &stale, 2, BRIEF, Got::Mismatch).await;
    // Taken over, once it is older than the window asked for.
    expect_claim(records, "alice", &stale, 1, BRIEF, Got::Claimed).await;
    expect_claim(records, "alice", &stale, 1, STALE, Got::InProgress).await;
}

/// A claim taken over belongs to its new holder: the old one can neither
/// record its answer nor give the key back.
async fn only_the_holder_completes_or_releases(records: &impl CommandRecords) {
    let key = fresh_key();
    let old = expect_claim(records, "dave", &key, 3, STALE, Got::Claimed).await;
    outlive().await;
    let new = expect_claim(records, "dave", &key, 3, BRIEF, Got::Claimed).await;
    release(records, "dave", &key, &old).await;
    expect_claim(records, "dave", &key, 3, STALE, Got::InProgress).await;
    let held = records
        .complete_idempotency_key(&user("dave"), &key, token(&old), &response("old"))
        .await
        .expect("complete");
    assert!(!held, "the old holder recorded an answer");
    expect_claim(records, "dave", &key, 3, STALE, Got::InProgress).await;
    let held = records
        .complete_idempotency_key(&user("dave"), &key, token(&new), &response("new"))
        .await
        .expect("complete");
    assert!(held);
    expect_claim(
        records,
        "dave",
        &key,
        3,
        STALE,
        Got::Completed(response("new")),
    )
    .await;
}

/// Claims age by the database's clock: no host's clock takes part, so two
/// hosts whose clocks disagree see a claim go stale at the same moment.
async fn claims_age_by_the_database_clock(a: &impl CommandRecords, b: &impl CommandRecords) {
    let key = fresh_key();
    expect_claim(a, "erin", &key, 4, STALE, Got::Claimed).await;
    expect_claim(b, "erin", &key, 4, STALE, Got::InProgress).await;
    expect_claim(a, "erin", &key, 4, STALE, Got::InProgress).await;
    outlive().await;
    expect_claim(b, "erin", &key, 4, BRIEF, Got::Claimed).await;
    expect_claim(a, "erin", &key, 4, BRIEF, Got::InProgress).await;
}

/// Users and keys are compared as written: `BOB` is not `bob`, `K` is not `k`.
async fn users_and_keys_are_case_sensitive(records: &impl CommandRecords) {
    let key = format!("Key-{}", Uuid::new_v4());
    let bob = expect_claim(records, "bob", &key, 5, STALE, Got::Claimed).await;
    let answer = response("bob's");
    records
        .complete_idempotency_key(&user("bob"), &key, token(&bob), &answer)
        .await
        .expect("complete");
    expect_claim(records, "BOB", &key, 5, STALE, Got::Claimed).await;
    expect_claim(records, "bob", &key.to_lowercase(), 5, STALE, Got::Claimed).await;
    expect_claim(records, "bob", &key, 5, STALE, Got::Completed(answer)).await;
}

async fn concurrent_claims_have_one_winner(records: Arc<impl CommandRecords + 'static>) {
    for stale_claim_first in [false, true] {
        let key = fresh_key();
        let window = if stale_claim_first {
            // A stale claim first: twenty retries race to take it over.
            expect_claim(&*records, "carol", &key, 7, STALE, Got::Claimed).await;
            outlive().await;
            // Long enough that the winner's own claim is not stale to the others.
            Duration::from_millis(40)
        } else {
            STALE
        };
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let records = Arc::clone(&records);
                let key = key.clone();
                tokio::spawn(async move { claim(&*records, "carol", &key, 7, window).await })
            })
            .collect();
        let mut claimed = 0;
        for task in tasks {
            match task.await.expect("task") {
                Claimed(_) => claimed += 1,
                InProgress => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(claimed, 1);
    }
}

async fn stream_heads_never_move_back(records: &impl CommandRecords) {
    let post = PostId::from_uuid(Uuid::new_v4());
    assert_eq!(records.stream_head(post).await.expect("head"), None);
    let head = |version, deleted| StreamHead {
        post_id: post,
        author: user("alice"),
        version: Version::new(version),
        deleted,
        updated_at: Timestamp::from_unix_millis(1_795_428_000_000 + version as i64),
    };
    // A head behind the stored one leaves the row as it is.
    for (version, deleted, stored) in [(3, false, 3), (2, false, 3), (5, true, 5)] {
        records
            .record_stream_head(&head(version, deleted))
            .await
            .expect("record");
        assert_eq!(
            records.stream_head(post).await.expect("head"),
            Some(head(stored, deleted)),
            "after recording version {version}"
        );
    }
}

async fn stream_heads_in_one_call_each_land_and_never_move_back(records: &impl CommandRecords) {
    let posts: Vec<PostId> = (0..5).map(|_| PostId::from_uuid(Uuid::new_v4())).collect();
    let head = |post: PostId, version: u64| StreamHead {
        post_id: post,
        author: user("alice"),
        version: Version::new(version),
        deleted: false,
        updated_at: Timestamp::from_unix_millis(1_795_428_000_000 + version as i64),
    };
    records
        .record_stream_head(&head(posts[0], 9))
        .await
        .expect("record");
    // A row per post, one post twice (its higher version counts), one behind
    // what is stored already (it stays where it is).
    let heads: Vec<StreamHead> = vec![
        head(posts[4], 1),
        head(posts[1], 4),
        head(posts[0], 3),
        head(posts[1], 6),
        head(posts[2], 2),
        head(posts[3], 7),
    ];
    records.record_stream_heads(&heads).await.expect("record");
    records
        .record_stream_heads(&[])
        .await
        .expect("nothing to record");
    let expected = [9, 6, 2, 7, 1];
    for (post, version) in posts.iter().zip(expected) {
        assert_eq!(
            records.stream_head(*post).await.expect("head"),
            Some(head(*post, version)),
        );
    }
}

async fn postgres() -> Arc<PostgresCommandRecords> {
    let (pool, _) = testkit::fresh_pg_schema("rec").await;
    Arc::new(support::migrated_records(&pool).await)
}

async fn mssql(case: &str) -> Option<Arc<AnyCommandRecords>> {
    let url = testkit::mssql_url(&format!("command records conformance ({case})"))?;
    // SQL Server cases share one database; every case uses fresh keys and ids.
    Some(Arc::new(
        AnyCommandRecords::connect(&url, 4)
            .await
            .expect("connect SQL Server"),
    ))
}

testkit::conformance! {
    required postgres_adapter: postgres,
    optional mssql_adapter: mssql;
    claim_complete_replay: |records| claim_complete_and_replay(&*records).await;
    release_and_stale: |records| {
        release_frees_the_key_and_stale_claims_are_taken_over(&*records).await
    };
    concurrent_claims: |records| concurrent_claims_have_one_winner(records).await;
    only_the_holder: |records| only_the_holder_completes_or_releases(&*records).await;
    database_clock: |records| claims_age_by_the_database_clock(&*records, &*records).await;
    case_sensitive: |records| users_and_keys_are_case_sensitive(&*records).await;
    stream_heads: |records| stream_heads_never_move_back(&*records).await;
    stream_heads_batched: |records| {
        stream_heads_in_one_call_each_land_and_never_move_back(&*records).await
    };
}

/// The PostgreSQL records as the hosts open them, on a registry analyzed while
/// it held three rows and then grown to 20,000: lookups planned back then must
/// still find a post's row by key, not read the whole table each time.
#[tokio::test]
async fn postgres_finds_registry_rows_by_key_after_the_table_outgrew_its_statistics() {
    let (url, schema, admin) = testkit::fresh_pg_schema_url("plans").await;
    // One connection, so every call runs on the statements it prepared.
    let records = AnyCommandRecords::connect(&url, 1).await.expect("connect");
    let posts: Vec<PostId> = (0..3).map(|_| PostId::from_uuid(Uuid::new_v4())).collect();
    for post in &posts {
        let head = StreamHead {
            post_id: *post,
            author: user("alice"),
            version: Version::new(1),
            deleted: false,
            updated_at: now(),
        };
        records.record_stream_head(&head).await.expect("record");
    }
    testkit::analyze_and_hold_statistics(&admin, &schema, "stream_registry").await;
    // More than five lookups: the connection now runs a generic plan made for
    // a table of three rows.
    for _ in 0..8 {
        assert!(records.stream_head(posts[0]).await.expect("head").is_some());
    }
    admin
        .batch_execute(&format!(
            "INSERT INTO {schema}.stream_registry (post_id, author, version, deleted, updated_at)
             SELECT gen_random_uuid(), 'filler', 1, false, now() FROM generate_series(1, 20000)"
        ))
        .await
        .expect("grow the table");
    for _ in 0..8 {
        assert!(records.stream_head(posts[1]).await.expect("head").is_some());
    }
    // The backend reports its table statistics when it exits.
    drop(records);
    testkit::assert_read_by_key(&admin, &schema, "stream_registry", 16, 20_000).await;
}
