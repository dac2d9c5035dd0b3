//! How every host stops its background work: one [`Background`] per host owns
//! the tasks that run beside the HTTP server (the outbox relay, the
//! consumers, the change listener). When the server has drained,
//! [`Background::stop`] tells each task through its [`Stopping`] and waits
//! for it: a task finishes the round it is in, then returns.

use std::future::Future;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The background tasks of one host, and the signal that stops them.
#[derive(Debug)]
pub struct Background {
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl Background {
    pub fn new() -> Self {
        Self {
            stop: watch::Sender::new(false),
            tasks: Vec::new(),
        }
    }

    /// What a task watches to know it should stop.
    pub fn stopping(&self) -> Stopping {
        Stopping(self.stop.subscribe())
    }

    /// Spawns `task`, named for the log if it panics.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// Asks every task to stop and waits until each has returned.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        for (name, task) in self.tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, task = name, "background task failed");
            }
        }
    }
}

/// A task's view of its host's stop signal.
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// A signal that never fires, for a task run on its own (tests, tools).
    pub fn never() -> Self {
        let (stop, stopping) = watch::channel(false);
        // The sender is dropped: `requested` then waits forever.
        drop(stop);
        Self(stopping)
    }

    /// Whether the host has asked its tasks to stop.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the host asks its tasks to stop (at once if it has).
    pub async fn requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // The host's Background is gone without asking: never.
            std::future::pending::<()>().await;
        }
    }

    /// Runs `work` until it completes or the host asks to stop, whichever
    /// comes first: for tasks with nothing to finish.
    pub async fn or_until_stopped<F: Future>(mut self, work: F) -> Option<F::Output> {
        tokio::select! {
            output = work => Some(output),
            () = self.requested() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn stop_waits_for_each_task_to_finish_its_round() {
        let mut background = Background::new();
        let finished = Arc::new(AtomicBool::new(false));
        let mut stopping = background.stopping();
        let flag = Arc::clone(&finished);
        background.spawn("worker", async move {
            stopping.requested().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        let idle = background.stopping();
        background.spawn("idle", async move {
            let never = std::future::pending::<()>();
            assert!(idle.or_until_stopped(never).await.is_none());
        });
        background.stop().await;
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_signal_asked_before_the_wait_is_seen() {
        let background = Background::new();
        let mut stopping = background.stopping();
        background.stop().await;
        assert!(stopping.is_requested());
        tokio::time::timeout(Duration::from_secs(1), stopping.requested())
            .await
            .expect("already requested");
    }

    #[tokio::test]
    async fn never_never_fires() {
        let mut stopping = Stopping::never();
        assert!(!stopping.is_requested());
        let waited = tokio::time::timeout(Duration::from_millis(50), stopping.requested()).await;
        assert!(waited.is_err());
    }
}
