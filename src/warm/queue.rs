//! The warm queue: a priority queue of keys (priority desc, then FIFO) that
//! also remembers which keys are in flight, so a key already queued or being
//! fetched is never queued twice (deduplication).
//!
//! A std-style `parking_lot::Mutex` guards it: every operation is short and
//! never awaits while holding the lock. Waiting workers park on a `Notify`.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;

use hashbrown::HashMap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Strategy;

/// One key waiting to be warmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub key: String,
    pub priority: u8,
    pub job_id: Arc<str>,
    pub strategy: Strategy,
    /// Insertion order; FIFO among equal priorities.
    #[serde(skip)]
    pub seq: u64,
}

struct Ordered(Task);

impl PartialEq for Ordered {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    /// Max-heap: higher priority first, then lower sequence number first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.0
            .priority
            .cmp(&other.0.priority)
            .then_with(|| other.0.seq.cmp(&self.0.seq))
    }
}

#[derive(Default)]
struct Inner {
    heap: BinaryHeap<Ordered>,
    /// Key -> sequence number of its queued task (dedup of queued keys).
    queued: HashMap<String, u64>,
    /// Keys being warmed right now, with their task (handed back on shutdown).
    in_flight: HashMap<String, (Task, Instant)>,
    next_seq: u64,
    /// Set by [`WarmQueue::drain_all`]: what was not drained would be lost.
    closed: bool,
}

/// The queue was drained for shutdown and takes no more work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueClosed;

/// Priority queue with deduplication of queued and in-flight keys.
#[derive(Default)]
pub struct WarmQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl WarmQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues each task unless its key is already queued or in flight.
    /// Returns, per task, whether it was queued (`false` = deduplicated);
    /// after [`WarmQueue::drain_all`] nothing is queued ([`QueueClosed`]).
    pub fn push_many(&self, tasks: Vec<Task>) -> Result<Vec<bool>, QueueClosed> {
        let mut accepted = Vec::with_capacity(tasks.len());
        {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Err(QueueClosed);
            }
            for mut task in tasks {
                if inner.queued.contains_key(&task.key) || inner.in_flight.contains_key(&task.key) {
                    accepted.push(false);
                    continue;
                }
                task.seq = inner.next_seq;
                inner.next_seq += 1;
                inner.queued.insert(task.key.clone(), task.seq);
                inner.heap.push(Ordered(task));
                accepted.push(true);
            }
        }
        if accepted.iter().any(|a| *a) {
            self.notify.notify_waiters();
        }
        Ok(accepted)
    }

    /// Takes the best task, marking its key in flight.
    pub fn try_pop(&self) -> Option<Task> {
        let mut inner = self.inner.lock();
        let Ordered(task) = inner.heap.pop()?;
        inner.queued.remove(&task.key);
        inner
            .in_flight
            .insert(task.key.clone(), (task.clone(), Instant::now()));
        Some(task)
    }

    /// Waits for a task; `None` when `stop` fires first.
    pub async fn next(&self, stop: &CancellationToken) -> Option<Task> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(task) = self.try_pop() {
                return Some(task);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// The key that would be taken next.
    pub fn peek_key(&self) -> Option<String> {
        self.inner.lock().heap.peek().map(|o| o.0.key.clone())
    }

    /// Wakes every waiting worker (e.g. after a configuration change).
    pub fn wake_all(&self) {
        self.notify.notify_waiters();
    }

    /// The key is no longer in flight.
    pub fn finish(&self, key: &str) {
        self.inner.lock().in_flight.remove(key);
    }

    /// Puts an in-flight task back at the head of its priority band.
    pub fn hand_back(&self, key: &str) {
        let mut inner = self.inner.lock();
        if let Some((task, _)) = inner.in_flight.remove(key) {
            inner.queued.insert(task.key.clone(), task.seq);
            inner.heap.push(Ordered(task));
        }
    }

    /// Keys waiting (not in flight).
    pub fn len(&self) -> usize {
        self.inner.lock().heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn in_flight(&self) -> usize {
        self.inner.lock().in_flight.len()
    }

    /// Whether the key is queued or in flight.
    pub fn contains(&self, key: &str) -> bool {
        let inner = self.inner.lock();
        inner.queued.contains_key(key) || inner.in_flight.contains_key(key)
    }

    /// Removes and returns everything, in-flight tasks first, then queue order.
    /// Used at shutdown to persist work that was accepted but not done.
    pub fn drain_all(&self) -> Vec<Task> {
        let mut inner = self.inner.lock();
        inner.closed = true;
        let mut out: Vec<Task> = inner.in_flight.drain().map(|(_, (t, _))| t).collect();
        out.sort_by_key(|t| t.seq);
        let mut rest: Vec<Task> = std::mem::take(&mut inner.heap)
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|o| o.0)
            .collect();
        inner.queued.clear();
        out.append(&mut rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(key: &str, priority: u8) -> Task {
        Task {
            key: key.into(),
            priority,
            job_id: "j".into(),
            strategy: Strategy::Priority,
            seq: 0,
        }
    }

    #[test]
    fn priority_then_fifo() {
        let q = WarmQueue::new();
        q.push_many(vec![
            task("a", 10),
            task("b", 90),
            task("c", 10),
            task("d", 90),
        ])
        .unwrap();
        let order: Vec<_> = std::iter::from_fn(|| q.try_pop()).map(|t| t.key).collect();
        assert_eq!(order, ["b", "d", "a", "c"]);
    }

    #[test]
    fn queued_and_in_flight_keys_are_deduplicated() {
        let q = WarmQueue::new();
        assert_eq!(
            q.push_many(vec![task("a", 1), task("a", 5), task("b", 1)]),
            Ok(vec![true, false, true])
        );
        let t = q.try_pop().unwrap();
        assert_eq!(
            q.push_many(vec![task(&t.key, 1)]),
            Ok(vec![false]),
            "in flight"
        );
        q.finish(&t.key);
        assert_eq!(
            q.push_many(vec![task(&t.key, 1)]),
            Ok(vec![true]),
            "finished keys may be queued again"
        );
    }

    #[test]
    fn drain_returns_in_flight_then_queue_order() {
        let q = WarmQueue::new();
        q.push_many(vec![task("a", 1), task("b", 2), task("c", 3)])
            .unwrap();
        let first = q.try_pop().unwrap();
        assert_eq!(first.key, "c");
        let all: Vec<_> = q.drain_all().into_iter().map(|t| t.key).collect();
        assert_eq!(all, ["c", "b", "a"]);
        assert!(q.is_empty());
        assert_eq!(q.in_flight(), 0);
        // Drained for shutdown: a late push is refused, not kept where
        // nothing would save it.
        assert_eq!(q.push_many(vec![task("late", 1)]), Err(QueueClosed));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn next_wakes_on_push_and_stops_on_cancel() {
        let q = Arc::new(WarmQueue::new());
        let stop = CancellationToken::new();
        let q2 = q.clone();
        let s2 = stop.clone();
        let waiter = tokio::spawn(async move { q2.next(&s2).await });
        tokio::task::yield_now().await;
        q.push_many(vec![task("x", 1)]).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().key, "x");
        stop.cancel();
        assert!(q.next(&stop).await.is_none());
    }
}
