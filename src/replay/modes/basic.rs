//! Modes that need no prediction: `none`, `refresh-ahead`, `xfetch`.
//!
//! - **none**: a read of a missing or expired key fetches it from the origin
//!   (demand fetch); nothing else is fetched.
//! - **refresh-ahead**: as Caffeine's `refreshAfterWrite` (Caffeine wiki,
//!   "Refresh"): a read served by a value written more than
//!   `fraction x TTL` ago queues a background refresh of that key; the
//!   reader gets the current value. A read after expiry is an ordinary miss.
//!   Refreshes are warming fetches: they wait for origin budget.
//! - **xfetch**: probabilistic early expiration (A. Vattani, F. Chierichetti,
//!   K. Lowenstein, "Optimal Probabilistic Cache Stampede Prevention",
//!   PVLDB 8(8), 2015): a read at time `t` of a value expiring at `expiry`
//!   refreshes it early when `t - delta * beta * ln(u) >= expiry`, `u`
//!   uniform in (0, 1], `delta` the time to recompute (here the origin
//!   latency) and `beta` (default 1). In the paper the reader recomputes;
//!   here, as the service would, the reader is served the still-valid value
//!   and the refresh is a background warming fetch.

use super::{Mode, ModeConfig, ModeResult};
use crate::replay::sim::{Outcome, Sim, WarmQueue};
use crate::replay::trace::Request;

/// Which of the three rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    None,
    RefreshAhead { fraction: f64 },
    XFetch { beta: f64 },
}

/// A mode without prediction.
pub struct Basic {
    rule: Rule,
    sim: Sim,
    queue: WarmQueue,
    rng: u64,
}

impl Basic {
    pub fn new(rule: Rule, cfg: &ModeConfig) -> Self {
        Basic {
            rule,
            sim: Sim::new(cfg.sim.clone()),
            queue: WarmQueue::default(),
            rng: cfg.seed,
        }
    }

    /// Uniform in (0, 1] (splitmix64).
    fn uniform(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// The sim, for tests.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}

impl Mode for Basic {
    fn access(&mut self, req: &Request) {
        let t = req.at;
        if !self.queue.is_empty() {
            self.queue.drain(&mut self.sim, t);
        }
        let outcome = self.sim.access(t, req.id, req.size, req.ttl);
        if outcome != Outcome::Hit || self.rule == Rule::None {
            return;
        }
        let Some(c) = self.sim.cached(req.id) else {
            return;
        };
        if c.in_flight {
            return;
        }
        let refresh = match self.rule {
            Rule::None => false,
            Rule::RefreshAhead { fraction } => {
                let ttl = c.expires_at - c.written_at;
                t - c.written_at >= fraction * ttl
            }
            Rule::XFetch { beta } => {
                let delta = self.sim.cfg.latency;
                t - delta * beta * self.uniform().ln() >= c.expires_at
            }
        };
        if refresh {
            self.queue.push(req.id, crate::protocol::DEFAULT_PRIORITY);
            self.queue.drain(&mut self.sim, t);
        }
    }

    fn finish(&mut self, end: f64) -> ModeResult {
        self.queue.drain(&mut self.sim, end);
        let stats = self.sim.finish(end);
        ModeResult::ok(stats, self.sim.series.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::sim::{Capacity, SimConfig};
    use crate::replay::trace::KeySpace;

    fn cfg(ttl: f64, latency: f64) -> ModeConfig {
        ModeConfig::new(
            SimConfig {
                capacity: Capacity::Entries(1000),
                ttl,
                latency,
                rps: 0.0,
                admission: false,
                max_remembered: usize::MAX,
            },
            KeySpace::Numeric,
        )
    }

    fn req(at: f64, id: u64) -> Request {
        Request {
            at,
            id,
            key: id.to_string().into(),
            size: 1,
            ttl: None,
            write: false,
        }
    }

    fn run(mode: &mut dyn Mode, reqs: &[(f64, u64)]) -> crate::replay::sim::Stats {
        let mut end = 0.0;
        for &(t, id) in reqs {
            mode.access(&req(t, id));
            end = t;
        }
        mode.finish(end).stats.unwrap()
    }

    /// Reads every 10 s, TTL 100 s, no latency. `none`: 1 cold miss then a
    /// miss each 100 s (at 100, 200, ...: 10 misses over 0..=990).
    /// `refresh-ahead` with fraction 0.8: the read at 80 (80 >= 0.8 x 100)
    /// refreshes (value written at 80, expires 180); the read at 160 refreshes
    /// again, and so on: only the first read misses.
    #[test]
    fn refresh_ahead_turns_expiry_misses_into_hits() {
        let reqs: Vec<(f64, u64)> = (0..100).map(|i| (f64::from(i) * 10.0, 1)).collect();
        let none = run(&mut Basic::new(Rule::None, &cfg(100.0, 0.0)), &reqs);
        assert_eq!((none.misses_cold, none.misses_expired), (1, 9));
        assert_eq!(none.hits, 90);
        let ra = run(
            &mut Basic::new(Rule::RefreshAhead { fraction: 0.8 }, &cfg(100.0, 0.0)),
            &reqs,
        );
        assert_eq!((ra.misses_cold, ra.misses_expired, ra.hits), (1, 0, 99));
        // Refreshes at 80, 160, ..., 960: 12 warming fetches, all read.
        assert_eq!(ra.origin_fetches_warming, 12);
        assert_eq!(ra.wasted_warms, 0);
    }

    /// A key read every 10 s with TTL 5 s: refresh-ahead never sees a value
    /// old enough to refresh while valid, so it behaves as `none`.
    #[test]
    fn ttl_shorter_than_the_gap_cannot_be_refreshed_by_reads() {
        let reqs: Vec<(f64, u64)> = (0..10).map(|i| (f64::from(i) * 10.0, 1)).collect();
        for rule in [Rule::None, Rule::RefreshAhead { fraction: 0.8 }] {
            let s = run(&mut Basic::new(rule, &cfg(5.0, 0.0)), &reqs);
            assert_eq!((s.hits, s.misses_cold, s.misses_expired), (0, 1, 9));
            assert_eq!(s.origin_fetches_warming, 0);
        }
    }

    /// xfetch with delta = 1 s, beta = 1: a read `gap` seconds before expiry
    /// refreshes with probability exp(-gap/delta). Reads 0.001 s before
    /// expiry: nearly always; reads 50 s before: never (e^-50).
    #[test]
    fn xfetch_refreshes_close_to_expiry_only() {
        let c = cfg(100.0, 1.0);
        // Fetched at 0, value from 1 to 101. Read at 100.999.
        let mut m = Basic::new(Rule::XFetch { beta: 1.0 }, &c);
        let s = run(&mut m, &[(0.0, 1), (100.999, 1)]);
        assert_eq!(s.hits, 1);
        assert_eq!(s.origin_fetches_warming, 1);
        let mut m = Basic::new(Rule::XFetch { beta: 1.0 }, &c);
        let s = run(&mut m, &[(0.0, 1), (51.0, 1)]);
        assert_eq!(s.origin_fetches_warming, 0);
    }

    /// The refresh probability of a read `gap` seconds before expiry is
    /// `exp(-gap / (delta * beta))`: with delta = 1 s and a gap of 1 s,
    /// e^-1 = 0.37 for beta = 1 and e^-0.5 = 0.61 for beta = 2 (larger
    /// beta, earlier refreshes), measured over 4,000 keys each.
    #[test]
    fn xfetch_beta_scales_the_early_refresh() {
        let mut c = cfg(100.0, 1.0);
        c.sim.capacity = Capacity::Entries(10_000);
        let keys = 4_000u64;
        // Each key fetched at 0 (value 1..101), read once more at 100.
        let reqs: Vec<(f64, u64)> = (0..keys)
            .map(|k| (0.0, k))
            .chain((0..keys).map(|k| (100.0, k)))
            .collect();
        for (beta, want) in [(1.0, (-1.0f64).exp()), (2.0, (-0.5f64).exp())] {
            let s = run(&mut Basic::new(Rule::XFetch { beta }, &c), &reqs);
            let share = s.origin_fetches_warming as f64 / keys as f64;
            assert!(
                (share - want).abs() < 0.03,
                "beta {beta}: refreshed {share:.3}, expected {want:.3}"
            );
        }
    }

    #[test]
    fn uniform_is_in_the_open_closed_unit_interval() {
        let mut m = Basic::new(Rule::None, &cfg(1.0, 0.0));
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = m.uniform();
            assert!(u > 0.0 && u <= 1.0);
            sum += u;
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }
}
