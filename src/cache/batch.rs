//! Groups cache writes from many workers into pipelines of up to
//! `max_batch_size` entries.
//!
//! Workers call [`BatchWriter::write`], which hands the entry to one
//! background task over a bounded channel and waits for the outcome of the
//! batch that carried it. The task takes one entry, then whatever else is
//! already waiting (without waiting for more), up to `max_batch_size` read
//! from the live tunables at every batch, and writes them with a single
//! [`Cache::set_many`]. An idle writer therefore adds no latency: a lone
//! entry is written at once; batches only grow when writes arrive faster
//! than the backend absorbs them.
//!
//! The task ends once every handle is dropped and the queue is drained, so
//! no accepted write is lost on shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Cache, CacheEntry, CacheError};
use crate::config::SharedTunables;

/// Entries that may wait for the writer before `write` itself waits for room.
const QUEUE_CAPACITY: usize = 1024;

/// One queued write and where to send its outcome.
type Job = (CacheEntry, oneshot::Sender<Result<(), CacheError>>);

/// Handle to the background writer task. Cloning shares the task.
#[derive(Clone)]
pub struct BatchWriter {
    tx: mpsc::Sender<Job>,
}

impl BatchWriter {
    /// Starts the writer task; it drains and exits when every handle is dropped.
    pub fn spawn(cache: Arc<dyn Cache>, tunables: SharedTunables) -> Self {
        Self::spawn_with_handle(cache, tunables).0
    }

    /// Like [`BatchWriter::spawn`], also returning the task's handle so that
    /// shutdown can drop every writer and then await the final flush.
    pub fn spawn_with_handle(
        cache: Arc<dyn Cache>,
        tunables: SharedTunables,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(rx, cache, tunables));
        (BatchWriter { tx }, task)
    }

    /// Queues `entry` and waits until the batch holding it was written.
    pub async fn write(&self, entry: CacheEntry) -> Result<(), CacheError> {
        let (done_tx, done_rx) = oneshot::channel();
        self.tx
            .send((entry, done_tx))
            .await
            .map_err(|_| stopped())?;
        done_rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> CacheError {
    CacheError::Unavailable("cache batch writer has stopped".into())
}

/// The writer loop: one `set_many` per batch, every waiter told the result.
async fn run(mut rx: mpsc::Receiver<Job>, cache: Arc<dyn Cache>, tunables: SharedTunables) {
    while let Some(first) = rx.recv().await {
        let max = tunables.load().max_batch_size.max(1);
        let mut entries = Vec::with_capacity(max.min(QUEUE_CAPACITY));
        let mut waiters = Vec::with_capacity(max.min(QUEUE_CAPACITY));
        let (entry, waiter) = first;
        entries.push(entry);
        waiters.push(waiter);
        while entries.len() < max {
            match rx.try_recv() {
                Ok((entry, waiter)) => {
                    entries.push(entry);
                    waiters.push(waiter);
                }
                Err(_) => break,
            }
        }
        // A panicking backend must not take the writer down with it: every
        // later write would fail. Its batch fails; the loop goes on.
        let result = AssertUnwindSafe(cache.set_many(&entries))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(CacheError::Command(
                    "cache backend panicked while writing".into(),
                ))
            });
        if let Err(e) = &result {
            tracing::warn!(error = %e, entries = entries.len(), "cache batch write failed");
        }
        for waiter in waiters {
            // A waiter that gave up (dropped its future) no longer cares.
            let _ = waiter.send(result.clone());
        }
    }
}
