//! Prediction quality: how well a predictor's top-K names the keys of the
//! next window.
//!
//! Every `window` seconds of trace time the predictor is asked for its top
//! `max(K)` keys (`window` is also what it is told it predicts for). The
//! requests of the following window are then counted per key. For each K:
//!
//! - **recall@K** (request-weighted) = requests of the window to keys in the
//!   top-K / all requests of the window: the share of the next window's
//!   traffic that warming those K keys would have covered;
//! - **precision@K** (request-weighted) = requests of the window to keys in
//!   the top-K / requests of the window to the K keys the window actually
//!   read most (its best possible top-K): 1.0 when the K predicted keys carry
//!   as much traffic as any K keys could;
//! - **key precision@K** = predicted keys read at least once in the window /
//!   predicted keys: the share of K warms that would be used at all.
//!
//! Figures are summed over windows before dividing (micro-average), so busy
//! windows weigh more. The first window (no history yet) is not scored.

use serde::Serialize;

use super::sim::IdMap;
use super::trace::KeySpace;
use crate::access::AccessTracker;
use crate::predict::Predictor;

/// The K values reported by default.
pub const DEFAULT_KS: [usize; 4] = [10, 100, 1000, 10000];

/// Quality of one K over the whole trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityRow {
    pub k: usize,
    pub precision: f64,
    pub recall: f64,
    pub key_precision: f64,
    /// Windows scored.
    pub windows: u64,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    hits: u64,
    requests: u64,
    best: u64,
    used: u64,
    predicted: u64,
}

/// Scores one predictor, window after window.
pub struct Quality {
    window: f64,
    ks: Vec<usize>,
    next: f64,
    /// Predicted ids and their rank (0 = best) for the current window.
    predicted: IdMap<u32>,
    scoring: bool,
    counts: IdMap<u32>,
    requests: u64,
    acc: Vec<Acc>,
    windows: u64,
}

impl Quality {
    pub fn new(window: f64, mut ks: Vec<usize>) -> Self {
        ks.retain(|&k| k > 0);
        ks.sort_unstable();
        ks.dedup();
        Quality {
            window: window.max(1.0),
            acc: vec![Acc::default(); ks.len()],
            ks,
            next: f64::NAN,
            predicted: IdMap::default(),
            scoring: false,
            counts: IdMap::default(),
            requests: 0,
            windows: 0,
        }
    }

    /// When the next window starts (NaN before the first request).
    pub fn next_at(&self) -> f64 {
        self.next
    }

    /// Whether any K is measured: without one, no window ever rolls, so
    /// the predictor is never asked to rank (`warming replay --no-quality`).
    pub fn enabled(&self) -> bool {
        !self.ks.is_empty()
    }

    /// First request at `t`: the first window starts (unscored).
    pub fn start(&mut self, t: f64) {
        if self.next.is_nan() && self.enabled() {
            self.next = t + self.window;
        }
    }

    /// Counts one request of the current window.
    pub fn request(&mut self, id: u64) {
        if self.scoring {
            *self.counts.entry(id).or_insert(0) += 1;
            self.requests += 1;
        }
    }

    /// The window ending at `self.next` closes: score it, then predict the next.
    pub fn roll(
        &mut self,
        predictor: &dyn Predictor,
        tracker: &AccessTracker,
        key_space: KeySpace,
    ) {
        let now = self.next;
        if self.scoring {
            self.score();
        }
        let max_k = self.ks.last().copied().unwrap_or(0);
        let window = super::modes::secs(self.window);
        self.predicted.clear();
        let predicted = &mut self.predicted;
        let mut rank = 0u32;
        predictor.rank_each(
            tracker,
            now.max(0.0) as u64,
            window,
            max_k,
            &mut |key, _| {
                if let Some(id) = key_space.id(key) {
                    predicted.entry(id).or_insert(rank);
                }
                rank += 1;
            },
        );
        self.counts.clear();
        self.requests = 0;
        self.scoring = true;
        self.next = now + self.window;
    }

    fn score(&mut self) {
        if self.requests == 0 {
            return;
        }
        self.windows += 1;
        let mut sorted: Vec<u32> = self.counts.values().copied().collect();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        for (i, &k) in self.ks.iter().enumerate() {
            let a = &mut self.acc[i];
            let (mut hits, mut used, mut predicted) = (0u64, 0u64, 0u64);
            for (id, &rank) in &self.predicted {
                if (rank as usize) < k {
                    predicted += 1;
                    if let Some(&c) = self.counts.get(id) {
                        hits += u64::from(c);
                        used += 1;
                    }
                }
            }
            a.hits += hits;
            a.used += used;
            a.predicted += predicted;
            a.requests += self.requests;
            a.best += sorted.iter().take(k).map(|&c| u64::from(c)).sum::<u64>();
        }
    }

    /// The figures so far (the window in progress is not scored).
    pub fn rows(&self) -> Vec<QualityRow> {
        let r = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.ks
            .iter()
            .zip(&self.acc)
            .map(|(&k, a)| QualityRow {
                k,
                precision: r(a.hits, a.best),
                recall: r(a.hits, a.requests),
                key_precision: r(a.used, a.predicted),
                windows: self.windows,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::predict::Prediction;

    /// Always predicts keys "1", "2", "3" in that order.
    struct Fixed;

    impl Predictor for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn predict(&self, _: &AccessTracker, _: u64, _: Duration, limit: usize) -> Vec<Prediction> {
            ["1", "2", "3"]
                .iter()
                .take(limit)
                .map(|k| Prediction {
                    key: k.to_string(),
                    score: 1.0,
                })
                .collect()
        }
    }

    /// Window of 10 requests: key 1 x4, key 9 x3, key 2 x2, key 3 x1.
    /// K=1: predicted {1}: hits 4; best top-1 = 4 -> precision 1, recall 0.4,
    /// key precision 1. K=2: {1,2}: hits 6, best 4+3 = 7 -> 6/7, recall 0.6.
    /// K=3: {1,2,3}: hits 7, best 9 -> 7/9, recall 0.7, key precision 1.
    #[test]
    fn hand_computed_window() {
        let tracker = AccessTracker::new(10, Duration::from_secs(60));
        let mut q = Quality::new(60.0, vec![1, 2, 3]);
        q.start(0.0);
        q.roll(&Fixed, &tracker, KeySpace::Numeric);
        for id in [1, 1, 1, 1, 9, 9, 9, 2, 2, 3] {
            q.request(id);
        }
        q.roll(&Fixed, &tracker, KeySpace::Numeric);
        let rows = q.rows();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(rows[0].precision, 1.0) && close(rows[0].recall, 0.4));
        assert!(close(rows[1].precision, 6.0 / 7.0) && close(rows[1].recall, 0.6));
        assert!(close(rows[2].precision, 7.0 / 9.0) && close(rows[2].recall, 0.7));
        assert!(close(rows[2].key_precision, 1.0));
        assert_eq!(rows[0].windows, 1);
    }
}
