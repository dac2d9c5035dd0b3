//! Group commit. Callers that write at the same time have their items carried to
//! the store together: one statement and one commit for many commands, instead
//! of one each. A lone caller is sent on at once (a batch of one), so batching
//! adds no wait when the host is idle; batches form only while earlier ones are
//! still at the store.
//!
//! The batch runs in a task of its own, so a caller that goes away (a client
//! that hangs up) never cancels the other callers' writes. A caller that does
//! not need the output hands its item over without waiting
//! ([`Batcher::submit_detached`]); [`Batcher::idle`] waits until every item
//! handed over has been through its batch (a host drains with it on shutdown).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

type Job<T, O> = (T, oneshot::Sender<O>);
type Execute<T, O> = dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = Vec<O>> + Send>> + Send + Sync;

/// How big batches get and how many run at once.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most items carried in one batch.
    pub max_items: usize,
    /// Batches at the store at the same time; further items wait and form the
    /// next batch.
    pub max_in_flight: usize,
    /// How long a batch keeps collecting after its first item (up to
    /// `max_items`). Zero for writes a caller waits on; longer for detached
    /// items nobody waits for, so that they cost the store fewer, bigger
    /// statements and commits.
    pub linger: Duration,
}

/// Hands items to an `execute` function in batches. `execute` must answer with
/// exactly one output per item, in the items' order.
pub struct Batcher<T, O> {
    sender: Mutex<Option<mpsc::UnboundedSender<Job<T, O>>>>,
    execute: Arc<Execute<T, O>>,
    limits: BatchLimits,
    pending: Arc<Pending>,
}

/// Items handed over and not yet through their batch.
#[derive(Debug, Default)]
struct Pending {
    count: AtomicUsize,
    drained: Notify,
}

/// Counts a batch's items as through when dropped: when the batch finished, or
/// when it was dropped unfinished because its runtime shut down.
struct Through(Arc<Pending>, usize);

impl Drop for Through {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(self.1, Ordering::AcqRel) == self.1 {
            self.0.drained.notify_waiters();
        }
    }
}

impl<T, O> std::fmt::Debug for Batcher<T, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static, O: Send + 'static> Batcher<T, O> {
    pub fn new<F, Fut>(limits: BatchLimits, execute: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let limits = BatchLimits {
            max_items: limits.max_items.max(1),
            max_in_flight: limits.max_in_flight.max(1),
            ..limits
        };
        Self {
            sender: Mutex::new(None),
            execute: Arc::new(move |items| Box::pin(execute(items))),
            limits,
            pending: Arc::default(),
        }
    }

    /// Sends `item` with the next batch and waits for its output. `None` only if
    /// the batch was dropped unfinished, which happens when the runtime that ran
    /// it shuts down; the item may or may not have reached the store.
    pub async fn submit(&self, item: T) -> Option<O> {
        let (reply, output) = oneshot::channel();
        self.send((item, reply));
        output.await.ok()
    }

    /// Hands `item` to the next batch without waiting for it; its output is
    /// dropped. Must be called on a runtime (the batch runs on it).
    pub fn submit_detached(&self, item: T) {
        let (reply, _) = oneshot::channel();
        self.send((item, reply));
    }

    /// Completes once every item handed over so far has been through its batch.
    /// Items still queued when the runtime running the batches shut down are
    /// never through, so a caller bounds this wait (the host: its shutdown grace).
    pub async fn idle(&self) {
        loop {
            let drained = self.pending.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.pending.count.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }

    fn send(&self, job: Job<T, O>) {
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        let mut sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let job = match sender.as_ref() {
            Some(live) => match live.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(job)) => job,
            },
            None => job,
        };
        // First use, or the runtime that ran the collector is gone (tests run one
        // runtime each): start a collector on the caller's runtime.
        let (live, jobs) = mpsc::unbounded_channel();
        tokio::spawn(collect(
            jobs,
            Arc::clone(&self.execute),
            self.limits,
            Arc::clone(&self.pending),
        ));
        // The collector was just started with `jobs`, so this cannot fail.
        let _ = live.send(job);
        *sender = Some(live);
    }
}

/// Takes whatever is waiting (up to the limit) whenever a batch slot is free.
async fn collect<T: Send + 'static, O: Send + 'static>(
    mut jobs: mpsc::UnboundedReceiver<Job<T, O>>,
    execute: Arc<Execute<T, O>>,
    limits: BatchLimits,
    pending: Arc<Pending>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight));
    loop {
        let slot = Arc::clone(&slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + limits.linger;
        while batch.len() < limits.max_items {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if limits.linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(until, jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let execute = Arc::clone(&execute);
        let through = Through(Arc::clone(&pending), batch.len());
        tokio::spawn(async move {
            let _through = through;
            let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
            let count = items.len();
            let outputs = execute(items).await;
            debug_assert_eq!(outputs.len(), count, "one output per item");
            for (reply, output) in replies.into_iter().zip(outputs) {
                // The caller may have gone away; its write still happened.
                let _ = reply.send(output);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn doubling(batches: Arc<AtomicUsize>) -> Batcher<u32, u32> {
        Batcher::new(
            BatchLimits {
                max_items: 100,
                max_in_flight: 1,
                linger: Duration::ZERO,
            },
            move |items: Vec<u32>| {
                let batches = Arc::clone(&batches);
                async move {
                    batches.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    items.into_iter().map(|i| i * 2).collect()
                }
            },
        )
    }

    #[tokio::test]
    async fn concurrent_items_share_batches_and_each_gets_its_own_output() {
        let batches = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(doubling(Arc::clone(&batches)));
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move { (i, batcher.submit(i).await) })
            })
            .collect();
        for call in calls {
            let (i, output) = call.await.expect("task");
            assert_eq!(output, Some(i * 2));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 50, "50 concurrent items took {batches} batches");
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_cancel_the_batch() {
        let batches = Arc::new(AtomicUsize::new(0));
        let batcher = Arc::new(doubling(Arc::clone(&batches)));
        let gone = tokio::spawn({
            let batcher = Arc::clone(&batcher);
            async move { batcher.submit(1).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        gone.abort();
        assert_eq!(batcher.submit(2).await, Some(4));
        assert_eq!(batches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn idle_waits_for_every_item_handed_over_without_waiting() {
        let (batches, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let batcher = Batcher::new(
            BatchLimits {
                max_items: 4,
                max_in_flight: 1,
                linger: Duration::ZERO,
            },
            {
                let (batches, done) = (Arc::clone(&batches), Arc::clone(&done));
                move |items: Vec<u32>| {
                    let (batches, done) = (Arc::clone(&batches), Arc::clone(&done));
                    async move {
                        batches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        done.fetch_add(items.len(), Ordering::SeqCst);
                        vec![(); items.len()]
                    }
                }
            },
        );
        batcher.idle().await;
        for i in 0..10 {
            batcher.submit_detached(i);
        }
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "handed over without waiting"
        );
        batcher.idle().await;
        assert_eq!(done.load(Ordering::SeqCst), 10);
        assert!(
            batches.load(Ordering::SeqCst) >= 3,
            "at most 4 items a batch"
        );
    }

    #[test]
    fn a_batcher_outlives_the_runtime_that_first_used_it() {
        let batcher = doubling(Arc::new(AtomicUsize::new(0)));
        for _ in 0..2 {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            assert_eq!(runtime.block_on(batcher.submit(3)), Some(6));
        }
    }

    #[tokio::test]
    async fn a_lingering_batch_gathers_items_that_arrive_while_it_waits() {
        let batch_sizes = Arc::new(Mutex::new(Vec::new()));
        let lingering = |linger| {
            let sizes = Arc::clone(&batch_sizes);
            Batcher::new(
                BatchLimits {
                    max_items: 100,
                    max_in_flight: 1,
                    linger,
                },
                move |items: Vec<u32>| {
                    sizes.lock().unwrap().push(items.len());
                    async move { vec![(); items.len()] }
                },
            )
        };
        for (linger, expected) in [
            (Duration::ZERO, vec![1, 1, 1, 1]),
            (Duration::from_millis(200), vec![4]),
        ] {
            batch_sizes.lock().unwrap().clear();
            let batcher = lingering(linger);
            for i in 0..4 {
                batcher.submit_detached(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            batcher.idle().await;
            assert_eq!(*batch_sizes.lock().unwrap(), expected, "linger {linger:?}");
        }
    }
}
