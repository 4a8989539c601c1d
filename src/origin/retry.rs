//! Retries with exponential backoff and jitter; every attempt passes the
//! rate limiter. (stub)

use std::sync::Arc;
use std::time::Duration;

use super::limiter::OriginLimiter;
use super::{Fetched, Origin, OriginError};

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
    /// One origin request finished after `latency`.
    fn attempt(&self, key: &str, latency: Duration, result: Result<(), &OriginError>);
}

/// Result of all attempts for one key.
#[derive(Debug, Clone)]
pub struct FetchReport {
    pub result: Result<Fetched, OriginError>,
    pub attempts: u32,
}

/// An origin behind the rate limiter and the retry policy.
#[derive(Clone)]
pub struct GuardedOrigin {}

impl GuardedOrigin {
    pub fn new(_origin: Arc<dyn Origin>, _limiter: Arc<OriginLimiter>) -> Self { todo!() }
    pub fn origin(&self) -> &Arc<dyn Origin> { todo!() }
    pub fn limiter(&self) -> &Arc<OriginLimiter> { todo!() }
    /// Fetches `key`, retrying retryable errors per `policy`.
    pub async fn fetch(&self, _key: &str, _policy: RetryPolicy, _observer: &dyn FetchObserver) -> FetchReport { todo!() }
}
