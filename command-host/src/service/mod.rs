//! The write pipeline behind one call, [`CommandService::execute`]: a write is
//! claimed under its idempotency key ([`idempotency`]), queued in its post's
//! slot ([`slots`]), decided with the writes queued beside it and appended in
//! one write ([`plan`]), against the post's state from its snapshot and the
//! events after it ([`load`]). Nothing here knows HTTP beyond the answers a
//! keyed write records for its retries.

mod idempotency;
mod load;
mod plan;
mod slots;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use uuid::Uuid;

use domain::{CommentId, PostCommand, PostId, UserId, Version};

use crate::error::CommandError;
use crate::metrics::CommandMetrics;
use crate::records::{CommandRecords, StreamHead};
use event_store::EventStore;
use platform::metrics::Counter;
use plumbing::batch::{BatchLimits, Batcher};

pub use idempotency::Recorded;
use slots::StreamSlots;

/// A command aimed at one post, with who asks and how.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub post_id: PostId,
    pub command: PostCommand,
    pub actor: UserId,
    /// The version the client expects the post at (`If-Match`).
    pub expected_version: Option<Version>,
    pub idempotency_key: Option<String>,
    /// Hash of method, path and body: the same key must come with the same request.
    pub fingerprint: [u8; 32],
    pub request_id: Uuid,
    /// After this the write is no longer appended ([`WriteLimits`]).
    pub deadline: tokio::time::Instant,
}

impl WriteRequest {
    fn past_deadline(&self) -> bool {
        self.deadline <= tokio::time::Instant::now()
    }
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

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Whether it made something (a post, a comment) that has an address of its own.
    pub created: bool,
    pub post_id: PostId,
    pub comment_id: Option<CommentId>,
    /// The post's version after the write.
    pub version: Version,
}

impl Written {
    /// What a write of `command` to `post_id` answers once the post is at
    /// `version`.
    fn of(
        command: &PostCommand,
        post_id: PostId,
        comment_id: Option<CommentId>,
        version: Version,
    ) -> Self {
        Self {
            created: matches!(
                command,
                PostCommand::CreatePost { .. } | PostCommand::AddComment { .. }
            ),
            post_id,
            comment_id,
            version,
        }
    }

    /// The body clients get, and retries get again: `id`, `version`, and
    /// `comment_id` for a write to a comment.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "id": self.post_id, "version": self.version });
        if let Some(comment_id) = self.comment_id {
            body["comment_id"] = json!(comment_id);
        }
        body
    }

    /// Where what it created can be read.
    pub fn location(&self) -> Option<String> {
        self.created.then(|| match self.comment_id {
            Some(comment_id) => format!("/posts/{}/comments/{comment_id}", self.post_id),
            None => format!("/posts/{}", self.post_id),
        })
    }
}

/// What a write may have done when it failed: whether events might have been
/// appended decides if its idempotency claim may be given back.
#[derive(Debug)]
enum WriteFailure {
    NothingAppended(CommandError),
    MaybeAppended(CommandError),
}

/// What [`CommandService::execute`] answers.
#[derive(Debug)]
pub enum Executed {
    /// This request's own write.
    Written(Written),
    /// A keyed retry, answered as its first attempt was.
    Replayed(Recorded),
}

/// The command host's writes: the stores, and the slots where writes to one
/// post wait for each other.
pub struct CommandService<S, R> {
    store: Arc<S>,
    records: Arc<R>,
    /// Registry rows of concurrent writes go to the records store together.
    registry: Batcher<StreamHead, ()>,
    relay_wake: Arc<Notify>,
    metrics: CommandMetrics,
    slots: StreamSlots,
    limits: WriteLimits,
}

impl<S, R> std::fmt::Debug for CommandService<S, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandService")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<S: EventStore + 'static, R: CommandRecords + 'static> CommandService<S, R> {
    /// A service writing to `store` and `records`; `relay_wake` is told of
    /// every append.
    pub fn new(
        store: Arc<S>,
        records: Arc<R>,
        relay_wake: Arc<Notify>,
        metrics: CommandMetrics,
        limits: WriteLimits,
    ) -> Self {
        Self {
            registry: registry_batcher(Arc::clone(&records), metrics.registry_failures.clone()),
            store,
            records,
            relay_wake,
            metrics,
            slots: StreamSlots::default(),
            limits,
        }
    }

    /// Load → decide → append → record, under the write's idempotency key if
    /// it has one: a retry with the same key and request gets the first
    /// answer, and nothing is appended twice.
    pub async fn execute(self: &Arc<Self>, write: WriteRequest) -> Result<Executed, CommandError> {
        match write.idempotency_key.clone() {
            Some(key) => self.execute_keyed(write, &key).await,
            None => match self.write(&write).await {
                Ok(written) => Ok(Executed::Written(written)),
                Err(WriteFailure::NothingAppended(e) | WriteFailure::MaybeAppended(e)) => Err(e),
            },
        }
    }

    /// How long writes have.
    pub fn limits(&self) -> WriteLimits {
        self.limits
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn records(&self) -> &R {
        &self.records
    }

    /// Waits until the registry writes handed off so far are done.
    pub async fn registry_idle(&self) {
        self.registry.idle().await
    }
}

/// A registry writer for `records`: one statement per batch of heads. Writes
/// are not waited for (see `record_head`); a failure is logged and counted
/// here.
fn registry_batcher<R: CommandRecords + 'static>(
    records: Arc<R>,
    failures: Counter,
) -> Batcher<StreamHead, ()> {
    Batcher::new(
        BatchLimits {
            max_items: 512,
            max_in_flight: 1,
            // Nobody waits for these rows: gather up to 20 ms of them per
            // statement.
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
