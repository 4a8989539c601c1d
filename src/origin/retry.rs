//! Retries with exponential backoff and jitter; every attempt passes the
//! rate limiter.
//!
//! One call to [`GuardedOrigin::fetch`] makes at most `retries + 1` attempts.
//! Each attempt waits for the [`OriginLimiter`] (telling
//! [`FetchObserver::limiter_wait`] while it is held back, and reporting
//! [`FetchObserver::rate_limited`] when it had to wait), makes one origin
//! request bounded by `policy.timeout`, and reports it with
//! [`FetchObserver::attempt`] (except [`OriginError::InvalidKey`], which is
//! refused before any request is made). Only errors whose
//! [`OriginError::is_retryable`] is true are retried (timeouts, connection
//! errors, 429, 5xx); a 404 or another 4xx is final at once.
//!
//! Delays come from backon's [`ExponentialBuilder`]: `base`, `2 * base`,
//! `4 * base`, ... capped at [`MAX_BACKOFF`], each plus a random jitter of up
//! to the same amount again (so never shorter than the plain exponential).
//! When the origin sent `Retry-After`, the delay is the larger of the backoff
//! and `Retry-After`, the latter capped at [`MAX_RETRY_AFTER`] so one origin
//! cannot park a worker for hours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::FutureExt;

use super::limiter::RateGate;
use super::{Fetched, Origin, OriginError};

/// Longest exponential step (before jitter).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How hard to try one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub backoff_base: Duration,
    pub timeout: Duration,
}

/// Told about every attempt as it happens (metrics, emergency stop, cost model).
pub trait FetchObserver: Send + Sync {
    /// The limiter made this attempt wait.
    fn rate_limited(&self);
    /// The limiter holds an attempt back (`true`: it had no slot at once),
    /// then lets it go or the fetch is dropped (`false`). Ignored by default.
    fn limiter_wait(&self, _waiting: bool) {}
    /// One origin request finished after `latency`.
    fn attempt(&self, key: &str, latency: Duration, result: Result<(), &OriginError>);
}

/// An observer that ignores everything (tools, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl FetchObserver for NoObserver {
    fn rate_limited(&self) {}
    fn attempt(&self, _key: &str, _latency: Duration, _result: Result<(), &OriginError>) {}
}

/// Result of all attempts for one key.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub result: Result<Fetched, OriginError>,
    pub attempts: u32,
}

/// An origin behind the rate limiter and the retry policy.
#[derive(Clone)]
pub struct GuardedOrigin {
    origin: Arc<dyn Origin>,
    limiter: Arc<dyn RateGate>,
}

impl GuardedOrigin {
    pub fn new(origin: Arc<dyn Origin>, limiter: Arc<dyn RateGate>) -> Self {
        GuardedOrigin { origin, limiter }
    }

    pub fn origin(&self) -> &Arc<dyn Origin> {
        &self.origin
    }

    pub fn limiter(&self) -> &Arc<dyn RateGate> {
        &self.limiter
    }

    /// Fetches `key`, retrying retryable errors per `policy`.
    pub async fn fetch(
        &self,
        key: &str,
        policy: RetryPolicy,
        observer: &dyn FetchObserver,
    ) -> FetchReport {
        let attempts = AtomicU32::new(0);
        let attempt = || async {
            attempts.fetch_add(1, Ordering::Relaxed);
            if acquire(self.limiter.as_ref(), observer).await {
                observer.rate_limited();
            }
            let start = tokio::time::Instant::now();
            let result = self.origin.fetch(key, policy.timeout).await;
            // A key the origin cannot even be asked for made no request.
            if !matches!(result, Err(OriginError::InvalidKey(_))) {
                observer.attempt(key, start.elapsed(), result.as_ref().map(|_| ()));
            }
            result
        };
        let result = attempt
            .retry(backoff(policy))
            .when(OriginError::is_retryable)
            .adjust(|err, delay| {
                let retry_after = err.retry_after().map(|d| d.min(MAX_RETRY_AFTER));
                delay.map(|d| retry_after.map_or(d, |r| d.max(r)))
            })
            .await;
        FetchReport {
            result,
            attempts: attempts.into_inner(),
        }
    }
}

/// Waits for `limiter`; while it holds the caller back (no slot on the first
/// poll), `observer` knows, until the slot comes or the wait is dropped.
async fn acquire(limiter: &dyn RateGate, observer: &dyn FetchObserver) -> bool {
    let mut slot = limiter.acquire();
    if let Some(waited) = (&mut slot).now_or_never() {
        return waited;
    }
    observer.limiter_wait(true);
    let _ends = WaitEnds(observer);
    slot.await
}

/// Tells the observer that the wait ended, however it ended.
struct WaitEnds<'a>(&'a dyn FetchObserver);

impl Drop for WaitEnds<'_> {
    fn drop(&mut self) {
        self.0.limiter_wait(false);
    }
}

/// The exponential schedule of `policy`; see the module documentation.
pub fn backoff(policy: RetryPolicy) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(policy.backoff_base)
        .with_factor(2.0)
        .with_max_delay(MAX_BACKOFF.max(policy.backoff_base))
        .with_max_times(policy.retries as usize)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::*;

    /// Answers from a script of results, then succeeds.
    struct Scripted(Mutex<Vec<OriginError>>);

    impl Scripted {
        fn new(mut errors: Vec<OriginError>) -> Arc<Self> {
            errors.reverse();
            Arc::new(Scripted(Mutex::new(errors)))
        }
    }

    #[async_trait]
    impl Origin for Scripted {
        async fn fetch(&self, _key: &str, _timeout: Duration) -> Result<Fetched, OriginError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            match self.0.lock().pop() {
                Some(e) => Err(e),
                None => Ok(Fetched {
                    body: Bytes::from_static(b"ok"),
                    max_age: None,
                }),
            }
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    #[derive(Default)]
    struct Counting {
        limited: AtomicUsize,
        attempts: Mutex<Vec<Result<(), OriginError>>>,
        /// Every `limiter_wait` call, in order.
        waits: Mutex<Vec<bool>>,
    }

    impl FetchObserver for Counting {
        fn rate_limited(&self) {
            self.limited.fetch_add(1, Ordering::Relaxed);
        }
        fn limiter_wait(&self, waiting: bool) {
            self.waits.lock().push(waiting);
        }
        fn attempt(&self, _key: &str, _latency: Duration, result: Result<(), &OriginError>) {
            self.attempts.lock().push(result.map_err(Clone::clone));
        }
    }

    fn policy(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            backoff_base: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        }
    }

    fn status(status: u16, retry_after: Option<u64>) -> OriginError {
        OriginError::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    async fn run(
        errors: Vec<OriginError>,
        retries: u32,
        rps: u32,
    ) -> (FetchReport, Counting, Duration) {
        let guarded = GuardedOrigin::new(
            Scripted::new(errors),
            Arc::new(crate::origin::limiter::OriginLimiter::new(rps)),
        );
        let observer = Counting::default();
        let start = tokio::time::Instant::now();
        let report = guarded.fetch("k", policy(retries), &observer).await;
        (report, observer, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_succeeds_with_growing_delays() {
        let (report, observer, elapsed) =
            run(vec![status(503, None), OriginError::Timeout], 3, 0).await;
        assert!(report.result.is_ok());
        assert_eq!(report.attempts, 3);
        assert_eq!(observer.attempts.lock().len(), 3);
        // 100 ms + 200 ms of backoff at least, at most twice that with jitter.
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(610), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_retries() {
        let errors = vec![OriginError::Connect("refused".into()); 10];
        let (report, observer, _) = run(errors, 2, 0).await;
        assert!(matches!(report.result, Err(OriginError::Connect(_))));
        assert_eq!(report.attempts, 3);
        assert_eq!(observer.attempts.lock().len(), 3);

        let (report, _, _) = run(vec![status(500, None)], 0, 0).await;
        assert_eq!(report.attempts, 1);
        assert!(report.result.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn final_errors_are_not_retried() {
        for error in [
            OriginError::NotFound,
            status(400, None),
            status(403, Some(1)),
            OriginError::InvalidKey("x".into()),
        ] {
            let requested = !matches!(error, OriginError::InvalidKey(_));
            let (report, observer, elapsed) = run(vec![error.clone()], 5, 0).await;
            assert_eq!(report.result, Err(error));
            assert_eq!(report.attempts, 1);
            assert_eq!(observer.attempts.lock().len(), usize::from(requested));
            assert!(elapsed < Duration::from_millis(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_stretches_the_delay_up_to_a_cap() {
        let (report, _, elapsed) = run(vec![status(429, Some(5))], 1, 0).await;
        assert!(report.result.is_ok());
        assert!(elapsed >= Duration::from_secs(5), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(5_100), "{elapsed:?}");

        let (_, _, elapsed) = run(vec![status(503, Some(3_600))], 1, 0).await;
        assert!(
            elapsed >= MAX_RETRY_AFTER && elapsed < MAX_RETRY_AFTER + Duration::from_secs(1),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_passes_the_limiter() {
        // 1 rps: the retry after 100 ms backoff still waits for the next slot.
        let (report, observer, elapsed) = run(vec![status(503, None)], 1, 1).await;
        assert!(report.result.is_ok());
        assert_eq!(observer.limited.load(Ordering::Relaxed), 1);
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        // Only the retry waited, and the observer saw the wait begin and end.
        assert_eq!(*observer.waits.lock(), [true, false]);
    }
}
