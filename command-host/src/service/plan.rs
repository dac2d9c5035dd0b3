//! A batch of writes to one post: each decided in order against the state the
//! ones before it leave, then one append for all of their events, retried
//! against fresh state when another writer won. Each write keeps its own
//! answer.

use uuid::Uuid;

use domain::{
    CommandContext, CommentId, EventEnvelope, EventMetadata, Post, PostCommand, apply, decide,
};

use super::slots::{Queued, Reply, SlotState};
use super::{CommandService, WriteFailure, WriteRequest, Written};
use crate::error::CommandError;
use crate::records::{CommandRecords, StreamHead};
use event_store::{EventStore, StoreError};
use platform::clock;

/// A write that lost a race is retried against fresh state this many times.
const MAX_ATTEMPTS: usize = 5;

/// What one command of a batch comes to, once decided against the state the
/// commands before it leave.
enum Planned {
    /// The answer it gets once the batch's events (its own among them) are appended.
    Appends(Written),
    /// It appends nothing: a repeated like, a refusal, a 412.
    Answered(Result<Written, CommandError>),
}

impl<S: EventStore + 'static, R: CommandRecords + 'static> CommandService<S, R> {
    /// load → decide every command in order → one append, retried against
    /// fresh state when another writer won. Each command gets its own answer.
    pub(super) async fn write_batch(&self, state: &mut SlotState, batch: Vec<Queued>) {
        use WriteFailure::NothingAppended;
        let post_id = batch[0].0.post_id;
        // A new post's id was made for its request: it has nothing to load.
        let creating = batch
            .iter()
            .all(|(w, _)| matches!(w.command, PostCommand::CreatePost { .. }));
        let (mut writes, mut replies): (Vec<WriteRequest>, Vec<Reply>) = batch.into_iter().unzip();
        for _attempt in 0..MAX_ATTEMPTS {
            // A write past its deadline is not appended any more: its claim
            // may soon go to a retry.
            answer_expired(&mut writes, &mut replies);
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
                    Err(error) => return send(replies, nothing_appended(&writes, &error)),
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
                    Err(error) => return send(replies, nothing_appended(&writes, &error)),
                }
            };
            if envelopes.is_empty() {
                state.post = Some(post);
                return send(replies, appended(plan));
            }
            if writes.iter().any(WriteRequest::past_deadline) {
                // Decide the others again, without it.
                continue;
            }
            match self.store.append_to_stream(post_id, base, &envelopes).await {
                Ok(()) => {
                    let results = appended(plan);
                    self.relay_wake.notify_one();
                    self.metrics.events_appended.inc(envelopes.len() as u64);
                    self.metrics.write_batches.inc(1);
                    self.metrics.batched_commands.inc(writes.len() as u64);
                    self.record_head(&post, clock::now());
                    self.snapshot_if_due(&post, state);
                    state.post = Some(post);
                    return send(replies, results);
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another writer moved the post on: decide everything again
                    // against its fresh state (an If-Match write then gets 412).
                    self.metrics.append_conflicts.inc(1);
                    // That writer may be a keyed write's own retry, on another
                    // host: such a write is answered with what it wrote, never
                    // decided (and appended) a second time.
                    if let Err(error) = self
                        .answer_written_elsewhere(&mut writes, &mut replies)
                        .await
                    {
                        return send(replies, nothing_appended(&writes, &error.into()));
                    }
                }
                Err(error) => return send(replies, failed_append(plan, &error)),
            }
        }
        let results = writes
            .iter()
            .map(|_| Err(NothingAppended(CommandError::Conflict)))
            .collect();
        send(replies, results)
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
}

/// Gives each write of a batch its answer.
fn send(replies: Vec<Reply>, results: Vec<Result<Written, WriteFailure>>) {
    for (reply, result) in replies.into_iter().zip(results) {
        // The caller went away; its write is done all the same.
        let _ = reply.send(result);
    }
}

/// Answers, and takes out of the batch, the writes past their deadline.
fn answer_expired(writes: &mut Vec<WriteRequest>, replies: &mut Vec<Reply>) {
    let mut i = 0;
    while i < writes.len() {
        if writes[i].past_deadline() {
            writes.remove(i);
            let failure = WriteFailure::NothingAppended(CommandError::DeadlinePassed);
            let _ = replies.remove(i).send(Err(failure));
        } else {
            i += 1;
        }
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
                expected_version: write.expected_version,
            };
            let comment_id = match &write.command {
                PostCommand::AddComment { .. } => Some(context.new_comment_id),
                PostCommand::EditComment { comment_id, .. }
                | PostCommand::RemoveComment { comment_id } => Some(*comment_id),
                _ => None,
            };
            let written = |version| Written::of(&write.command, write.post_id, comment_id, version);
            let events = match decide(post, &write.command, &context) {
                Ok(events) if events.is_empty() => return Planned::Answered(Ok(written(version))),
                Ok(events) => events,
                Err(error) => return Planned::Answered(Err(error.into())),
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

/// The answers to a batch whose events (if it had any) are appended.
fn appended(plan: Vec<Planned>) -> Vec<Result<Written, WriteFailure>> {
    plan.into_iter()
        .map(|planned| match planned {
            Planned::Appends(written) => Ok(written),
            Planned::Answered(result) => result.map_err(WriteFailure::NothingAppended),
        })
        .collect()
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
