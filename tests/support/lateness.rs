//! How late this test process wakes its tasks while something runs: a
//! probe that asks for 1 ms sleeps and keeps the worst oversleep.
//!
//! Rate tests stamp requests when a task runs (a grant returned, a request
//! arrived); a starved scheduler (a build on the other core, CI running
//! many test binaries) delays some stamps and bunches them into one window.
//! Such a test allows `rate x lateness` more requests per window.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub struct LatenessProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Duration>,
}

impl LatenessProbe {
    pub fn start() -> LatenessProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                let asked = Instant::now() + Duration::from_millis(1);
                tokio::time::sleep_until(asked.into()).await;
                worst = worst.max(Instant::now().saturating_duration_since(asked));
            }
            worst
        });
        LatenessProbe { stop, task }
    }

    /// The worst lateness seen since `start`.
    pub async fn stop(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Requests a one-second window may hold beyond `rps` (and beyond the
/// test's own allowance for timer granularity) because their stamps were
/// up to `lateness` late: the whole request intervals that fit in it.
pub fn slack(rps: u32, lateness: Duration) -> usize {
    (f64::from(rps) * lateness.as_secs_f64()).floor() as usize
}
