//! Emergency stop: watches the latency of the most recent origin requests and
//! stops dispatch when their p95 exceeds `emergency_threshold`. Queued work is
//! kept. An automatic stop is lifted by the engine's probe loop once the
//! origin answers under the threshold again; a manual stop
//! (`POST /warm/emergency-stop`) only by `POST /warm/resume`.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Why dispatch is stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInfo {
    pub reason: String,
    pub since: DateTime<Utc>,
    /// Set by an operator; never lifted automatically.
    pub manual: bool,
    /// A key to probe the origin with (the slow one), for automatic stops.
    pub probe_key: Option<String>,
}

/// Fewest samples before the p95 is trusted.
const MIN_SAMPLES: usize = 5;

/// Rolling latency window and the stop state.
pub struct Emergency {
    window: Mutex<VecDeque<Duration>>,
    state: watch::Sender<Option<StopInfo>>,
}

impl Default for Emergency {
    fn default() -> Self {
        Self::new()
    }
}

impl Emergency {
    pub fn new() -> Self {
        Emergency {
            window: Mutex::new(VecDeque::new()),
            state: watch::channel(None).0,
        }
    }

    /// Records one origin request. Returns the new stop when this sample trips it.
    pub fn observe(
        &self,
        key: &str,
        latency: Duration,
        window: usize,
        threshold: Duration,
    ) -> Option<StopInfo> {
        let p95 = {
            let mut w = self.window.lock();
            w.push_back(latency);
            while w.len() > window.max(1) {
                w.pop_front();
            }
            if w.len() < MIN_SAMPLES.min(window.max(1)) {
                return None;
            }
            p95(w.iter().copied())
        };
        if p95 <= threshold || self.is_stopped() {
            return None;
        }
        let info = StopInfo {
            reason: format!(
                "origin p95 latency {} ms over the last {} requests exceeds the threshold of {} ms",
                p95.as_millis(),
                window,
                threshold.as_millis()
            ),
            since: Utc::now(),
            manual: false,
            probe_key: Some(key.to_string()),
        };
        let mut tripped = false;
        self.state.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(info.clone());
                tripped = true;
            }
            tripped
        });
        if tripped {
            self.window.lock().clear();
            Some(info)
        } else {
            None
        }
    }

    /// Operator stop. Returns false when already stopped (the reason is replaced by the manual one).
    pub fn stop_manual(&self, reason: &str) -> bool {
        let mut was_running = false;
        self.state.send_modify(|s| {
            was_running = s.is_none();
            *s = Some(StopInfo {
                reason: reason.to_string(),
                since: Utc::now(),
                manual: true,
                probe_key: None,
            });
        });
        was_running
    }

    /// An automatic stop decided elsewhere (another instance of the cluster).
    pub fn stop_shared(&self, reason: &str) {
        self.state.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(StopInfo {
                reason: reason.to_string(),
                since: Utc::now(),
                manual: false,
                probe_key: None,
            });
            true
        });
    }

    /// Lifts any stop and forgets the old samples. Returns whether one was active.
    pub fn resume(&self) -> bool {
        self.window.lock().clear();
        let mut was = false;
        self.state.send_if_modified(|s| {
            was = s.is_some();
            *s = None;
            was
        });
        was
    }

    /// Lifts the stop only if it is still the automatic one the caller probed for.
    pub fn resume_automatic(&self) -> bool {
        let mut lifted = false;
        self.state.send_if_modified(|s| {
            if matches!(s, Some(info) if !info.manual) {
                *s = None;
                lifted = true;
            }
            lifted
        });
        if lifted {
            self.window.lock().clear();
        }
        lifted
    }

    pub fn is_stopped(&self) -> bool {
        self.state.borrow().is_some()
    }

    pub fn current(&self) -> Option<StopInfo> {
        self.state.borrow().clone()
    }

    /// Watch the stop state (workers wait on it while stopped).
    pub fn subscribe(&self) -> watch::Receiver<Option<StopInfo>> {
        self.state.subscribe()
    }
}

/// Nearest-rank 95th percentile.
fn p95(samples: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = samples.collect();
    if v.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank, found in linear time: this runs on every origin response.
    let rank = (((v.len() as f64) * 0.95).ceil() as usize).clamp(1, v.len());
    *v.select_nth_unstable(rank - 1).1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn trips_on_p95_not_on_one_outlier() {
        let e = Emergency::new();
        for _ in 0..19 {
            assert!(e.observe("k", MS(10), 20, MS(100)).is_none());
        }
        // One slow request in 20: p95 is the 19th value = 10 ms.
        assert!(e.observe("slow", MS(5000), 20, MS(100)).is_none());
        assert!(!e.is_stopped());
        // A second one makes the 19th of 20 sorted values slow.
        let info = e.observe("slow", MS(5000), 20, MS(100)).expect("tripped");
        assert!(info.reason.contains("exceeds"), "{}", info.reason);
        assert_eq!(info.probe_key.as_deref(), Some("slow"));
        assert!(e.is_stopped());
        assert!(
            e.observe("slow", MS(5000), 20, MS(100)).is_none(),
            "trips once"
        );
    }

    #[test]
    fn needs_a_few_samples() {
        let e = Emergency::new();
        for _ in 0..4 {
            assert!(e.observe("k", MS(900), 50, MS(100)).is_none());
        }
        assert!(e.observe("k", MS(900), 50, MS(100)).is_some());
    }

    #[test]
    fn manual_stop_is_not_lifted_automatically() {
        let e = Emergency::new();
        assert!(e.stop_manual("maintenance"));
        assert!(!e.resume_automatic());
        assert!(e.is_stopped());
        assert!(e.resume());
        assert!(!e.is_stopped());
    }

    #[test]
    fn p95_nearest_rank() {
        assert_eq!(p95((1..=100).map(MS)), MS(95));
        assert_eq!(p95([MS(7)].into_iter()), MS(7));
        assert_eq!(p95((1..=100).rev().map(MS)), MS(95));
        // Any order: the nearest rank of the sorted samples.
        let shuffled: Vec<u64> = (0..40).map(|i| (i * 17) % 40).collect();
        assert_eq!(p95(shuffled.iter().map(|&v| MS(v))), MS(37));
        assert_eq!(p95([MS(3), MS(1), MS(2)].into_iter()), MS(3));
    }
}
