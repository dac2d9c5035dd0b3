//! One slot per post: its last known state, and the writes waiting for it.
//! Writes to one post are decided one after the other inside this host, so
//! they do not race each other; the ones that arrive while a batch is at the
//! store form the next batch, decided in order and appended together. The
//! cached state spares a load before each write. Another host's write shows
//! up as a conflict on append, which drops the cached state and reloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use domain::{Post, PostId, Version};

use super::{CommandService, WriteFailure, WriteRequest, Written};
use crate::error::CommandError;
use crate::records::CommandRecords;
use event_store::{EventStore, StoreError};

/// Cached post states kept before unused ones are dropped.
const STREAM_CACHE_CAPACITY: usize = 10_000;
/// Most commands decided together and appended in one write.
const MAX_BATCH: usize = 256;

#[derive(Debug, Default)]
pub(super) struct StreamSlots {
    slots: Mutex<HashMap<PostId, Arc<PostSlot>>>,
}

#[derive(Debug, Default)]
pub(super) struct PostSlot {
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

/// What this host knows of a post between its writes.
#[derive(Debug, Default)]
pub(super) struct SlotState {
    pub(super) post: Option<Post>,
    /// The version of the post's latest snapshot that this host knows of.
    pub(super) snapshot_at: Version,
}

/// A write waiting for its batch, and where its answer goes.
pub(super) type Queued = (WriteRequest, Reply);
pub(super) type Reply = oneshot::Sender<Result<Written, WriteFailure>>;

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

impl<S: EventStore + 'static, R: CommandRecords + 'static> CommandService<S, R> {
    /// Queues the write for its post and waits for its answer. The batches run
    /// in a task of their own, so a client that hangs up never cancels the
    /// writes of the others in its batch.
    pub(super) async fn write(
        self: &Arc<Self>,
        write: &WriteRequest,
    ) -> Result<Written, WriteFailure> {
        let slot = self.slots.slot(write.post_id);
        let (reply, replied) = oneshot::channel();
        let start_draining = {
            let mut queue = slot.queue();
            queue.waiting.push((write.clone(), reply));
            !std::mem::replace(&mut queue.draining, true)
        };
        if start_draining {
            let service = Arc::clone(self);
            tokio::spawn(async move { service.drain(&slot).await });
        }
        replied.await.unwrap_or_else(|_| {
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
}
