//! Access history: how often and how recently each key was read, in time
//! buckets, for a bounded number of keys. (stub: being written)

use std::time::Duration;

use crate::glob::KeyPattern;

/// What the tracker knows of one key at time `now`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyStats {
    /// Accesses inside the kept history.
    pub total: u64,
    /// Accesses per hour over the kept history.
    pub accesses_per_hour: f64,
    /// Accesses per hour in the recent part of the history.
    pub recent_per_hour: f64,
    /// Accesses per hour in the older part of the history.
    pub historical_per_hour: f64,
    /// Seconds since the last access.
    pub since_last_access_secs: u64,
}

/// Bounded, sharded access tracker.
pub struct AccessTracker {}

impl AccessTracker {
    pub fn new(_max_keys: usize, _bucket: Duration) -> Self { todo!() }
    /// Records one access of `key` at `at_unix_secs`.
    pub fn record(&self, _key: &str, _at_unix_secs: u64) { todo!() }
    pub fn len(&self) -> usize { todo!() }
    pub fn is_empty(&self) -> bool { self.len() == 0 }
    pub fn stats(&self, _key: &str, _now_unix_secs: u64) -> Option<KeyStats> { todo!() }
    /// Calls `f` for every tracked key.
    pub fn for_each(&self, _now_unix_secs: u64, _f: &mut dyn FnMut(&str, &KeyStats)) { todo!() }
    /// Up to `limit` tracked keys matching `pattern`.
    pub fn keys_matching(&self, _pattern: &KeyPattern, _limit: usize) -> Vec<String> { todo!() }
}
