//! Cluster-wide origin rate limit: one GCRA whose state lives in Redis.
//!
//! # Key
//! `warming:{ns}:gcra` — string: the theoretical arrival time (TAT) of the
//! next free slot, in milliseconds on the **Redis** clock (a float), with a
//! TTL of `TAT - now + 1 s` so an idle limiter leaves nothing behind.
//!
//! # Algorithm
//! A server-side script reads `TIME` (so instance clocks do not matter),
//! sets `tat = max(tat, now)`, grants the `n` slots `tat, tat + T, …,
//! tat + (n-1)·T` with `T = 1000 / rps` ms (burst 1), and stores
//! `tat + n·T`. It returns Redis' `now` and the first slot. Every slot in
//! the cluster is thus a distinct time, at least `T` after the previous one.
//!
//! # Local fast path
//! Instead of one round trip per request, an instance reserves `n` slots at
//! once, `n` = the number of local callers waiting, capped at `rps / 20`
//! (at most 50 ms of slots ahead) and at least 1. It converts each slot to a
//! local instant with the offset measured at reservation, anchored at the
//! moment the reply arrived (never before the script ran), and hands the
//! slots out in order, each caller sleeping until its slot. A slot nobody
//! took within [`GRACE`] of its time is thrown away (unused slots only
//! lower the rate), so a request never goes out more than `GRACE` plus the
//! reply's one-way delay after its slot.
//!
//! # Guarantee
//! Over any window of `W` the origin sees at most `(W + GRACE + d) · rps + 1`
//! requests from all instances together, `d` being the worst one-way delay
//! of a reservation reply (sub-millisecond on a LAN): `rps·W` plus a
//! fraction of a request at ordinary rates. Every instance must use the same
//! rate (keep it in [`super::SharedState`]); with different rates each
//! reservation spaces its own slots by its own `T`.
//!
//! A caller already sleeping towards a slot keeps it when the rate changes;
//! slots reserved but not handed out are dropped on a rate change.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use super::{ClusterError, Coordinator, Result};

/// How late a reserved slot may still be used.
pub const GRACE: Duration = Duration::from_millis(10);
/// A slot this close is taken without sleeping (and without counting as a wait).
const NO_WAIT: Duration = Duration::from_millis(1);

const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local new_tat = tat + n * interval
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {string.format('%.3f', now), string.format('%.3f', tat)}
";

struct Slots {
    /// Local instants of the reserved slots, earliest first.
    queue: VecDeque<Instant>,
    /// Rate the slots were reserved at.
    rps: u32,
}

/// The cluster-wide limiter; one per instance, shared by every worker.
pub struct ClusterLimiter {
    conn: ConnectionManager,
    key: String,
    script: Script,
    rps: AtomicU32,
    slots: Mutex<Slots>,
    /// Held by the caller reserving more slots; the others queue behind it (FIFO).
    refill: tokio::sync::Mutex<()>,
    /// Callers inside `acquire`: sizes the next reservation.
    demand: AtomicUsize,
    /// Reservation round trips made (for metrics and tests).
    reservations: AtomicUsize,
}

impl ClusterLimiter {
    /// `rps` 0 = unlimited (no Redis calls at all).
    pub fn new(coord: &Coordinator, rps: u32) -> Self {
        ClusterLimiter {
            conn: coord.conn(),
            key: coord.namespace().key("gcra"),
            script: Script::new(GCRA_LUA),
            rps: AtomicU32::new(rps),
            slots: Mutex::new(Slots {
                queue: VecDeque::new(),
                rps,
            }),
            refill: tokio::sync::Mutex::new(()),
            demand: AtomicUsize::new(0),
            reservations: AtomicUsize::new(0),
        }
    }

    /// Takes effect for the next slot handed out.
    pub fn set_rate(&self, rps: u32) {
        self.rps.store(rps, Ordering::Release);
        let mut slots = self.slots.lock();
        if slots.rps != rps {
            slots.queue.clear();
            slots.rps = rps;
        }
    }

    /// Requests per second, cluster-wide; 0 = unlimited.
    pub fn rate(&self) -> u32 {
        self.rps.load(Ordering::Acquire)
    }

    /// Round trips to Redis so far.
    pub fn reservations(&self) -> usize {
        self.reservations.load(Ordering::Relaxed)
    }

    /// Waits for a cluster-wide slot; `Ok(true)` when the caller had to wait.
    /// Errors when Redis cannot be reached (retryable): the caller decides
    /// whether to fail the fetch or retry.
    pub async fn acquire(&self) -> Result<bool> {
        if self.rate() == 0 {
            return Ok(false);
        }
        self.demand.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave(&self.demand);
        loop {
            if let Some(slot) = self.take_slot() {
                return Ok(wait_for(slot).await);
            }
            let _turn = self.refill.lock().await;
            if let Some(slot) = self.take_slot() {
                drop(_turn);
                return Ok(wait_for(slot).await);
            }
            let rps = self.rate();
            if rps == 0 {
                return Ok(false);
            }
            self.reserve(rps).await?;
        }
    }

    fn take_slot(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut slots = self.slots.lock();
        while let Some(&slot) = slots.queue.front() {
            if slot + GRACE < now {
                slots.queue.pop_front();
            } else {
                return slots.queue.pop_front();
            }
        }
        None
    }

    async fn reserve(&self, rps: u32) -> Result<()> {
        let cap = (rps / 20).max(1) as usize;
        let n = self.demand.load(Ordering::Acquire).clamp(1, cap);
        let interval = 1000.0 / f64::from(rps);
        let mut conn = self.conn.clone();
        let (now, first): (String, String) = self
            .script
            .key(&self.key)
            .arg(format!("{interval:.6}"))
            .arg(n)
            .invoke_async(&mut conn)
            .await?;
        // Anchored after the reply: local slot times are never early.
        let anchor = Instant::now();
        self.reservations.fetch_add(1, Ordering::Relaxed);
        let parse = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| ClusterError::Decode(format!("gcra script answered {s:?}")))
        };
        let ahead_ms = (parse(&first)? - parse(&now)?).max(0.0);
        // Kept even if the rate changed meanwhile: they are valid grants.
        let mut slots = self.slots.lock();
        for i in 0..n {
            let at_ms = ahead_ms + interval * i as f64;
            slots
                .queue
                .push_back(anchor + Duration::from_micros((at_ms * 1000.0).ceil() as u64));
        }
        Ok(())
    }
}

/// Sleeps until `slot`; true when that was a real wait.
async fn wait_for(slot: Instant) -> bool {
    let now = Instant::now();
    if slot <= now {
        return false;
    }
    tokio::time::sleep_until(slot).await;
    slot > now + NO_WAIT
}

struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for ClusterLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterLimiter")
            .field("key", &self.key)
            .field("rps", &self.rate())
            .finish()
    }
}
