//! Origin rate limiter: GCRA (governor), rate changeable at run time.
//!
//! The quota is `rps` cells per second with a burst of one, so requests are
//! spaced at least `1/rps` apart: over any window of `t` seconds the origin
//! sees at most `rps * t + 1` requests, retries included. `0` turns the
//! limit off.
//!
//! [`OriginLimiter::set_rate`] builds a fresh governor limiter and swaps it in
//! (arc-swap) and wakes the caller waiting for a slot, which re-checks against
//! the new one: a change takes effect at once, without a restart. The new
//! limiter starts with an empty history, so one request may pass immediately.
//!
//! # Waiting callers
//! Callers that find the limiter busy queue on a fair (FIFO) async mutex and
//! only the head of the queue sleeps until the next slot. Without the queue,
//! every waiter would wake at the same instant for each slot and all but one
//! would go back to sleep: a thundering herd of `waiters * rps` wake-ups per
//! second with hundreds of workers.
//!
//! # Clock
//! Governor reads time through a [`Clock`]; this module plugs in
//! [`TokioClock`], which reads `tokio::time::Instant`, and waits with
//! `tokio::time::sleep`. This is the loop of governor's `until_ready`, but
//! with tokio's timer instead of `futures-timer`, so tests can run on paused
//! (virtual) time and never depend on the wall clock.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{Mutex, Notify};

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
    /// Held by the caller currently waiting for a slot; the others queue here.
    turn: Mutex<()>,
    /// Wakes the waiting caller when the rate changes.
    rate_changed: Notify,
    /// Whether the caller holding `turn` sleeps, and how many times it has
    /// slept: a caller queued behind a sleep was rate limited, one queued
    /// behind a mere check (nanoseconds) was not.
    head_sleeping: AtomicBool,
    sleeps: AtomicU64,
}

impl OriginLimiter {
    pub fn new(rps: u32) -> Self {
        OriginLimiter {
            active: ArcSwapOption::new(build(rps)),
            turn: Mutex::new(()),
            rate_changed: Notify::new(),
            head_sleeping: AtomicBool::new(false),
            sleeps: AtomicU64::new(0),
        }
    }

    /// Takes effect at once, for the caller already waiting too. Starts the
    /// new rate with a fresh (empty) history.
    pub fn set_rate(&self, rps: u32) {
        if self.rate() != rps {
            self.active.store(build(rps));
            self.rate_changed.notify_waiters();
        }
    }

    /// The limit in requests per second; 0 when unlimited.
    pub fn rate(&self) -> u32 {
        self.active.load().as_ref().map_or(0, |a| a.rps.get())
    }

    /// Waits for a slot; returns true when the caller had to wait (a rate-limit hit).
    ///
    /// Cancel-safe: dropping the future gives up the caller's place in line.
    pub async fn acquire(&self) -> bool {
        if self.active.load().is_none() {
            return false;
        }
        let (_turn, mut waited) = match self.turn.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => {
                let sleeping = self.head_sleeping.load(Ordering::Acquire);
                let sleeps = self.sleeps.load(Ordering::Acquire);
                let turn = self.turn.lock().await;
                (
                    turn,
                    sleeping || self.sleeps.load(Ordering::Acquire) != sleeps,
                )
            }
        };
        loop {
            // Registered before reading the limiter, so a change between the
            // read and the sleep still wakes us.
            let changed = self.rate_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let Some(active) = self.active.load_full() else {
                return waited;
            };
            let wait = match active.gcra.check() {
                Ok(()) => return waited,
                Err(not_until) => not_until.wait_time_from(TokioClock.now()),
            };
            waited = true;
            drop(active);
            self.sleeps.fetch_add(1, Ordering::AcqRel);
            let _sleeping = Flag::raise(&self.head_sleeping);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut changed => {}
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

/// Raised while alive, lowered on drop (also when the caller is cancelled).
struct Flag<'a>(&'a AtomicBool);

impl<'a> Flag<'a> {
    fn raise(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Flag(flag)
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
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

/// A gate every origin request passes: the local GCRA limiter here, or the
/// cluster-wide one in [`crate::cluster`]. `acquire` returns true when the
/// caller had to wait (a rate-limit hit).
#[async_trait::async_trait]
pub trait RateGate: Send + Sync {
    async fn acquire(&self) -> bool;
    /// Requests per second; 0 = unlimited. Takes effect for the next `acquire`.
    fn set_rate(&self, rps: u32);
}

#[async_trait::async_trait]
impl RateGate for OriginLimiter {
    async fn acquire(&self) -> bool {
        OriginLimiter::acquire(self).await
    }

    fn set_rate(&self, rps: u32) {
        OriginLimiter::set_rate(self, rps)
    }
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
    async fn a_waiting_caller_picks_up_a_new_rate() {
        let limiter = Arc::new(OriginLimiter::new(1));
        assert!(!limiter.acquire().await);
        let waiter = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                let start = tokio::time::Instant::now();
                (limiter.acquire().await, start.elapsed())
            }
        });
        // Let the waiter start sleeping towards the next slot, 1 s away.
        tokio::time::sleep(Duration::from_millis(10)).await;
        limiter.set_rate(1_000);
        let (waited, elapsed) = waiter.await.unwrap();
        assert!(waited);
        assert!(elapsed < Duration::from_millis(50), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let limiter = Arc::new(OriginLimiter::new(100));
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..20 {
            let (limiter, order) = (limiter.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                limiter.acquire().await;
                order.lock().push(i);
            }));
            // Queue them in a known order.
            tokio::task::yield_now().await;
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn queueing_counts_as_a_hit_only_behind_a_sleep() {
        let limiter = Arc::new(OriginLimiter::new(1_000));
        for head_sleeps in [false, true] {
            tokio::time::advance(Duration::from_secs(1)).await;
            // Play the head of the queue by hand.
            let turn = limiter.turn.lock().await;
            let waiter = tokio::spawn({
                let limiter = limiter.clone();
                async move { limiter.acquire().await }
            });
            tokio::task::yield_now().await;
            if head_sleeps {
                limiter.sleeps.fetch_add(1, Ordering::AcqRel);
            }
            drop(turn);
            assert_eq!(waiter.await.unwrap(), head_sleeps);
        }
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
