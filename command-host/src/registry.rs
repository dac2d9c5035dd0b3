//! Repairing the stream registry from the event store. The registry (each post's
//! author, version and whether it is deleted) is kept current after every
//! append, but a host that dies between appending and recording, or a records
//! store that was down, leaves rows behind. The event store is the truth: this
//! folds every stream and records its head. Rows only move forward, so running
//! it while hosts serve is safe.

use domain::{Post, PostId, apply};

use crate::records::{CommandRecords, StreamHead};
use event_store::{EventStore, ReadAllCursor};

/// Events read per page, and registry rows written per statement.
const PAGE: usize = 1_000;

/// What a repair went through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairReport {
    pub streams: u64,
    pub events: u64,
}

/// Folds every stream of `store` and records its head in `records`.
pub async fn repair<S: EventStore, R: CommandRecords>(
    store: &S,
    records: &R,
) -> Result<RepairReport, String> {
    let mut report = RepairReport::default();
    let mut cursor = ReadAllCursor::default();
    let mut current: Option<(PostId, Post, domain::Timestamp)> = None;
    let mut heads = Vec::with_capacity(PAGE);
    loop {
        let page = store
            .read_all(&cursor, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        for envelope in &page.events {
            report.events += 1;
            if current
                .as_ref()
                .is_none_or(|(id, ..)| *id != envelope.stream_id)
            {
                heads.extend(current.take().and_then(|(_, post, at)| head_of(&post, at)));
                current = Some((envelope.stream_id, Post::default(), envelope.occurred_at));
                report.streams += 1;
            }
            let event = envelope.decode().map_err(|e| {
                format!(
                    "stream {} v{} is unreadable: {e}",
                    envelope.stream_id, envelope.version
                )
            })?;
            if let Some((_, post, at)) = current.as_mut() {
                apply(post, &event);
                *at = envelope.occurred_at;
            }
        }
        if page.next.is_none() {
            heads.extend(current.take().and_then(|(_, post, at)| head_of(&post, at)));
        }
        if heads.len() >= PAGE || page.next.is_none() {
            records
                .record_stream_heads(&heads)
                .await
                .map_err(|e| e.to_string())?;
            heads.clear();
        }
        match page.next {
            Some(next) => cursor = next,
            None => return Ok(report),
        }
    }
}

fn head_of(post: &Post, updated_at: domain::Timestamp) -> Option<StreamHead> {
    Some(StreamHead {
        post_id: post.id()?,
        author: post.author()?.clone(),
        version: post.version(),
        deleted: post.is_deleted(),
        updated_at,
    })
}
