//! Predictors: which keys will be hot in the next window.
//!
//! A [`Predictor`] reads the [`AccessTracker`] and returns up to `limit` keys,
//! best first. The spec's heuristic is [`HeuristicPredictor`]; an ML
//! predictor would implement the same trait (its features would come from the
//! tracker's [`AccessTracker::for_each`], or from its own history) and be
//! registered in [`by_name`] and [`crate::config::PREDICTORS`].

pub mod frequency;
pub mod heuristic;
pub mod learned;

use std::sync::Arc;
use std::time::Duration;

use crate::access::AccessTracker;

pub use frequency::FrequencyPredictor;
pub use heuristic::HeuristicPredictor;
pub use learned::LearnedPredictor;

/// One predicted key and its score (higher = hotter).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub key: String,
    pub score: f64,
}

/// What wrote a value the predictor is told of ([`Predictor::written`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// A warm: nobody has read the new value yet.
    Warm,
    /// A read-through miss: the access that caused it was just `observe`d
    /// and is the new value's first read.
    ReadThrough,
}

/// Predicts hot keys from the access history.
pub trait Predictor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Sees every recorded access as it happens (for predictors that keep
    /// their own history or train online). The tracker has it too.
    fn observe(&self, _key: &str, _at_unix_secs: u64) {}
    /// Periodic housekeeping (training, decay); the service calls it every
    /// few seconds, replay at the same virtual cadence.
    fn tick(&self, _now_unix_secs: u64) {}
    /// A fresh value of `key`, to live `ttl`, was written to the cache at
    /// `at_unix_secs` (predictors that model when values expire use it):
    /// by a warm, or by a miss of the service's own read-through.
    fn written(&self, _key: &str, _at_unix_secs: u64, _ttl: Duration, _by: Write) {}
    /// Whether [`Predictor::written`] does anything: the engine shares
    /// completed warms with the other instances only for such predictors.
    fn tracks_writes(&self) -> bool {
        false
    }
    /// The service's `default_ttl` changed at run time (`POST /warm/config`).
    fn ttl_changed(&self, _ttl: Duration) {}
    /// What `GET /warm/status` and the `warming_predictor_*` metrics show:
    /// the name, and the training figures of a predictor that trains.
    fn status(&self) -> crate::protocol::PredictorStatus {
        crate::protocol::PredictorStatus {
            name: self.name().to_string(),
            ..Default::default()
        }
    }
    /// Up to `limit` keys, best first.
    fn predict(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
    ) -> Vec<Prediction>;
    /// Up to `limit` keys most likely requested within `window`, best
    /// first, whatever the state of their cached values: what replay's
    /// prediction quality measures. The same as [`Predictor::predict`]
    /// unless the predictor names only some of the likely keys there (the
    /// learned predictor names only keys whose value expires).
    fn rank(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
    ) -> Vec<Prediction> {
        collect(|each| self.rank_each(tracker, now_unix_secs, window, limit, each))
    }
    /// [`Predictor::rank`], handing each key and score to `each`, best
    /// first, instead of collecting them: replay's prediction quality ranks
    /// up to 10,000 keys at every window and needs no copy of them. `each`
    /// may run under the predictor's locks: it must not call back into it.
    fn rank_each(
        &self,
        tracker: &AccessTracker,
        now_unix_secs: u64,
        window: Duration,
        limit: usize,
        each: &mut dyn FnMut(&str, f64),
    ) {
        for p in self.predict(tracker, now_unix_secs, window, limit) {
            each(&p.key, p.score);
        }
    }
}

/// The keys and scores that `rank` hands to its callback, in order, as
/// owned predictions.
pub(crate) fn collect(rank: impl FnOnce(&mut dyn FnMut(&str, f64))) -> Vec<Prediction> {
    let mut out = Vec::new();
    rank(&mut |key, score| {
        out.push(Prediction {
            key: key.to_string(),
            score,
        })
    });
    out
}

/// The `limit` tracked keys with the highest `score`, best first (ties by
/// key); keys scoring 0 or less are never predicted. Uses a bounded heap,
/// not a sort of every key.
pub fn top_by_score(
    tracker: &AccessTracker,
    now_unix_secs: u64,
    limit: usize,
    score: impl Fn(&crate::access::KeyStats) -> f64,
) -> Vec<Prediction> {
    if limit == 0 {
        return Vec::new();
    }
    let mut top = crate::access::topk::TopK::new(limit);
    tracker.for_each(now_unix_secs, &mut |key, stats| {
        let s = score(stats);
        if s > 0.0 {
            top.offer(s, key);
        }
    });
    top.into_sorted()
        .into_iter()
        .map(|(key, score)| Prediction { key, score })
        .collect()
}

/// What predictors are built with, from the typed configuration
/// ([`crate::config::ServiceConfig::predictor_settings`]) or replay's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictorSettings {
    /// TTL of warmed values; the learned predictor's idle gate by default.
    pub default_ttl: Duration,
    /// ONNX model scoring the learned predictor's features (`onnx` feature).
    pub model_path: Option<std::path::PathBuf>,
    /// Keys with learned feature state.
    pub learned_max_keys: usize,
    /// The learned predictor's idle gate; `None` = `default_ttl`, zero = off.
    pub learned_idle_gate: Option<Duration>,
    /// Width of the band around each expiry; `None` = the predict window.
    pub learned_band: Option<Duration>,
    /// Keys the learned model scores under this are never predicted.
    pub learned_min_probability: f32,
    /// Keys the trained online model scores under this are not predicted
    /// (see [`learned::LearnedConfig::trained_min_probability`]).
    pub learned_trained_min_probability: f32,
    /// Seed of the learned predictor's hashing and sampling; `None`: random
    /// (the service). A replay sets it so that runs repeat exactly.
    pub seed: Option<u64>,
}

impl Default for PredictorSettings {
    fn default() -> Self {
        PredictorSettings {
            default_ttl: Duration::from_secs(3600),
            model_path: None,
            learned_max_keys: 1 << 18,
            learned_idle_gate: None,
            learned_band: Some(Duration::from_secs(120)),
            learned_min_probability: 0.0,
            learned_trained_min_probability: learned::DEFAULT_TRAINED_MIN_PROBABILITY,
            seed: None,
        }
    }
}

/// The predictor named `name`, built with `settings`; `None` for an unknown name.
pub fn build(name: &str, settings: &PredictorSettings) -> Option<Arc<dyn Predictor>> {
    match name.trim().to_ascii_lowercase().as_str() {
        heuristic::NAME => Some(Arc::new(HeuristicPredictor)),
        frequency::NAME => Some(Arc::new(FrequencyPredictor)),
        learned::NAME => Some(Arc::new(LearnedPredictor::from_settings(settings))),
        _ => None,
    }
}

/// The predictor configured by name (see [`crate::config::PREDICTORS`]);
/// `None` for an unknown name.
pub fn by_name(name: &str) -> Option<Arc<dyn Predictor>> {
    build(name, &PredictorSettings::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_knows_every_configured_predictor() {
        for name in crate::config::PREDICTORS {
            let p = by_name(name).unwrap_or_else(|| panic!("{name} unknown"));
            assert_eq!(p.name(), *name);
        }
        assert!(by_name("Heuristic").is_some());
        assert!(by_name("lstm").is_none());
        assert!(by_name("").is_none());
    }
}
