//! The command host's mediator and handlers. A request becomes a closed
//! [`CommandRequest`]; [`App::dispatch`] matches it to one handler each. Writes go
//! load → decide → append, with per-post serialization inside this host and
//! optimistic concurrency against other hosts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{ETAG, HeaderValue, IF_MATCH, LOCATION};
use hyper::{HeaderMap, Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use domain::{
    CommandContext, CommentId, CommentText, EventEnvelope, EventMetadata, Message, Post,
    PostCommand, PostEvent, PostId, SNAPSHOT_SCHEMA, UserId, Version, apply, decide,
};

use crate::error::{CommandError, problem_for};
use crate::metrics::CommandMetrics;
use crate::records::{ClaimToken, CommandRecords, IdempotencyClaim, StoredResponse, StreamHead};
use crate::routes::{self, Endpoint, route};
use event_bus::KafkaPublisher;
use event_store::{EventStore, Snapshot, StoreError};
use platform::auth::{self, TokenKey};
use platform::batch::{BatchLimits, Batcher};
use platform::clock;
use platform::http::{self, HttpResponse, Problem, RequestContext};
use platform::metrics::Counter;
use platform::routes::Matched;

/// A write that lost a race is retried against fresh state this many times.
const MAX_ATTEMPTS: usize = 5;
const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
/// Cached post states kept before unused ones are dropped.
const STREAM_CACHE_CAPACITY: usize = 10_000;
/// Most commands decided together and appended in one write.
const MAX_BATCH: usize = 256;
/// Events read from the store at a time when a post catches up.
const CATCH_UP_PAGE: usize = 10_000;
/// Events appended to a post between two of its snapshots (docs/hot-posts.md).
const SNAPSHOT_EVERY: u64 = 1_000;

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

/// Which page of a post's history `GET /posts/{id}/events` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPage {
    pub from: Version,
    pub limit: usize,
}

impl HistoryPage {
    /// The most events one answer carries, and how many without `limit`.
    pub const MAX_LIMIT: usize = 1_000;

    /// `?from_version=N&limit=L`: N from 1, L from 1 to [`Self::MAX_LIMIT`];
    /// anything else is 400.
    pub fn parse(query: Option<&str>) -> Result<Self, Problem> {
        let mut page = Self {
            from: Version::new(1),
            limit: Self::MAX_LIMIT,
        };
        for (name, value) in http::query_pairs(query)? {
            let number = |what: &str, range: std::ops::RangeInclusive<u64>| {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        Problem::new(
                            StatusCode::BAD_REQUEST,
                            format!(
                                "{what} must be a whole number from {} to {}, not {value:?}",
                                range.start(),
                                range.end()
                            ),
                        )
                    })
            };
            match name.as_str() {
                "from_version" => {
                    page.from = Version::new(number("from_version", 1..=i64::MAX as u64)?)
                }
                "limit" => page.limit = number("limit", 1..=Self::MAX_LIMIT as u64)? as usize,
                other => {
                    return Err(Problem::new(
                        StatusCode::BAD_REQUEST,
                        format!("unknown query parameter {other:?}: use from_version and limit"),
                    ));
                }
            }
        }
        Ok(page)
    }
}

/// A command aimed at one post, with who asks and how.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub post_id: PostId,
    pub command: PostCommand,
    pub actor: UserId,
    pub if_match: Option<Version>,
    pub idempotency_key: Option<String>,
    /// Hash of method, path and body: the same key must come with the same request.
    pub fingerprint: [u8; 32],
    pub request_id: Uuid,
    /// After this the write is no longer appended ([`WriteLimits`]).
    pub deadline: tokio::time::Instant,
}

/// How long a keyed write may be in flight. A claim is taken over once it is
/// `claim_stale_after` old (by the records database's clock); every write is
/// appended before `write_deadline` or not at all, and every statement the
/// host sends is cut off by the server after `write_deadline` too, so no
/// write is still in flight when its claim can go to a retry.
#[derive(Debug, Clone, Copy)]
pub struct WriteLimits {
    pub claim_stale_after: Duration,
    pub write_deadline: Duration,
}

impl WriteLimits {
    /// Limits for a stale window: writes get a quarter of it (a deadline
    /// before the append, then at most the append statement's own timeout, and
    /// room for the group commit ahead of it).
    pub fn for_stale_window(claim_stale_after: Duration) -> Self {
        Self {
            claim_stale_after,
            write_deadline: claim_stale_after / 4,
        }
    }
}

impl Default for WriteLimits {
    fn default() -> Self {
        Self::for_stale_window(Duration::from_secs(30))
    }
}

/// A successful write, as the client sees it.
#[derive(Debug)]
struct Written {
    status: StatusCode,
    post_id: PostId,
    comment_id: Option<CommentId>,
    version: Version,
}

/// What a write may have done when it failed: whether events might have been
/// appended decides if its idempotency claim may be given back.
#[derive(Debug)]
enum WriteFailure {
    NothingAppended(CommandError),
    MaybeAppended(CommandError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

/// Shared state of one command host.
pub struct App<S, R> {
    pub(crate) store: Arc<S>,
    pub(crate) records: Arc<R>,
    /// Registry rows of concurrent writes go to the records store together.
    pub(crate) registry: Batcher<StreamHead, ()>,
    pub(crate) publisher: KafkaPublisher,
    pub(crate) relay_wake: Arc<Notify>,
    pub(crate) token_key: TokenKey,
    pub(crate) metrics: CommandMetrics,
    pub(crate) max_body_bytes: usize,
    pub(crate) body_read_timeout: Duration,
    pub(crate) streams: StreamSlots,
    pub(crate) limits: WriteLimits,
}

impl<S, R> std::fmt::Debug for App<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

/// A registry writer for `records`: one statement per batch of heads. Writes
/// are not waited for (see [`App::record_head`]); a failure is logged and
/// counted here.
pub(crate) fn registry_batcher<R: CommandRecords + 'static>(
    records: Arc<R>,
    failures: Counter,
) -> Batcher<StreamHead, ()> {
    Batcher::new(
        BatchLimits {
            max_items: 512,
            max_in_flight: 1,
            // Nobody waits for these rows: gather up to 20 ms of them per
            // statement (under load, 4-5 heads a statement without it).
            linger: Duration::from_millis(20),
        },
        move |heads: Vec<StreamHead>| {
            let (records, failures) = (Arc::clone(&records), failures.clone());
            async move {
                if let Err(error) = records.record_stream_heads(&heads).await {
                    tracing::warn!(%error, posts = heads.len(), "stream registry not updated");
                    failures.inc(heads.len() as u64);
                }
                vec![(); heads.len()]
            }
        },
    )
}

/// One slot per post: its last known state, and the writes waiting for it.
/// Writes to one post are decided one after the other inside this host, so
/// they do not race each other; the ones that arrive while a batch is at the
/// store form the next batch, decided in order and appended together. The
/// cached state spares a load before each write. Another host's write shows
/// up as a conflict on append, which drops the cached state and reloads.
#[derive(Debug, Default)]
pub(crate) struct StreamSlots {
    slots: Mutex<HashMap<PostId, Arc<PostSlot>>>,
}

#[derive(Debug, Default)]
pub(crate) struct PostSlot {
    state: tokio::sync::Mutex<SlotState>,
    queue: Mutex<Queue>,
}

/// The writes waiting for a post, and whether a task is draining them: one
/// task drains a post's queue at a time, and writes that arrive meanwhile
/// join its next batch instead of starting tasks of their own.
#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Queued>,
    draining: bool,
}

impl PostSlot {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// If the draining task panics, marks the post's queue as no longer drained,
/// so the next write starts a new one. (A drainer that ends normally says so
/// itself, in the same lock as it finds the queue empty, so no write is left
/// behind unseen.)
struct Draining<'a>(&'a PostSlot);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.queue().draining = false;
        }
    }
}

#[derive(Debug, Default)]
struct SlotState {
    post: Option<Post>,
    /// The version of the post's latest snapshot that this host knows of.
    snapshot_at: Version,
}

/// A write waiting for its batch, and where its answer goes.
type Queued = (WriteRequest, Answer);
type Answer = oneshot::Sender<Result<Written, WriteFailure>>;

impl WriteRequest {
    fn past_deadline(&self) -> bool {
        self.deadline <= tokio::time::Instant::now()
    }
}

/// Answers, and takes out of the batch, the writes past their deadline.
fn answer_expired(writes: &mut Vec<WriteRequest>, answers: &mut Vec<Answer>) {
    let mut i = 0;
    while i < writes.len() {
        if writes[i].past_deadline() {
            writes.remove(i);
            let failure = WriteFailure::NothingAppended(CommandError::DeadlinePassed);
            let _ = answers.remove(i).send(Err(failure));
        } else {
            i += 1;
        }
    }
}

impl StreamSlots {
    fn slot(&self, post_id: PostId) -> Arc<PostSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= STREAM_CACHE_CAPACITY {
            // Only slots nobody holds can go; their state is reloaded when needed.
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        Arc::clone(slots.entry(post_id).or_default())
    }
}

/// What one command of a batch comes to, once decided against the state the
/// commands before it leave.
enum Planned {
    /// The answer it gets once the batch's events (its own among them) are appended.
    Appends(Written),
    /// It appends nothing: a repeated like, a refusal, a 412.
    Answered(Result<Written, CommandError>),
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
        let endpoint = matched.endpoint;
        let post_id = match endpoint {
            Endpoint::Healthz => return Ok(CommandRequest::Healthz),
            Endpoint::Readyz => return Ok(CommandRequest::Readyz),
            Endpoint::Metrics => return Ok(CommandRequest::Metrics),
            Endpoint::OpenApi => return Ok(CommandRequest::OpenApi),
            Endpoint::CreatePost => PostId::from_uuid(Uuid::now_v7()),
            _ => routes::post_id(matched)?,
        };
        let actor = self
            .token_key
            .verify(auth::bearer(request.headers())?, clock::now())?;
        if endpoint == Endpoint::History {
            let page = HistoryPage::parse(request.uri().query())?;
            return Ok(CommandRequest::History(post_id, page));
        }
        let idempotency_key = idempotency_key(request.headers())?;
        let if_match = if_match(request.headers())?;
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let needs_body = matches!(
            endpoint,
            Endpoint::CreatePost
                | Endpoint::EditMessage
                | Endpoint::AddComment
                | Endpoint::EditComment
        );
        let body = if needs_body {
            http::read_json_bytes(request, self.max_body_bytes, self.body_read_timeout).await?
        } else {
            Bytes::new()
        };
        let command = match endpoint {
            Endpoint::CreatePost => PostCommand::CreatePost {
                message: parse_message(&body)?,
            },
            Endpoint::EditMessage => PostCommand::EditMessage {
                message: parse_message(&body)?,
            },
            Endpoint::LikePost => PostCommand::LikePost,
            Endpoint::UnlikePost => PostCommand::UnlikePost,
            Endpoint::AddComment => PostCommand::AddComment {
                text: parse_text(&body)?,
            },
            Endpoint::EditComment => PostCommand::EditComment {
                comment_id: routes::comment_id(matched)?,
                text: parse_text(&body)?,
            },
            Endpoint::RemoveComment => PostCommand::RemoveComment {
                comment_id: routes::comment_id(matched)?,
            },
            Endpoint::DeletePost => PostCommand::DeletePost,
            Endpoint::History
            | Endpoint::Healthz
            | Endpoint::Readyz
            | Endpoint::Metrics
            | Endpoint::OpenApi => unreachable!("answered above"),
        };
        Ok(CommandRequest::Write(WriteRequest {
            post_id,
            command,
            actor,
            if_match,
            idempotency_key,
            fingerprint: fingerprint(&method, &path, &body),
            request_id: context.request_id,
            deadline: tokio::time::Instant::now() + self.limits.write_deadline,
        }))
    }

    /// The mediator: one handler per request kind.
    pub async fn dispatch(
        self: &Arc<Self>,
        request: CommandRequest,
    ) -> Result<HttpResponse, CommandError> {
        match request {
            CommandRequest::Write(write) => self.write_idempotently(write).await,
            CommandRequest::History(post_id, page) => self.history(post_id, page).await,
            CommandRequest::OpenApi => Ok(http::openapi(OPENAPI)),
            CommandRequest::Healthz => Ok(http::healthz()),
            CommandRequest::Readyz => Ok(self.readyz().await),
            CommandRequest::Metrics => Ok(self.metrics().await),
        }
    }

    /// Runs a write under its idempotency key, if it has one: a retry with the same
    /// key and request gets the first answer; nothing is appended twice.
    async fn write_idempotently(
        self: &Arc<Self>,
        write: WriteRequest,
    ) -> Result<HttpResponse, CommandError> {
        let Some(key) = write.idempotency_key.clone() else {
            return match self.write(&write).await {
                Ok(written) => Ok(written_response(&written)),
                Err(WriteFailure::NothingAppended(e) | WriteFailure::MaybeAppended(e)) => Err(e),
            };
        };
        let claim = self
            .records
            .claim_idempotency_key(
                &write.actor,
                &key,
                &write.fingerprint,
                self.limits.claim_stale_after,
            )
            .await?;
        let token = match claim {
            IdempotencyClaim::Claimed(token) => {
                // The claim may have been taken over from a request whose host died
                // after appending and before recording its answer. Its events carry
                // the key, so the store tells: answer as the first attempt did.
                if let Some(stored) = self.first_outcome(&write, &key).await? {
                    self.complete(&write, &key, token, &stored).await?;
                    return Ok(self.replay(&stored));
                }
                token
            }
            IdempotencyClaim::Completed(stored) => return Ok(self.replay(&stored)),
            IdempotencyClaim::InProgress => {
                // Once the first attempt's events are durable its answer is known,
                // whether or not its host lives to record it.
                return match self.first_outcome(&write, &key).await? {
                    Some(stored) => Ok(self.replay(&stored)),
                    None => Err(CommandError::IdempotencyInProgress),
                };
            }
            IdempotencyClaim::Mismatch => return Err(CommandError::IdempotencyMismatch),
        };
        let stored = match self.write(&write).await {
            Ok(written) => stored_response(&written),
            // A refusal by the rules is final: the same request gets the same answer.
            Err(WriteFailure::NothingAppended(
                error @ (CommandError::Domain(_) | CommandError::PreconditionFailed { .. }),
            )) => {
                let problem = problem_for(&error);
                StoredResponse {
                    status: problem.status.as_u16(),
                    location: None,
                    body: problem.to_json(),
                }
            }
            // Nothing happened, and trying again may succeed: free the key.
            Err(WriteFailure::NothingAppended(error)) => {
                self.records
                    .release_idempotency_key(&write.actor, &key, token)
                    .await?;
                return Err(error);
            }
            // The outcome is unknown: keep the claim, so a retry waits until it goes
            // stale rather than risking a second append right away.
            Err(WriteFailure::MaybeAppended(error)) => return Err(error),
        };
        self.complete(&write, &key, token, &stored).await?;
        Ok(stored_to_response(&stored))
    }

    /// Records the answer under the claim `token`. A claim taken over meanwhile
    /// belongs to the retry that took it, which finds this write's events by
    /// their key and gives the same answer.
    async fn complete(
        &self,
        write: &WriteRequest,
        key: &str,
        token: ClaimToken,
        stored: &StoredResponse,
    ) -> Result<(), CommandError> {
        let held = self
            .records
            .complete_idempotency_key(&write.actor, key, token, stored)
            .await?;
        if !held {
            tracing::warn!(
                user = %write.actor,
                "an idempotency claim was taken over before its write recorded its answer"
            );
        }
        Ok(())
    }

    /// The first answer to a keyed request, given again to its retry.
    fn replay(&self, stored: &StoredResponse) -> HttpResponse {
        self.metrics.idempotent_replays.inc(1);
        replayed_response(stored)
    }

    /// The answer a keyed request got (or would have got) from the events it
    /// appended, if any carry its key. A key names one request (its claim holds
    /// the request's fingerprint), and a request appends once, to one stream.
    async fn first_outcome(
        &self,
        write: &WriteRequest,
        key: &str,
    ) -> Result<Option<StoredResponse>, CommandError> {
        Ok(self
            .first_written(write, key)
            .await?
            .map(|written| stored_response(&written)))
    }

    /// What a keyed write's first attempt wrote, if any of its events are in
    /// the store.
    async fn first_written(
        &self,
        write: &WriteRequest,
        key: &str,
    ) -> Result<Option<Written>, StoreError> {
        let events = self
            .store
            .find_by_idempotency_key(&write.actor, key)
            .await?;
        let Some(last) = events.last() else {
            return Ok(None);
        };
        let comment_id = match &write.command {
            PostCommand::AddComment { .. } => {
                events.iter().find_map(|envelope| match envelope.decode() {
                    Ok(PostEvent::CommentAdded(added)) => Some(added.comment_id),
                    _ => None,
                })
            }
            PostCommand::EditComment { comment_id, .. }
            | PostCommand::RemoveComment { comment_id } => Some(*comment_id),
            _ => None,
        };
        Ok(Some(Written {
            status: success_status(&write.command),
            post_id: last.stream_id,
            comment_id,
            version: last.version,
        }))
    }

    /// Queues the write for its post and waits for its answer. The batches run
    /// in a task of their own, so a client that hangs up never cancels the
    /// writes of the others in its batch.
    async fn write(self: &Arc<Self>, write: &WriteRequest) -> Result<Written, WriteFailure> {
        let slot = self.streams.slot(write.post_id);
        let (answer, answered) = oneshot::channel();
        let start_draining = {
            let mut queue = slot.queue();
            queue.waiting.push((write.clone(), answer));
            !std::mem::replace(&mut queue.draining, true)
        };
        if start_draining {
            let app = Arc::clone(self);
            tokio::spawn(async move { app.drain(&slot).await });
        }
        answered.await.unwrap_or_else(|_| {
            Err(WriteFailure::MaybeAppended(CommandError::Store(
                StoreError::Unavailable("the write's batch ended without an answer".to_owned()),
            )))
        })
    }

    /// Takes the post's lock and writes what is queued, batch after batch,
    /// until nothing waits.
    async fn drain(&self, slot: &PostSlot) {
        let _draining = Draining(slot);
        let mut state = slot.state.lock().await;
        loop {
            let batch: Vec<Queued> = {
                let mut queue = slot.queue();
                if queue.waiting.is_empty() {
                    queue.draining = false;
                    return;
                }
                let take = queue.waiting.len().min(MAX_BATCH);
                queue.waiting.drain(..take).collect()
            };
            self.write_batch(&mut state, batch).await;
        }
    }

    /// load → decide every command in order → one append, retried against
    /// fresh state when another writer won. Each command gets its own answer.
    async fn write_batch(&self, state: &mut SlotState, batch: Vec<Queued>) {
        use WriteFailure::NothingAppended;
        let post_id = batch[0].0.post_id;
        // A new post's id was made for its request: it has nothing to load.
        let creating = batch
            .iter()
            .all(|(w, _)| matches!(w.command, PostCommand::CreatePost { .. }));
        let (mut writes, mut answers): (Vec<WriteRequest>, Vec<_>) = batch.into_iter().unzip();
        let answer_all = |answers: Vec<oneshot::Sender<_>>,
                          results: Vec<Result<Written, WriteFailure>>| {
            for (answer, result) in answers.into_iter().zip(results) {
                // The caller went away; its write is done all the same.
                let _ = answer.send(result);
            }
        };
        for _attempt in 0..MAX_ATTEMPTS {
            // A write past its deadline is not appended any more: its claim
            // may soon go to a retry.
            answer_expired(&mut writes, &mut answers);
            if writes.is_empty() {
                return;
            }
            // Whether `post` is known to be the store's latest state: just loaded,
            // or checked against the store since it was cached.
            let (mut post, mut confirmed) = match state.post.take() {
                Some(post) => (post, false),
                None if creating => (Post::default(), true),
                None => match self.load_post(post_id, state).await {
                    Ok(post) => (post, true),
                    Err(error) => return answer_all(answers, nothing_appended(&writes, &error)),
                },
            };
            let (plan, envelopes, base) = loop {
                let base = post.version();
                let (plan, envelopes) = plan_batch(&mut post, &writes);
                // An answer that appends nothing (a refusal, a 412, a repeated
                // like) is only as true as the state it was decided on, and
                // another host may have written since this one cached the post.
                // When the batch appends, the append checks that state; when it
                // does not, the answers wait until the store shows nothing newer.
                if !envelopes.is_empty() || confirmed {
                    break (plan, envelopes, base);
                }
                confirmed = true;
                match self.catch_up(post_id, &mut post).await {
                    Ok(true) => continue,
                    Ok(false) => break (plan, envelopes, base),
                    Err(error) => return answer_all(answers, nothing_appended(&writes, &error)),
                }
            };
            if envelopes.is_empty() {
                state.post = Some(post);
                let results = plan
                    .into_iter()
                    .map(|p| match p {
                        Planned::Answered(result) => result.map_err(NothingAppended),
                        Planned::Appends(_) => unreachable!("nothing appends"),
                    })
                    .collect();
                return answer_all(answers, results);
            }
            if writes.iter().any(WriteRequest::past_deadline) {
                // Decide the others again, without it.
                continue;
            }
            match self.store.append_to_stream(post_id, base, &envelopes).await {
                Ok(()) => {
                    let mut results = Vec::with_capacity(plan.len());
                    for planned in plan {
                        results.push(match planned {
                            Planned::Appends(written) => Ok(written),
                            Planned::Answered(result) => result.map_err(NothingAppended),
                        });
                    }
                    self.relay_wake.notify_one();
                    self.metrics.events_appended.inc(envelopes.len() as u64);
                    self.metrics.write_batches.inc(1);
                    self.metrics.batched_commands.inc(writes.len() as u64);
                    self.record_head(&post, clock::now());
                    self.snapshot_if_due(&post, state);
                    state.post = Some(post);
                    return answer_all(answers, results);
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another writer moved the post on: decide everything again
                    // against its fresh state (an If-Match write then gets 412).
                    self.metrics.append_conflicts.inc(1);
                    // That writer may be a keyed write's own retry, on another
                    // host: such a write is answered with what it wrote, never
                    // decided (and appended) a second time.
                    if let Err(error) = self
                        .answer_written_elsewhere(&mut writes, &mut answers)
                        .await
                    {
                        return answer_all(answers, nothing_appended(&writes, &error.into()));
                    }
                }
                Err(error) => return answer_all(answers, failed_append(plan, &error)),
            }
        }
        let results = writes
            .iter()
            .map(|_| Err(NothingAppended(CommandError::Conflict)))
            .collect();
        answer_all(answers, results)
    }

    /// Answers, and takes out of the batch, the keyed writes whose events are
    /// in the store already.
    async fn answer_written_elsewhere(
        &self,
        writes: &mut Vec<WriteRequest>,
        answers: &mut Vec<Answer>,
    ) -> Result<(), StoreError> {
        let mut i = 0;
        while i < writes.len() {
            let found = match &writes[i].idempotency_key {
                Some(key) => self.first_written(&writes[i], key).await?,
                None => None,
            };
            match found {
                Some(written) => {
                    writes.remove(i);
                    let _ = answers.remove(i).send(Ok(written));
                }
                None => i += 1,
            }
        }
        Ok(())
    }

    /// Saves a snapshot of `post` beside its events once enough events have
    /// gone in since the last one. The save runs on its own: nothing waits for
    /// it, and a failed one is only a slower load later.
    fn snapshot_if_due(&self, post: &Post, state: &mut SlotState) {
        if post.version().get() < state.snapshot_at.get() + SNAPSHOT_EVERY {
            return;
        }
        state.snapshot_at = post.version();
        let (post, store, metrics) = (post.clone(), Arc::clone(&self.store), self.metrics.clone());
        tokio::spawn(async move {
            let Some(post_id) = post.id() else {
                return;
            };
            let version = post.version();
            let data = match tokio::task::spawn_blocking(move || post.to_snapshot()).await {
                Ok(data) => data,
                Err(error) => return tracing::warn!(%error, "snapshot not taken"),
            };
            let snapshot = Snapshot {
                stream_id: post_id,
                version,
                schema: SNAPSHOT_SCHEMA,
                data,
            };
            match store.save_snapshot(&snapshot).await {
                Ok(()) => metrics.snapshots_saved.inc(1),
                Err(error) => tracing::warn!(%error, %post_id, "snapshot not saved"),
            }
        });
    }

    /// Applies the events appended to `post` since its version, if any; says
    /// whether there were some. One indexed read that finds nothing when the
    /// state is current.
    /// Reads a page at a time, so a long stream without a snapshot never
    /// sits in memory whole.
    async fn catch_up(&self, post_id: PostId, post: &mut Post) -> Result<bool, CommandError> {
        let mut caught_up = false;
        loop {
            let envelopes = self
                .store
                .load_stream_page(post_id, post.version().next(), CATCH_UP_PAGE)
                .await?;
            for envelope in &envelopes {
                apply(post, &decode(post_id, envelope)?);
            }
            caught_up |= !envelopes.is_empty();
            if envelopes.len() < CATCH_UP_PAGE {
                return Ok(caught_up);
            }
        }
    }

    /// The post's state: its latest snapshot, if one of this build's layout
    /// is there and reads back, and the events after it. `state` learns which
    /// version the snapshot was at, so the next one is taken in due time.
    async fn load_post(
        &self,
        post_id: PostId,
        state: &mut SlotState,
    ) -> Result<Post, CommandError> {
        let mut post = Post::default();
        match self.store.load_snapshot(post_id).await {
            Ok(Some(snapshot)) if snapshot.schema != SNAPSHOT_SCHEMA => {
                tracing::debug!(%post_id, schema = snapshot.schema, "snapshot of another layout ignored");
                self.metrics.snapshots_of_other_layout.inc(1);
            }
            Ok(Some(snapshot)) => match Post::from_snapshot(&snapshot.data) {
                Ok(restored)
                    if restored.version() == snapshot.version && restored.id() == Some(post_id) =>
                {
                    self.metrics.snapshots_used.inc(1);
                    post = restored;
                }
                Ok(_) => {
                    tracing::warn!(%post_id, "snapshot ignored: it is not of this post at its version");
                    self.metrics.snapshots_unreadable.inc(1);
                }
                Err(error) => {
                    tracing::warn!(%post_id, %error, "snapshot ignored");
                    self.metrics.snapshots_unreadable.inc(1);
                }
            },
            Ok(None) => {}
            // The events are the truth: fold them all.
            Err(error) => {
                tracing::warn!(%post_id, %error, "snapshot unreadable; folding every event")
            }
        }
        state.snapshot_at = post.version();
        self.catch_up(post_id, &mut post).await?;
        Ok(post)
    }

    /// Keeps the stream registry current. The event store is the truth and the
    /// registry can be repaired from it, and nothing in a request reads it, so
    /// the write is handed to the registry's batch and not waited for: the
    /// response goes out as soon as the events are durable. The host drains
    /// these writes when it shuts down; a host that dies first leaves rows
    /// behind, which `repair-registry` brings up to date.
    fn record_head(&self, post: &Post, now: domain::Timestamp) {
        let (Some(post_id), Some(author)) = (post.id(), post.author()) else {
            return;
        };
        self.registry.submit_detached(StreamHead {
            post_id,
            author: author.clone(),
            version: post.version(),
            deleted: post.is_deleted(),
            updated_at: now,
        });
    }

    /// One page of the post's events. `next` links the following page, or is
    /// null once the page reached the stream's end; past the end the page is
    /// empty. A post with no events at all is 404.
    async fn history(
        &self,
        post_id: PostId,
        page: HistoryPage,
    ) -> Result<HttpResponse, CommandError> {
        // One more than asked for tells whether another page follows.
        let mut events = self
            .store
            .load_stream_page(post_id, page.from, page.limit + 1)
            .await?;
        if events.is_empty()
            && (page.from == Version::new(1)
                || self
                    .store
                    .load_stream_page(post_id, Version::new(1), 1)
                    .await?
                    .is_empty())
        {
            return Err(domain::DomainError::NotFound("post").into());
        }
        let next = (events.len() > page.limit).then(|| {
            events.truncate(page.limit);
            let after = events.last().map_or(page.from, |e| e.version.next());
            format!(
                "/posts/{post_id}/events?from_version={after}&limit={}",
                page.limit
            )
        });
        Ok(http::json(
            StatusCode::OK,
            &json!({ "events": events, "next": next }),
        ))
    }

    async fn readyz(&self) -> HttpResponse {
        let (store, records, broker) = tokio::join!(
            self.store.ping(),
            self.records.ping(),
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
        if let Ok(backlog) = self.store.unpublished_count().await {
            self.metrics.outbox_unpublished.set(backlog as f64);
        }
        http::metrics_response(&self.metrics.registry)
    }
}

/// Decides each write in order against the state the writes before it leave,
/// and builds the envelopes of those that append, numbered on from `post`.
/// Their events are applied to `post` as they are decided, so `post` is the
/// state after the batch's append; if that append fails, the caller drops it.
fn plan_batch(post: &mut Post, writes: &[WriteRequest]) -> (Vec<Planned>, Vec<EventEnvelope>) {
    let mut version = post.version();
    let mut envelopes = Vec::new();
    let plan = writes
        .iter()
        .map(|write| {
            let context = CommandContext {
                actor: write.actor.clone(),
                now: clock::now(),
                post_id: write.post_id,
                new_comment_id: CommentId::from_uuid(Uuid::now_v7()),
            };
            let comment_id = match &write.command {
                PostCommand::AddComment { .. } => Some(context.new_comment_id),
                PostCommand::EditComment { comment_id, .. }
                | PostCommand::RemoveComment { comment_id } => Some(*comment_id),
                _ => None,
            };
            let written = |version| Written {
                status: success_status(&write.command),
                post_id: write.post_id,
                comment_id,
                version,
            };
            let events = match judge(post, write, &context) {
                Ok(events) if events.is_empty() => return Planned::Answered(Ok(written(version))),
                Ok(events) => events,
                Err(error) => return Planned::Answered(Err(error)),
            };
            let metadata = EventMetadata {
                user: write.actor.clone(),
                request_id: write.request_id,
                idempotency_key: write.idempotency_key.clone(),
            };
            for event in &events {
                version = version.next();
                apply(post, event);
                envelopes.push(EventEnvelope::new(
                    write.post_id,
                    version,
                    event,
                    Uuid::now_v7(),
                    context.now,
                    metadata.clone(),
                ));
            }
            Planned::Appends(written(version))
        })
        .collect();
    (plan, envelopes)
}

/// The same failure for every write of a batch, none of which appended.
fn nothing_appended(
    writes: &[WriteRequest],
    error: &CommandError,
) -> Vec<Result<Written, WriteFailure>> {
    let each = || match error {
        CommandError::Store(store) => CommandError::Store(store.clone()),
        other => CommandError::Store(StoreError::Unavailable(other.to_string())),
    };
    writes
        .iter()
        .map(|_| Err(WriteFailure::NothingAppended(each())))
        .collect()
}

/// The answers to a batch whose append failed with `error` (not a conflict).
/// The writes that would have appended fail with it: perhaps appended, unless
/// the server rolled the append back. A refusal for not being the author keeps
/// its own answer, as authorship never changes; every other answer depended on
/// a state the append would have confirmed, and fails with the error too.
fn failed_append(plan: Vec<Planned>, error: &StoreError) -> Vec<Result<Written, WriteFailure>> {
    let rolled_back = matches!(error, StoreError::RolledBack(_));
    plan.into_iter()
        .map(|planned| match planned {
            Planned::Answered(Err(
                refusal @ CommandError::Domain(domain::DomainError::Forbidden(_)),
            )) => Err(WriteFailure::NothingAppended(refusal)),
            Planned::Appends(_) if !rolled_back => {
                Err(WriteFailure::MaybeAppended(error.clone().into()))
            }
            _ => Err(WriteFailure::NothingAppended(error.clone().into())),
        })
        .collect()
}

/// What a write would do to `post`: the events to append (none for a no-op),
/// or why it is refused. `If-Match` is checked first; a post that does not
/// exist or is deleted answers 404 or 410 whatever the precondition.
fn judge(
    post: &Post,
    write: &WriteRequest,
    context: &CommandContext,
) -> Result<Vec<PostEvent>, CommandError> {
    if let Some(expected) = write.if_match
        && post.exists()
        && !post.is_deleted()
        && post.version() != expected
    {
        return Err(CommandError::PreconditionFailed {
            current: post.version(),
        });
    }
    Ok(decide(post, &write.command, context)?)
}

fn decode(post_id: PostId, envelope: &EventEnvelope) -> Result<PostEvent, StoreError> {
    envelope
        .decode()
        .map_err(|e| StoreError::Corrupt(format!("{post_id} v{}: {e}", envelope.version)))
}

fn parse_message(body: &[u8]) -> Result<Message, CommandError> {
    let body: MessageBody = http::parse_json(body)?;
    Ok(Message::parse(&body.message).map_err(domain::DomainError::from)?)
}

fn parse_text(body: &[u8]) -> Result<CommentText, CommandError> {
    let body: TextBody = http::parse_json(body)?;
    Ok(CommentText::parse(&body.text).map_err(domain::DomainError::from)?)
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

/// 201 for what creates a resource (a post, a comment), 200 for the rest.
fn success_status(command: &PostCommand) -> StatusCode {
    match command {
        PostCommand::CreatePost { .. } | PostCommand::AddComment { .. } => StatusCode::CREATED,
        _ => StatusCode::OK,
    }
}

fn written_body(written: &Written) -> serde_json::Value {
    let mut body = json!({ "id": written.post_id, "version": written.version });
    if let Some(comment_id) = written.comment_id {
        body["comment_id"] = json!(comment_id);
    }
    body
}

fn location(written: &Written) -> Option<String> {
    (written.status == StatusCode::CREATED).then(|| match written.comment_id {
        Some(comment_id) => format!("/posts/{}/comments/{comment_id}", written.post_id),
        None => format!("/posts/{}", written.post_id),
    })
}

fn written_response(written: &Written) -> HttpResponse {
    stored_to_response(&stored_response(written))
}

fn stored_response(written: &Written) -> StoredResponse {
    StoredResponse {
        status: written.status.as_u16(),
        location: location(written),
        body: written_body(written).to_string(),
    }
}

fn stored_to_response(stored: &StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = http::text(
        status,
        if status.is_success() {
            "application/json"
        } else {
            "application/problem+json"
        },
        stored.body.clone(),
    );
    if let Some(location) = stored
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        response.headers_mut().insert(LOCATION, location);
    }
    if status.is_success()
        && let Some(version) = serde_json::from_str::<serde_json::Value>(&stored.body)
            .ok()
            .and_then(|body| body.get("version").and_then(serde_json::Value::as_u64))
    {
        let etag = HeaderValue::from_str(&format!("\"{version}\""))
            .expect("a quoted number is a valid header");
        response.headers_mut().insert(ETAG, etag);
    }
    response
}

fn replayed_response(stored: &StoredResponse) -> HttpResponse {
    let mut response = stored_to_response(stored);
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
