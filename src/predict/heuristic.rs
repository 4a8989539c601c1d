//! The spec's heuristic predictor:
//!
//! ```text
//! score = frequency * (1 + growth_rate) * recency_bonus
//!   frequency     = accesses_per_hour            (over the kept history)
//!   growth_rate   = (recent_freq - historical_freq) / historical_freq
//!   recency_bonus = 2.0 if last access < 5 min, 1.5 if < 30 min, else 1.0
//! ```
//!
//! Two definitions the spec leaves open:
//! - **No history.** When `historical_freq` is 0 (a key seen only in the
//!   recent buckets, or only recently tracked) the formula divides by zero;
//!   `growth_rate` is then defined as 0, so such a key scores by frequency
//!   and recency alone rather than infinitely.
//! - **Clamp.** `growth_rate` is clamped to `>= -1`. It cannot be lower with
//!   non-negative rates, but the clamp states the invariant: scores are never
//!   negative.
//!
//! Keys whose score is 0 (no access inside the kept history) are never
//! predicted. Ties are broken by key, ascending, for determinism. The top
//! `limit` are chosen with a bounded min-heap, O(n log limit).
//!
//! `window` (how far ahead the caller wants to warm) is accepted for the
//! trait; the heuristic ignores it: its inputs are fixed by the tracker's
//! buckets (recent = newest 2, historical = older 3).

use std::time::Duration;

use super::{Prediction, Predictor};
use crate::access::{AccessTracker, KeyStats};

/// Name used in configuration.
pub const NAME: &str = "heuristic";

/// Last access more recent than this: bonus 2.0.
pub const VERY_RECENT_SECS: u64 = 5 * 60;
/// Last access more recent than this: bonus 1.5.
pub const RECENT_SECS: u64 = 30 * 60;

/// `frequency x (1 + growth) x recency_bonus` on the tracker's statistics.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicPredictor;

/// The growth rate of the spec, 0 without history, at least -1.
pub fn growth_rate(s: &KeyStats) -> f64 {
    if s.historical_per_hour <= 0.0 {
        return 0.0;
    }
    ((s.recent_per_hour - s.historical_per_hour) / s.historical_per_hour).max(-1.0)
}

/// The recency bonus of the spec.
pub fn recency_bonus(s: &KeyStats) -> f64 {
    if s.since_last_access_secs < VERY_RECENT_SECS {
        2.0
    } else if s.since_last_access_secs < RECENT_SECS {
        1.5
    } else {
        1.0
    }
}

/// The score of one key.
pub fn score(s: &KeyStats) -> f64 {
    s.accesses_per_hour * (1.0 + growth_rate(s)) * recency_bonus(s)
}

impl Predictor for HeuristicPredictor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn predict(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        _window: Duration,
        limit: usize,
    ) -> Vec<Prediction> {
        super::top_by_score(tracker, now_unix_secs, limit, score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: u64 = 900; // 15-min buckets, 75 min of history
    const T0: u64 = 1_700_000_100 / B * B; // bucket aligned

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn stats(apm: f64, recent: f64, hist: f64, since: u64) -> KeyStats {
        KeyStats {
            total: 0,
            accesses_per_hour: apm,
            recent_per_hour: recent,
            historical_per_hour: hist,
            since_last_access_secs: since,
        }
    }

    #[test]
    fn formula_pieces() {
        assert_eq!(recency_bonus(&stats(0.0, 0.0, 0.0, 0)), 2.0);
        assert_eq!(recency_bonus(&stats(0.0, 0.0, 0.0, 299)), 2.0);
        assert_eq!(recency_bonus(&stats(0.0, 0.0, 0.0, 300)), 1.5);
        assert_eq!(recency_bonus(&stats(0.0, 0.0, 0.0, 1799)), 1.5);
        assert_eq!(recency_bonus(&stats(0.0, 0.0, 0.0, 1800)), 1.0);
        assert_eq!(growth_rate(&stats(10.0, 20.0, 0.0, 0)), 0.0); // no history
        assert_eq!(growth_rate(&stats(10.0, 20.0, 10.0, 0)), 1.0);
        assert_eq!(growth_rate(&stats(10.0, 0.0, 10.0, 0)), -1.0);
        assert_eq!(score(&stats(10.0, 0.0, 10.0, 0)), 0.0);
    }

    /// A hand-computed history at `now = T0 + 5B + 60` (newest bucket is
    /// [T0+5B, T0+6B); recent = buckets T0+4B and T0+5B; historical = T0+B..T0+4B):
    ///
    /// - `fading`: 10 accesses at T0+B+30 (~74 min ago, the oldest kept bucket)
    ///   and 2 at T0+4B+10.
    ///   Observed span 5 buckets = 1.25 h. total 12, frequency 12/1.25 = 9.6/h;
    ///   recent 2/0.5 h = 4/h; historical 10/0.75 h = 13.333/h;
    ///   growth = (4 - 13.333)/13.333 = -0.7; last access 1 bucket + 50 s
    ///   = 950 s ago -> bonus 1.5. score = 9.6 x 0.3 x 1.5 = 4.32.
    /// - `rising`: 1 access at T0+2B and 6 at T0+5B+30 (30 s before now).
    ///   Span 4 buckets = 1 h; frequency 7/h; recent 6/0.5 = 12/h;
    ///   historical (2 buckets: T0+2B, T0+3B) 1/0.5 = 2/h; growth = 5;
    ///   bonus 2.0. score = 7 x 6 x 2 = 84.
    /// - `newcomer`: 3 accesses at T0+5B. Span 1 bucket = 0.25 h; frequency
    ///   12/h; no history -> growth 0; last access 60 s ago -> bonus 2.
    ///   score = 24.
    /// - `steady`: 1 access in each of the 5 buckets, the last at T0+5B.
    ///   frequency 5/1.25 = 4/h, recent 2/0.5 = 4, historical 3/0.75 = 4,
    ///   growth 0, bonus 2 -> 8.
    /// - `gone`: 50 accesses at T0 (6 buckets before now): out of the
    ///   history, score 0, never predicted.
    #[test]
    fn hand_computed_history() {
        let t = AccessTracker::new(1000, Duration::from_secs(B));
        for _ in 0..50 {
            t.record("gone", T0);
        }
        for _ in 0..10 {
            t.record("fading", T0 + B + 30);
        }
        for _ in 0..2 {
            t.record("fading", T0 + 4 * B + 10);
        }
        t.record("rising", T0 + 2 * B);
        for _ in 0..6 {
            t.record("rising", T0 + 5 * B + 30);
        }
        for _ in 0..3 {
            t.record("newcomer", T0 + 5 * B);
        }
        for b in 1..=5 {
            t.record("steady", T0 + b * B);
        }
        let now = T0 + 5 * B + 60;
        let p = HeuristicPredictor.predict(&t, now, Duration::from_secs(3600), 10);
        let got: Vec<(&str, f64)> = p.iter().map(|p| (p.key.as_str(), p.score)).collect();
        let want = [
            ("rising", 84.0),
            ("newcomer", 24.0),
            ("steady", 8.0),
            ("fading", 4.32),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for ((k, s), (wk, ws)) in got.iter().zip(want) {
            assert_eq!(*k, wk, "{got:?}");
            assert!(close(*s, ws), "{k}: {s} != {ws}");
        }
        let top2 = HeuristicPredictor.predict(&t, now, Duration::from_secs(3600), 2);
        assert_eq!(
            top2.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
            ["rising", "newcomer"]
        );
        assert!(
            HeuristicPredictor
                .predict(&t, now, Duration::ZERO, 0)
                .is_empty()
        );
    }

    #[test]
    fn ties_are_broken_by_key() {
        let t = AccessTracker::new(1000, Duration::from_secs(B));
        for k in ["c", "a", "b", "d"] {
            t.record(k, T0);
        }
        let p = HeuristicPredictor.predict(&t, T0, Duration::ZERO, 3);
        assert_eq!(
            p.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn empty_tracker_predicts_nothing() {
        let t = AccessTracker::new(10, Duration::from_secs(B));
        assert!(
            HeuristicPredictor
                .predict(&t, T0, Duration::ZERO, 5)
                .is_empty()
        );
    }
}
