//! Predictors: which keys will be hot in the next window. (stub: being written)

use std::sync::Arc;
use std::time::Duration;

use crate::access::AccessTracker;

/// One predicted key and its score (higher = hotter).
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub key: String,
    pub score: f64,
}

/// Predicts hot keys from the access history.
pub trait Predictor: Send + Sync {
    fn name(&self) -> &'static str;
    /// Up to `limit` keys, best first.
    fn predict(&self, tracker: &AccessTracker, now_unix_secs: u64, window: Duration, limit: usize) -> Vec<Prediction>;
}

/// The predictor configured by name (see [`crate::config::PREDICTORS`]).
pub fn by_name(_name: &str) -> Option<Arc<dyn Predictor>> { todo!() }
