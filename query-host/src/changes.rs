//! Read-your-writes without polling: one connection LISTENs for the projector's
//! `read_model_changed` notifications and fans them out to the requests waiting
//! for a post to reach a version.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, Config, NoTls};
use uuid::Uuid;

/// A post reached a version in the read model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub post: Uuid,
    pub version: u64,
}

pub fn parse_change(payload: &str) -> Option<Change> {
    let (post, version) = payload.split_once(':')?;
    Some(Change {
        post: Uuid::try_parse(post).ok()?,
        version: version.parse().ok()?,
    })
}

/// Listens until the sender has no receivers left and the task is dropped;
/// reconnects when PostgreSQL goes away. `ready` is told after each (re)subscription.
pub async fn listen(
    config: Config,
    changes: broadcast::Sender<Change>,
    ready: tokio::sync::watch::Sender<bool>,
) {
    let mut logged = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let subscribe = client.batch_execute("LISTEN read_model_changed");
                // The connection must be driven for the LISTEN to complete.
                let subscribed = tokio::select! {
                    result = subscribe => result.is_ok(),
                    _ = messages.next() => false,
                };
                if subscribed {
                    logged = false;
                    let _ = ready.send(true);
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => {
                                if let Some(change) = parse_change(note.payload()) {
                                    // No receiver just means nobody waits right now.
                                    let _ = changes.send(change);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = ready.send(false);
                }
            }
            Err(error) => {
                if !logged {
                    tracing::warn!(%error, "cannot LISTEN for read model changes; retrying");
                    logged = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
