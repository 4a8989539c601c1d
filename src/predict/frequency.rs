//! The `frequency` predictor: keys ranked by accesses per hour over the kept
//! history, with no growth or recency terms. A steady-traffic baseline, and
//! the proof that a predictor plugs in by configuration alone
//! (`WARMING_PREDICTOR=frequency` or `POST /warm/config {"predictor": "frequency"}`).

use std::time::Duration;

use super::{Prediction, Predictor};
use crate::access::AccessTracker;

/// Name used in configuration.
pub const NAME: &str = "frequency";

/// Ranks keys by `accesses_per_hour` alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrequencyPredictor;

impl Predictor for FrequencyPredictor {
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
        super::top_by_score(tracker, now_unix_secs, limit, |s| s.accesses_per_hour)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_rate_ignoring_recency() {
        let t = AccessTracker::new(10_000, Duration::from_secs(900));
        let now = 1_700_000_000;
        for _ in 0..20 {
            t.record("old-but-busy", now - 50 * 60);
        }
        for _ in 0..2 {
            t.record("fresh-but-rare", now - 60);
        }
        let p = FrequencyPredictor.predict(&t, now, Duration::from_secs(3600), 10);
        let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["old-but-busy", "fresh-but-rare"]);
        let h = super::super::HeuristicPredictor.predict(&t, now, Duration::from_secs(3600), 10);
        assert_eq!(
            h[0].key, "fresh-but-rare",
            "the heuristic rewards recency and penalises decline"
        );
    }
}
