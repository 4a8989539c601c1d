//! The three warming strategies of the spec: in what order, and at what
//! priority, the keys of one request are queued. (stub: being written)

use crate::config::Strategy;

/// One key as the strategy wants it queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub key: String,
    /// 0..=100, higher first.
    pub priority: u8,
}

/// What a strategy may ask about a key.
pub trait KeyFacts {
    /// Accesses per hour (0 when unknown).
    fn hotness(&self, key: &str) -> f64;
    /// Observed origin latency of this key or its prefix, in ms (a default when unknown).
    fn cost_ms(&self, key: &str) -> f64;
}

/// Orders `keys` per `strategy`; the result is in queue order.
pub fn plan(_strategy: Strategy, _keys: Vec<String>, _base_priority: u8, _facts: &dyn KeyFacts) -> Vec<Planned> { todo!() }
