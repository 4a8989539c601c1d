//! Observed origin latency per key and per key prefix, bounded, used as the
//! `cost` of the priority strategy. (stub: being written)

use std::time::Duration;

/// Moving averages of origin latency.
pub struct CostModel {}

impl CostModel {
    pub fn new(_max_keys: usize) -> Self { todo!() }
    pub fn observe(&self, _key: &str, _latency: Duration) { todo!() }
    /// Latency of `key`, else of its longest known prefix (up to a `:`), else the overall average, else 1 ms... in ms.
    pub fn cost_ms(&self, _key: &str) -> f64 { todo!() }
}
