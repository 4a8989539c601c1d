//! Workers: each takes the best task from the queue, fetches the key through
//! the guarded origin (rate limit + retries), writes it through the batch
//! writer, then records the outcome (job, metrics, event). This is the only
//! place where origin and cache meet.
//!
//! The number of workers follows `concurrent_warmers` at run time: extra
//! workers exit after their current key, missing ones are spawned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::cluster_link::{ClusterLink, Mark};
use super::queue::Task;
use super::{Engine, now_unix};
use crate::cache::{CacheEntry, effective_ttl};
use crate::events::{WarmCompleted, WarmStatus};
use crate::origin::OriginError;
use crate::origin::retry::{FetchObserver, RetryPolicy};
use crate::protocol::{KeyOutcome, WorkerStatus};

/// What one worker is doing, for `GET /warm/status`.
#[derive(Debug, Clone)]
pub struct Slot {
    /// `idle`, `busy`, or `waiting_rate_limit` (busy, its fetch held back
    /// by the origin rate limiter).
    pub state: &'static str,
    pub current_key: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
}

impl Slot {
    fn idle() -> Self {
        Slot {
            state: "idle",
            current_key: None,
            started_at: None,
        }
    }
}

/// One entry per worker id; `None` = no worker with that id runs.
#[derive(Default)]
pub struct WorkerBoard {
    slots: Mutex<Vec<Option<Slot>>>,
}

impl WorkerBoard {
    pub fn snapshot(&self, paused: bool) -> Vec<WorkerStatus> {
        self.slots
            .lock()
            .iter()
            .enumerate()
            .filter_map(|(id, s)| {
                s.as_ref().map(|s| WorkerStatus {
                    id,
                    state: if paused && s.state == "idle" {
                        "paused".into()
                    } else {
                        s.state.into()
                    },
                    current_key: s.current_key.clone(),
                    started_at: s.started_at,
                })
            })
            .collect()
    }

    fn set(&self, id: usize, slot: Slot) {
        if let Some(Some(s)) = self.slots.lock().get_mut(id) {
            *s = slot;
        }
    }

    /// Changes worker `id`'s state only, keeping its key and start time.
    fn set_state(&self, id: usize, state: &'static str) {
        if let Some(Some(s)) = self.slots.lock().get_mut(id) {
            s.state = state;
        }
    }

    /// Ids of workers to spawn so that exactly `wanted` run.
    fn claim_missing(&self, wanted: usize) -> Vec<usize> {
        let mut slots = self.slots.lock();
        if slots.len() < wanted {
            slots.resize(wanted, None);
        }
        let mut ids = Vec::new();
        for (id, s) in slots.iter_mut().enumerate().take(wanted) {
            if s.is_none() {
                *s = Some(Slot::idle());
                ids.push(id);
            }
        }
        ids
    }

    /// Whether worker `id` should exit; if so its slot is released atomically.
    fn retire_if_surplus(&self, id: usize, wanted: usize) -> bool {
        let mut slots = self.slots.lock();
        if id >= wanted {
            if let Some(s) = slots.get_mut(id) {
                *s = None;
            }
            while matches!(slots.last(), Some(None)) {
                slots.pop();
            }
            return true;
        }
        false
    }

    fn release(&self, id: usize) {
        if let Some(s) = self.slots.lock().get_mut(id) {
            *s = None;
        }
    }
}

/// Spawns workers until `concurrent_warmers` run.
pub(crate) fn ensure_workers(engine: &Arc<Engine>) {
    let wanted = engine.tunables.load().concurrent_warmers;
    for id in engine.board.claim_missing(wanted) {
        let e = engine.clone();
        engine.worker_tasks.spawn(async move { run(e, id).await });
    }
}

async fn run(engine: Arc<Engine>, id: usize) {
    let stop = engine.workers_stop.clone();
    let mut emergency = engine.emergency.subscribe();
    loop {
        if stop.is_cancelled() {
            break;
        }
        if engine
            .board
            .retire_if_surplus(id, engine.tunables.load().concurrent_warmers)
        {
            return;
        }
        if emergency.borrow_and_update().is_some() {
            tokio::select! {
                _ = emergency.changed() => continue,
                _ = stop.cancelled() => break,
                _ = engine.reconfigured.notified() => continue,
            }
        }
        let task = tokio::select! {
            t = engine.queue.next(&stop) => t,
            _ = engine.reconfigured.notified() => continue,
            _ = emergency.changed() => continue,
        };
        let Some(task) = task else { break };
        engine.board.set(
            id,
            Slot {
                state: "busy",
                current_key: Some(task.key.clone()),
                started_at: Some(Utc::now()),
            },
        );
        if warm_one(&engine, id, &task).await {
            engine.queue.finish(&task.key);
        } else {
            // Not warmed yet (no lease): back in the local queue, tried again shortly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            engine.queue.hand_back(&task.key);
        }
        engine.board.set(id, Slot::idle());
    }
    engine.board.release(id);
}

/// The engine's origin observer, plus worker `id`'s board entry: the worker
/// shows `waiting_rate_limit` while the limiter holds its fetch back.
struct WorkerWatch<'a> {
    engine: &'a Engine,
    id: usize,
}

impl FetchObserver for WorkerWatch<'_> {
    fn rate_limited(&self) {
        self.engine.watch.rate_limited();
    }

    fn attempt(&self, key: &str, latency: Duration, result: Result<(), &OriginError>) {
        self.engine.watch.attempt(key, latency, result);
    }

    fn limiter_wait(&self, waiting: bool) {
        let state = if waiting {
            "waiting_rate_limit"
        } else {
            "busy"
        };
        self.engine.board.set_state(self.id, state);
    }
}

/// Fetches, writes and reports one key for worker `id`. `false` when the
/// key could not be tried yet (cluster lease unavailable) and must stay queued.
pub(crate) async fn warm_one(engine: &Engine, id: usize, task: &Task) -> bool {
    let t = engine.tunables.load_full();
    let cluster = engine.cluster.as_deref();
    let claim = cluster.and_then(|c| c.release_claim(&task.key));
    if let Some(c) = cluster {
        // At most one instance fetches a key at a time.
        match c.take_lease(&task.key, ClusterLink::lease_ttl(&t)).await {
            Ok(true) => {}
            Ok(false) => {
                // A live instance is fetching this key right now: keep the
                // task (and its claim) and try again shortly, rather than
                // report a duplicate that was never warmed here.
                if let Some(claim) = claim {
                    c.hold(claim);
                }
                return false;
            }
            Err(e) => {
                // Without the lease the guarantee cannot be kept: keep the
                // task and its claim, and try again when Redis answers.
                tracing::warn!(key = %task.key, error = %e, "cannot take the fetch lease; will retry");
                if let Some(claim) = claim {
                    c.hold(claim);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                return false;
            }
        }
    } else {
        engine.jobs.mark_in_flight(&task.job_id, &task.key);
    }
    let started = Instant::now();
    let policy = RetryPolicy {
        retries: t.retry_attempts,
        backoff_base: t.backoff_base,
        timeout: t.origin_timeout,
    };
    let watch = WorkerWatch { engine, id };
    let report = engine.origin.fetch(&task.key, policy, &watch).await;
    let (status, bytes, error) = match report.result {
        Ok(fetched) => {
            let bytes = fetched.body.len() as u64;
            let ttl = effective_ttl(fetched.max_age, t.default_ttl, t.ttl_jitter);
            let entry = CacheEntry {
                key: task.key.clone(),
                value: fetched.body,
                ttl,
            };
            match write_with_retry(engine, entry).await {
                Ok(()) => {
                    engine.telemetry.cache_written(1);
                    engine.recent.insert(task.key.clone(), Instant::now());
                    engine.note_warmed(&task.key, now_unix(), ttl, true);
                    (WarmStatus::Success, bytes, None)
                }
                Err(e) => (WarmStatus::CacheError, bytes, Some(e.to_string())),
            }
        }
        Err(OriginError::NotFound) => {
            engine.not_found.insert(task.key.clone(), Instant::now());
            (
                WarmStatus::NotFound,
                0,
                Some(OriginError::NotFound.to_string()),
            )
        }
        Err(e) => (
            WarmStatus::Failed,
            0,
            Some(format!("{} after {} attempts", e, report.attempts)),
        ),
    };
    let took = started.elapsed();
    engine
        .telemetry
        .warm_finished(&task.key, task.strategy, status, took, report.attempts);
    let duration_ms = duration_ms(took);
    let outcome = KeyOutcome::finished(
        task.key.clone(),
        status,
        report.attempts,
        duration_ms,
        error.clone(),
    );
    match cluster {
        Some(c) => {
            let mark = match status {
                WarmStatus::Success if !t.min_rewarm_interval.is_zero() => {
                    Some(Mark::Warmed(t.min_rewarm_interval))
                }
                WarmStatus::NotFound => Some(Mark::NotFound(t.default_ttl)),
                _ => None,
            };
            // At least once: the claim is acked only after the outcome is
            // recorded; if Redis stays away, the task is delivered again.
            c.finish_key(&task.job_id, &outcome, mark, claim.as_ref())
                .await;
        }
        None => engine.jobs.finish(&task.job_id, outcome),
    }
    engine.events.emit(WarmCompleted {
        key: task.key.clone(),
        job_id: task.job_id.to_string(),
        status,
        duration_ms,
        attempts: report.attempts,
        bytes,
        error,
        completed_at: Utc::now(),
    });
    true
}

/// Writes one entry, retrying while the backend is unreachable (a Redis
/// restart, a failover) for up to ~15 s, so a blip does not fail the key.
async fn write_with_retry(
    engine: &Engine,
    entry: CacheEntry,
) -> Result<(), crate::cache::CacheError> {
    let mut delay = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match engine.writer.write(entry.clone()).await {
            Err(crate::cache::CacheError::Unavailable(e)) if Instant::now() + delay < deadline => {
                tracing::warn!(key = %entry.key, error = %e, "cache unavailable; retrying the write");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}
