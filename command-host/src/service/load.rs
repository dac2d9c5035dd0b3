//! A post's state: its latest snapshot and the events after it, read a page
//! at a time; and the snapshots saved as a post grows (docs/hot-posts.md).

use std::sync::Arc;

use domain::{EventEnvelope, Post, PostEvent, PostId, SNAPSHOT_SCHEMA, apply};

use super::CommandService;
use super::slots::SlotState;
use crate::error::CommandError;
use crate::records::CommandRecords;
use event_store::{EventStore, Snapshot, StoreError};

/// Events read from the store at a time when a post catches up.
const CATCH_UP_PAGE: usize = 10_000;
/// Events appended to a post between two of its snapshots.
const SNAPSHOT_EVERY: u64 = 1_000;

impl<S: EventStore + 'static, R: CommandRecords + 'static> CommandService<S, R> {
    /// Applies the events appended to `post` since its version, if any; says
    /// whether there were some. One indexed read that finds nothing when the
    /// state is current. Reads a page at a time, so a long stream without a
    /// snapshot never sits in memory whole.
    pub(super) async fn catch_up(
        &self,
        post_id: PostId,
        post: &mut Post,
    ) -> Result<bool, CommandError> {
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
    pub(super) async fn load_post(
        &self,
        post_id: PostId,
        state: &mut SlotState,
    ) -> Result<Post, CommandError> {
        let mut post = self.snapshot(post_id).await.unwrap_or_default();
        state.snapshot_at = post.version();
        self.catch_up(post_id, &mut post).await?;
        Ok(post)
    }

    /// The post as its latest usable snapshot has it, if there is one.
    async fn snapshot(&self, post_id: PostId) -> Option<Post> {
        let snapshot = match self.store.load_snapshot(post_id).await {
            Ok(snapshot) => snapshot?,
            // The events are the truth: fold them all.
            Err(error) => {
                tracing::warn!(%post_id, %error, "snapshot unreadable; folding every event");
                return None;
            }
        };
        if snapshot.schema != SNAPSHOT_SCHEMA {
            tracing::debug!(%post_id, schema = snapshot.schema, "snapshot of another layout ignored");
            self.metrics.snapshots_of_other_layout.inc(1);
            return None;
        }
        match Post::from_snapshot(&snapshot.data) {
            Ok(restored)
                if restored.version() == snapshot.version && restored.id() == Some(post_id) =>
            {
                self.metrics.snapshots_used.inc(1);
                Some(restored)
            }
            Ok(_) => {
                tracing::warn!(%post_id, "snapshot ignored: it is not of this post at its version");
                self.metrics.snapshots_unreadable.inc(1);
                None
            }
            Err(error) => {
                tracing::warn!(%post_id, %error, "snapshot ignored");
                self.metrics.snapshots_unreadable.inc(1);
                None
            }
        }
    }

    /// Saves a snapshot of `post` beside its events once enough events have
    /// gone in since the last one. The save runs on its own: nothing waits for
    /// it, and a failed one is only a slower load later.
    pub(super) fn snapshot_if_due(&self, post: &Post, state: &mut SlotState) {
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
}

fn decode(post_id: PostId, envelope: &EventEnvelope) -> Result<PostEvent, StoreError> {
    envelope
        .decode()
        .map_err(|e| StoreError::Corrupt(format!("{post_id} v{}: {e}", envelope.version)))
}
