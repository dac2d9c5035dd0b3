//! Keyed writes: the claim, the answer recorded for retries, and the events
//! that carry the key, which tell a retry what its first attempt wrote when
//! that attempt's host could not record it.

use std::sync::Arc;

use domain::{PostCommand, PostEvent, Version};
use hyper::StatusCode;
use serde::Deserialize;

use super::slots::Reply;
use super::{CommandService, Executed, WriteFailure, WriteRequest, Written};
use crate::error::{CommandError, problem_for};
use crate::records::{ClaimToken, CommandRecords, IdempotencyClaim, RecordsError, StoredResponse};
use event_store::{EventStore, StoreError};

/// A keyed request's answer as its record holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Written(Written),
    /// Refused by the rules (a refusal is final): the problem as it was sent.
    Refused {
        status: StatusCode,
        problem: String,
    },
}

impl Recorded {
    fn to_record(&self) -> StoredResponse {
        match self {
            Recorded::Written(written) => StoredResponse {
                status: if written.created { 201 } else { 200 },
                location: written.location(),
                body: written.body().to_string(),
            },
            Recorded::Refused { status, problem } => StoredResponse {
                status: status.as_u16(),
                location: None,
                body: problem.clone(),
            },
        }
    }

    /// Reads a record back; the body of a success is [`Written::body`].
    fn from_record(stored: &StoredResponse) -> Result<Self, RecordsError> {
        #[derive(Deserialize)]
        struct Body {
            id: domain::PostId,
            version: Version,
            comment_id: Option<domain::CommentId>,
        }
        let status = StatusCode::from_u16(stored.status)
            .map_err(|_| RecordsError::Corrupt(format!("status {}", stored.status)))?;
        if !status.is_success() {
            return Ok(Recorded::Refused {
                status,
                problem: stored.body.clone(),
            });
        }
        let body: Body = serde_json::from_str(&stored.body)
            .map_err(|e| RecordsError::Corrupt(format!("recorded answer: {e}")))?;
        Ok(Recorded::Written(Written {
            created: status == StatusCode::CREATED,
            post_id: body.id,
            comment_id: body.comment_id,
            version: body.version,
        }))
    }
}

impl<S: EventStore + 'static, R: CommandRecords + 'static> CommandService<S, R> {
    pub(super) async fn execute_keyed(
        self: &Arc<Self>,
        write: WriteRequest,
        key: &str,
    ) -> Result<Executed, CommandError> {
        let claim = self
            .records
            .claim_idempotency_key(
                &write.actor,
                key,
                &write.fingerprint,
                self.limits.claim_stale_after,
            )
            .await?;
        let token = match claim {
            IdempotencyClaim::Claimed(token) => {
                // The claim may have been taken over from a request whose host died
                // after appending and before recording its answer. Its events carry
                // the key, so the store tells: answer as the first attempt did.
                if let Some(written) = self.first_written(&write, key).await? {
                    let recorded = Recorded::Written(written);
                    self.complete(&write, key, token, &recorded).await?;
                    return Ok(self.replayed(recorded));
                }
                token
            }
            IdempotencyClaim::Completed(stored) => {
                return Ok(self.replayed(Recorded::from_record(&stored)?));
            }
            IdempotencyClaim::InProgress => {
                // Once the first attempt's events are durable its answer is known,
                // whether or not its host lives to record it.
                return match self.first_written(&write, key).await? {
                    Some(written) => Ok(self.replayed(Recorded::Written(written))),
                    None => Err(CommandError::IdempotencyInProgress),
                };
            }
            IdempotencyClaim::Mismatch => return Err(CommandError::IdempotencyMismatch),
        };
        let (recorded, answer) = match self.write(&write).await {
            Ok(written) => (
                Recorded::Written(written.clone()),
                Ok(Executed::Written(written)),
            ),
            // A refusal by the rules is final: the same request gets the same answer.
            Err(WriteFailure::NothingAppended(error @ CommandError::Domain(_))) => {
                let problem = problem_for(&error);
                let recorded = Recorded::Refused {
                    status: problem.status,
                    problem: problem.to_json(),
                };
                (recorded, Err(error))
            }
            // Nothing happened, and trying again may succeed: free the key.
            Err(WriteFailure::NothingAppended(error)) => {
                self.records
                    .release_idempotency_key(&write.actor, key, token)
                    .await?;
                return Err(error);
            }
            // The outcome is unknown: keep the claim, so a retry waits until it goes
            // stale rather than risking a second append right away.
            Err(WriteFailure::MaybeAppended(error)) => return Err(error),
        };
        self.complete(&write, key, token, &recorded).await?;
        answer
    }

    /// Records the answer under the claim `token`. A claim taken over meanwhile
    /// belongs to the retry that took it, which finds this write's events by
    /// their key and gives the same answer.
    async fn complete(
        &self,
        write: &WriteRequest,
        key: &str,
        token: ClaimToken,
        recorded: &Recorded,
    ) -> Result<(), CommandError> {
        let held = self
            .records
            .complete_idempotency_key(&write.actor, key, token, &recorded.to_record())
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
    fn replayed(&self, recorded: Recorded) -> Executed {
        self.metrics.idempotent_replays.inc(1);
        Executed::Replayed(recorded)
    }

    /// What a keyed write's first attempt wrote, if any of its events are in
    /// the store. A key names one request (its claim holds the request's
    /// fingerprint), and a request appends once, to one stream.
    pub(super) async fn first_written(
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
        Ok(Some(Written::of(
            &write.command,
            last.stream_id,
            comment_id,
            last.version,
        )))
    }

    /// Answers, and takes out of the batch, the keyed writes whose events are
    /// in the store already: another host's retry of them won the race.
    pub(super) async fn answer_written_elsewhere(
        &self,
        writes: &mut Vec<WriteRequest>,
        replies: &mut Vec<Reply>,
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
                    let _ = replies.remove(i).send(Ok(written));
                }
                None => i += 1,
            }
        }
        Ok(())
    }
}
