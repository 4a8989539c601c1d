//! Jobs: one per accepted request (or schedule firing), with the outcome of
//! each of its keys, for `GET /warm/jobs/{id}` and the `active_jobs` count.
//!
//! Finished jobs are kept up to `jobs_retained`, oldest dropped first; a job
//! with keys still pending is never dropped.

use std::collections::VecDeque;

use hashbrown::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use crate::config::Strategy;
use crate::protocol::{JobView, KeyOutcome};

/// Status of a key that is not finished yet.
pub const QUEUED: &str = "queued";
pub const IN_FLIGHT: &str = "in_flight";
pub const DEDUPLICATED: &str = "deduplicated";
pub const SKIPPED_RECENT: &str = "skipped_recent";
pub const HANDED_BACK: &str = "handed_back";

struct Job {
    source: String,
    strategy: Strategy,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    keys: Vec<KeyOutcome>,
    index: HashMap<String, usize>,
    /// Keys queued or in flight.
    pending: usize,
}

impl Job {
    fn view(&self, id: &str) -> JobView {
        let count = |s: &str| self.keys.iter().filter(|k| k.status == s).count();
        JobView {
            job_id: id.to_string(),
            source: self.source.clone(),
            strategy: self.strategy,
            created_at: self.created_at,
            finished_at: self.finished_at,
            done: self.pending == 0,
            total: self.keys.len(),
            queued: count(QUEUED),
            in_flight: count(IN_FLIGHT),
            succeeded: count("success"),
            failed: count("failed") + count("cache_error") + count(HANDED_BACK),
            not_found: count("not_found"),
            deduplicated: count(DEDUPLICATED),
            skipped_recent: count(SKIPPED_RECENT),
            keys: self.keys.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    jobs: HashMap<String, Job>,
    /// Finished job ids, oldest first.
    finished: VecDeque<String>,
    active: usize,
}

/// Every job the service remembers.
pub struct JobRegistry {
    inner: Mutex<Inner>,
    retained: usize,
    seq: AtomicU64,
}

impl JobRegistry {
    pub fn new(retained: usize) -> Self {
        JobRegistry {
            inner: Mutex::new(Inner::default()),
            retained: retained.max(1),
            seq: AtomicU64::new(0),
        }
    }

    /// A fresh id `warm-<unix-ms>-<n>`.
    pub fn next_id(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("warm-{}-{n}", Utc::now().timestamp_millis())
    }

    /// Registers a job whose keys all start with the given statuses
    /// (`queued`, `deduplicated` or `skipped_recent`).
    pub fn create(
        &self,
        id: &str,
        source: &str,
        strategy: Strategy,
        keys: Vec<(String, &'static str)>,
    ) {
        let mut index = HashMap::with_capacity(keys.len());
        let mut outcomes = Vec::with_capacity(keys.len());
        let mut pending = 0;
        for (key, status) in keys {
            if index.contains_key(&key) {
                continue;
            }
            if status == QUEUED {
                pending += 1;
            }
            index.insert(key.clone(), outcomes.len());
            outcomes.push(KeyOutcome {
                key,
                status: status.to_string(),
                attempts: None,
                duration_ms: None,
                error: None,
            });
        }
        let now = Utc::now();
        let job = Job {
            source: source.to_string(),
            strategy,
            created_at: now,
            finished_at: (pending == 0).then_some(now),
            keys: outcomes,
            index,
            pending,
        };
        let mut inner = self.inner.lock();
        if pending == 0 {
            inner.finished.push_back(id.to_string());
        } else {
            inner.active += 1;
        }
        inner.jobs.insert(id.to_string(), job);
        Self::trim(&mut inner, self.retained);
    }

    /// Changes queued keys to `deduplicated` after the queue refused them.
    pub fn mark_deduplicated(&self, id: &str, keys: &[String]) {
        for key in keys {
            let outcome = KeyOutcome {
                key: key.clone(),
                status: DEDUPLICATED.to_string(),
                attempts: None,
                duration_ms: None,
                error: None,
            };
            self.finish(id, outcome);
        }
    }

    /// A worker took the key.
    pub fn mark_in_flight(&self, id: &str, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(job) = inner.jobs.get_mut(id) {
            if let Some(&i) = job.index.get(key) {
                job.keys[i].status = IN_FLIGHT.to_string();
            }
        }
    }

    /// The key was put back in the queue (shutdown, emergency hand-back).
    pub fn mark_queued(&self, id: &str, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(job) = inner.jobs.get_mut(id) {
            if let Some(&i) = job.index.get(key) {
                job.keys[i].status = QUEUED.to_string();
            }
        }
    }

    /// The key `outcome.key` of job `id` finished with `outcome`.
    pub fn finish(&self, id: &str, outcome: KeyOutcome) {
        let mut inner = self.inner.lock();
        let mut finished_now = false;
        if let Some(job) = inner.jobs.get_mut(id) {
            if let Some(&i) = job.index.get(&outcome.key) {
                let was_pending = matches!(job.keys[i].status.as_str(), QUEUED | IN_FLIGHT);
                job.keys[i] = outcome;
                if was_pending {
                    job.pending -= 1;
                    if job.pending == 0 {
                        job.finished_at = Some(Utc::now());
                        finished_now = true;
                    }
                }
            }
        }
        if finished_now {
            inner.active -= 1;
            inner.finished.push_back(id.to_string());
            Self::trim(&mut inner, self.retained);
        }
    }

    pub fn view(&self, id: &str) -> Option<JobView> {
        self.inner.lock().jobs.get(id).map(|j| j.view(id))
    }

    /// Jobs with keys still queued or in flight.
    pub fn active(&self) -> usize {
        self.inner.lock().active
    }

    fn trim(inner: &mut Inner, retained: usize) {
        while inner.finished.len() > retained {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::WarmStatus;

    #[test]
    fn lifecycle_and_counts() {
        let r = JobRegistry::new(10);
        let id = r.next_id();
        assert!(id.starts_with("warm-") && id.ends_with("-1"), "{id}");
        r.create(
            &id,
            "key",
            Strategy::Breadth,
            vec![
                ("a".into(), QUEUED),
                ("b".into(), QUEUED),
                ("c".into(), SKIPPED_RECENT),
            ],
        );
        assert_eq!(r.active(), 1);
        r.mark_deduplicated(&id, &["b".to_string()]);
        r.mark_in_flight(&id, "a");
        let v = r.view(&id).unwrap();
        assert_eq!(
            (v.in_flight, v.deduplicated, v.skipped_recent, v.done),
            (1, 1, 1, false)
        );
        r.finish(
            &id,
            KeyOutcome::finished("a".into(), WarmStatus::Success, 2, 10, None),
        );
        let v = r.view(&id).unwrap();
        assert!(v.done && v.finished_at.is_some());
        assert_eq!(v.succeeded, 1);
        assert_eq!(r.active(), 0);
    }

    #[test]
    fn only_finished_jobs_are_dropped() {
        let r = JobRegistry::new(2);
        let pending = r.next_id();
        r.create(
            &pending,
            "key",
            Strategy::Priority,
            vec![("k".into(), QUEUED)],
        );
        let ids: Vec<_> = (0..5)
            .map(|_| {
                let id = r.next_id();
                r.create(
                    &id,
                    "key",
                    Strategy::Priority,
                    vec![("x".into(), DEDUPLICATED)],
                );
                id
            })
            .collect();
        assert!(r.view(&pending).is_some());
        assert!(r.view(&ids[0]).is_none());
        assert!(r.view(&ids[4]).is_some());
    }
}
