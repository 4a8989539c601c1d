//! `oracle` and `oracle-seen`: warming that knows the future reads.
//!
//! The oracle sees every read `lead` seconds before it happens (the replay
//! keeps that much of the trace buffered, so it still streams). For a read
//! of key `k` at `t_a` it plans one warming fetch, released at `t_a - lead`
//! and due by `t_a - latency` (so the value is there when the read comes).
//! Planned fetches start in order of their reads (earliest deadline first:
//! the deadlines are the reads' times minus one constant), each as soon as
//! the origin budget has a token, exactly as every other mode's warming.
//! When a fetch's turn comes it is skipped if the read would be served
//! anyway (the key holds, or will hold, a value valid at `t_a`), and given up
//! (`warms_dropped`) if it can no longer finish before `t_a`.
//!
//! So the oracle is the upper bound of warming *with the same origin
//! budget*: it never fetches a value nobody reads (except when eviction
//! takes it first), never fetches too early for the TTL (`lead` <= TTL / 2),
//! and spends budget only on reads that would miss.
//!
//! `oracle-seen` applies the same rule only to keys read before the fetch
//! starts: no history-based predictor can warm a key never seen, so this is
//! the bound for them. (The check uses the reads replayed so far, which may
//! run ahead of the fetch's start by less than one inter-request gap.)

use std::collections::VecDeque;

use super::{Mode, ModeConfig, ModeResult};
use crate::replay::sim::Sim;
use crate::replay::trace::Request;

/// The oracle modes.
pub struct Oracle {
    sim: Sim,
    seen_only: bool,
    lead: f64,
    /// Future reads not yet planned for: (time, id, size).
    future: VecDeque<(f64, u64, u32)>,
    /// Time of the last warming fetch started (fetches start in order).
    cursor: f64,
}

impl Oracle {
    pub fn new(seen_only: bool, cfg: &ModeConfig) -> Self {
        Oracle {
            sim: Sim::new(cfg.sim.clone()),
            seen_only,
            lead: cfg.oracle_lead.max(0.0),
            future: VecDeque::new(),
            cursor: f64::NEG_INFINITY,
        }
    }

    /// Starts the planned fetches whose turn comes by `t`.
    fn advance(&mut self, t: f64) {
        let latency = self.sim.cfg.latency;
        while let Some(&(at, id, size)) = self.future.front() {
            let release = at - self.lead;
            if release > t {
                break;
            }
            let start = self.sim.budget.ready_at(release.max(self.cursor));
            let late = start > at - latency;
            if start > t && !late {
                break;
            }
            self.future.pop_front();
            if self.sim.valid_at(id, at) || (self.seen_only && !self.sim.accessed(id)) {
                continue;
            }
            if late {
                // The budget cannot start it in time, now or later.
                self.sim.stats.warms_dropped += 1;
                continue;
            }
            if self.sim.warm(start, id, size) {
                self.cursor = start;
            }
        }
    }
}

impl Mode for Oracle {
    fn lookahead(&self) -> f64 {
        self.lead
    }

    fn foresee(&mut self, req: &Request) {
        self.future.push_back((req.at, req.id, req.size));
    }

    fn access(&mut self, req: &Request) {
        self.advance(req.at);
        self.sim.access(req.at, req.id, req.size, req.ttl);
    }

    fn finish(&mut self, end: f64) -> ModeResult {
        self.future.clear();
        let stats = self.sim.finish(end);
        ModeResult::ok(stats, self.sim.series.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::sim::{Capacity, SimConfig, Stats};
    use crate::replay::trace::KeySpace;

    fn cfg(ttl: f64, latency: f64, rps: f64) -> ModeConfig {
        ModeConfig::new(
            SimConfig {
                capacity: Capacity::Entries(1000),
                ttl,
                latency,
                rps,
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

    /// Feeds the trace as the replay driver does: each request foreseen when
    /// it is `lead` seconds ahead.
    fn run(mode: &mut Oracle, reqs: &[(f64, u64)]) -> Stats {
        let lead = mode.lookahead();
        let mut next = 0;
        for &(t, id) in reqs {
            while next < reqs.len() && reqs[next].0 <= t + lead {
                mode.foresee(&req(reqs[next].0, reqs[next].1));
                next += 1;
            }
            mode.access(&req(t, id));
        }
        let end = reqs.last().map_or(0.0, |r| r.0);
        mode.finish(end).stats.unwrap()
    }

    /// A key read every 10 s with TTL 5 s, latency 0.1 s: `none` misses all
    /// 10; the oracle (lead = clamp(5/2, 0.2, 60) = 2.5 s) warms each read
    /// 2.5 s ahead: 10 warms, 10 hits, no demand fetch.
    #[test]
    fn oracle_warms_every_read_just_in_time() {
        let reqs: Vec<(f64, u64)> = (0..10).map(|i| (100.0 + f64::from(i) * 10.0, 1)).collect();
        let s = run(&mut Oracle::new(false, &cfg(5.0, 0.1, 0.0)), &reqs);
        assert_eq!(
            (s.hits, s.origin_fetches_warming, s.origin_fetches_demand),
            (10, 10, 0)
        );
        assert_eq!(s.wasted_warms, 0);
        // oracle-seen may not warm the first read (key never seen): 9 hits.
        let s = run(&mut Oracle::new(true, &cfg(5.0, 0.1, 0.0)), &reqs);
        assert_eq!((s.hits, s.misses_cold, s.origin_fetches_warming), (9, 1, 9));
    }

    /// Budget 1 fetch/s, lead 2.5 s: 5 distinct keys all read at t = 10.
    /// Warms start at 7.5 (token there), 8.5, 9.5 (finishing at 9.6 < 10);
    /// the 4th could only start at 10.5 and is given up. Demand: 2 misses.
    #[test]
    fn oracle_respects_the_budget() {
        let mut reqs: Vec<(f64, u64)> = vec![(0.0, 100)];
        reqs.extend((1..=5).map(|k| (10.0, k)));
        let mut o = Oracle::new(false, &cfg(5.0, 0.1, 1.0));
        let s = run(&mut o, &reqs);
        assert_eq!(s.origin_fetches_warming, 4, "{s:?}"); // key 100 at -2.5 + 3 of 5
        assert_eq!(s.hits, 4);
        assert_eq!(s.misses_cold, 2);
        assert_eq!(s.warms_dropped, 2);
    }

    /// The default lead is TTL / 2, so the oracle spreads a burst of rereads
    /// over the budget ahead of it: 300 keys read at t = 0 and again at
    /// t = 1000 (TTL 600 s, so expired), budget 1 fetch/s. Warms start at
    /// 1000 - 300 = 700, one a second: all but the last one or two finish
    /// before t = 1000 (a 60 s lead would have saved only 60 rereads).
    #[test]
    fn default_lead_spreads_a_burst_over_the_budget() {
        let c = cfg(600.0, 0.1, 1.0);
        assert_eq!(c.oracle_lead, 300.0);
        let mut reqs: Vec<(f64, u64)> = (0..300).map(|k| (0.0, k)).collect();
        reqs.extend((0..300).map(|k| (1000.0, k)));
        let s = run(&mut Oracle::new(true, &c), &reqs);
        assert!(s.hits >= 298, "{s:?}");
        assert_eq!(s.misses_cold, 300);
    }

    /// A read that would hit anyway costs the oracle nothing.
    #[test]
    fn oracle_skips_reads_that_hit_anyway() {
        let reqs = [(0.0, 1), (1.0, 1), (2.0, 1)];
        let s = run(&mut Oracle::new(false, &cfg(100.0, 0.1, 0.0)), &reqs);
        assert_eq!(
            (s.hits, s.origin_fetches_warming, s.origin_fetches_demand),
            (3, 1, 0)
        );
    }
}
