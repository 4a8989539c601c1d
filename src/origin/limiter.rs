//! Origin rate limiter: GCRA (governor), rate changeable at run time.
//!
//! The quota is `rps` cells per second with a burst of one, so requests are
//! spaced at least `1/rps` apart: over any window of `t` seconds the origin
//! sees at most `rps * t + 1` requests, retries included. `0` turns the
//! limit off.
//!
//! [`OriginLimiter::set_rate`] builds a fresh governor limiter and swaps it in
//! (arc-swap); callers already waiting re-check against the new one when they
//! wake, so a change takes effect without a restart.
//!
//! # Clock
//! Governor reads time through a [`Clock`]; this module plugs in
//! [`TokioClock`], which reads `tokio::time::Instant`, and waits with
//! `tokio::time::sleep`. This is the loop of governor's `until_ready`, but
//! with tokio's timer instead of `futures-timer`, so tests can run on paused
//! (virtual) time and never depend on the wall clock.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// Governor clock that reads tokio's clock, which tests may pause.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = Instant;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Instant>>;

/// The limiter in force and the rate it was built for.
struct Active {
    rps: NonZeroU32,
    gcra: Gcra,
}

/// Limits requests to the origin; 0 requests/s means unlimited.
pub struct OriginLimiter {
    /// `None` while unlimited.
    active: ArcSwapOption<Active>,
}

impl OriginLimiter {
    pub fn new(rps: u32) -> Self {
        OriginLimiter {
            active: ArcSwapOption::new(build(rps)),
        }
    }

    /// Takes effect for the next `acquire`, and for callers already waiting
    /// when they next wake. Starts the new rate with a fresh (empty) history.
    pub fn set_rate(&self, rps: u32) {
        if self.rate() != rps {
            self.active.store(build(rps));
        }
    }

    /// The limit in requests per second; 0 when unlimited.
    pub fn rate(&self) -> u32 {
        self.active.load().as_ref().map_or(0, |a| a.rps.get())
    }

    /// Waits for a slot; returns true when the caller had to wait (a rate-limit hit).
    pub async fn acquire(&self) -> bool {
        let mut waited = false;
        loop {
            let Some(active) = self.active.load_full() else {
                return waited;
            };
            match active.gcra.check() {
                Ok(()) => return waited,
                Err(not_until) => {
                    waited = true;
                    let wait = not_until.wait_time_from(TokioClock.now());
                    drop(active);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl std::fmt::Debug for OriginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginLimiter")
            .field("rps", &self.rate())
            .finish()
    }
}

fn build(rps: u32) -> Option<Arc<Active>> {
    let rps = NonZeroU32::new(rps)?;
    let quota = Quota::per_second(rps).allow_burst(NonZeroU32::MIN);
    Some(Arc::new(Active {
        rps,
        gcra: RateLimiter::direct_with_clock(quota, TokioClock),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Time taken, on tokio's (paused) clock, by `n` sequential acquires.
    async fn time_acquires(limiter: &OriginLimiter, n: usize) -> (Duration, usize) {
        let start = tokio::time::Instant::now();
        let mut waits = 0;
        for _ in 0..n {
            if limiter.acquire().await {
                waits += 1;
            }
        }
        (start.elapsed(), waits)
    }

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_at_the_rate() {
        let limiter = OriginLimiter::new(10);
        let (elapsed, waits) = time_acquires(&limiter, 30).await;
        // First is free, the other 29 are 100 ms apart.
        assert!(elapsed >= Duration::from_millis(2_900), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(3_000), "{elapsed:?}");
        assert_eq!(waits, 29);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let limiter = OriginLimiter::new(0);
        assert_eq!(limiter.rate(), 0);
        let (elapsed, waits) = time_acquires(&limiter, 1_000).await;
        assert_eq!(elapsed, Duration::ZERO);
        assert_eq!(waits, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn set_rate_takes_effect() {
        let limiter = OriginLimiter::new(1);
        assert_eq!(limiter.rate(), 1);
        limiter.set_rate(100);
        assert_eq!(limiter.rate(), 100);
        let (elapsed, _) = time_acquires(&limiter, 101).await;
        assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1_100), "{elapsed:?}");

        limiter.set_rate(0);
        let (elapsed, waits) = time_acquires(&limiter, 100).await;
        assert_eq!((elapsed, waits), (Duration::ZERO, 0));

        limiter.set_rate(2);
        let (elapsed, _) = time_acquires(&limiter, 5).await;
        assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_the_rate() {
        let limiter = Arc::new(OriginLimiter::new(20));
        let start = tokio::time::Instant::now();
        let tasks: Vec<_> = (0..41)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire().await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // 41 requests at 20/s: the last one no earlier than 2 s in.
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }
}
