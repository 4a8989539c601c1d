//! Observed origin latency per key and per key prefix, bounded, used as the
//! `cost` of the priority strategy.
//!
//! Every observation updates exponentially weighted moving averages
//! (`alpha` = [`ALPHA`], the first observation sets the value) of:
//! - the key itself;
//! - each of its prefixes, a prefix being the text up to a `:` (`user:1:profile`
//!   updates `user:1` and `user`; at most [`MAX_PREFIX_LEVELS`] levels, the
//!   deepest first);
//! - the whole origin (the "global average").
//!
//! [`CostModel::cost_ms`] answers with the most specific of these that is
//! known, else 1.0 ms. Keys and prefixes are each held in a map of at most
//! `max_keys` entries; a full map drops its least recently observed ~10% in
//! one sweep (amortized O(1) per observation). All methods take `&self`; one
//! [`parking_lot::Mutex`] guards the maps, held for a few hash lookups.

use std::time::Duration;

use compact_str::CompactString;
use hashbrown::HashMap;
use parking_lot::Mutex;

/// Weight of a new observation.
pub const ALPHA: f64 = 0.2;
/// Prefix levels updated per observation.
pub const MAX_PREFIX_LEVELS: usize = 8;
/// Cost when nothing at all has been observed, in ms.
pub const DEFAULT_COST_MS: f64 = 1.0;

/// Moving averages of origin latency.
pub struct CostModel {
    max_keys: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<CompactString, Ewma>,
    prefixes: HashMap<CompactString, Ewma>,
    global: Option<f64>,
    /// Observation counter: the "time" of the least-recently-observed order.
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Ewma {
    ms: f64,
    tick: u64,
}

fn blend(old: f64, sample: f64) -> f64 {
    old + ALPHA * (sample - old)
}

/// Updates (or inserts) `name` in a map bounded to `max` entries.
fn update(map: &mut HashMap<CompactString, Ewma>, max: usize, name: &str, ms: f64, tick: u64) {
    if let Some(e) = map.get_mut(name) {
        e.ms = blend(e.ms, ms);
        e.tick = tick;
        return;
    }
    if max == 0 {
        return;
    }
    if map.len() >= max {
        evict_oldest(map);
    }
    map.insert(CompactString::from(name), Ewma { ms, tick });
}

/// Drops the least recently observed ~10% (at least one entry).
fn evict_oldest(map: &mut HashMap<CompactString, Ewma>) {
    let k = (map.len() / 10).max(1);
    let mut ticks: Vec<u64> = map.values().map(|e| e.tick).collect();
    let (_, threshold, _) = ticks.select_nth_unstable(k - 1);
    let threshold = *threshold;
    map.retain(|_, e| e.tick > threshold);
}

/// `user:1:profile` -> `user:1`, then `user`.
fn prefixes(key: &str) -> impl Iterator<Item = &str> {
    let mut rest = key;
    std::iter::from_fn(move || {
        let i = rest.rfind(':')?;
        rest = &rest[..i];
        Some(rest)
    })
    .take(MAX_PREFIX_LEVELS)
}

impl CostModel {
    /// A model remembering at most `max_keys` keys (and as many prefixes).
    pub fn new(max_keys: usize) -> Self {
        CostModel {
            max_keys,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn observe(&self, key: &str, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        let mut g = self.inner.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        update(&mut inner.keys, self.max_keys, key, ms, tick);
        for p in prefixes(key) {
            update(&mut inner.prefixes, self.max_keys, p, ms, tick);
        }
        inner.global = Some(inner.global.map_or(ms, |g| blend(g, ms)));
    }

    /// Latency of `key`, else of its longest known prefix (up to a `:`), else the overall average, else 1 ms... in ms.
    pub fn cost_ms(&self, key: &str) -> f64 {
        let g = self.inner.lock();
        if let Some(e) = g.keys.get(key) {
            return e.ms;
        }
        for p in prefixes(key) {
            if let Some(e) = g.prefixes.get(p) {
                return e.ms;
            }
        }
        g.global.unwrap_or(DEFAULT_COST_MS)
    }

    /// Keys with their own average.
    pub fn len(&self) -> usize {
        self.inner.lock().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The overall moving average, if anything was observed.
    pub fn global_ms(&self) -> Option<f64> {
        self.inner.lock().global
    }
}

impl std::fmt::Debug for CostModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.inner.lock();
        f.debug_struct("CostModel")
            .field("max_keys", &self.max_keys)
            .field("keys", &g.keys.len())
            .field("prefixes", &g.prefixes.len())
            .field("global_ms", &g.global)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn default_is_one_ms() {
        let c = CostModel::new(10);
        assert_eq!(c.cost_ms("anything"), 1.0);
        assert!(c.is_empty());
        assert_eq!(c.global_ms(), None);
    }

    #[test]
    fn ewma_of_a_key() {
        let c = CostModel::new(10);
        c.observe("k", ms(100));
        assert!(close(c.cost_ms("k"), 100.0));
        c.observe("k", ms(200));
        assert!(close(c.cost_ms("k"), 120.0)); // 100 + 0.2 * 100
        c.observe("k", ms(20));
        assert!(close(c.cost_ms("k"), 100.0)); // 120 + 0.2 * -100
    }

    #[test]
    fn falls_back_to_prefixes_then_global() {
        let c = CostModel::new(10);
        c.observe("user:1:profile", ms(50));
        c.observe("post:9", ms(10));
        // Same prefix `user:1`.
        assert!(close(c.cost_ms("user:1:settings"), 50.0));
        // Only `user` known.
        assert!(close(c.cost_ms("user:2:profile"), 50.0));
        assert!(close(c.cost_ms("post:10"), 10.0));
        // Nothing shared: global EWMA 50 + 0.2 * (10 - 50) = 42.
        assert!(close(c.cost_ms("other"), 42.0));
        assert!(close(c.global_ms().unwrap(), 42.0));
        // The key itself wins over its prefix.
        c.observe("user:1:settings", ms(5));
        assert!(close(c.cost_ms("user:1:settings"), 5.0));
        assert!(close(c.cost_ms("user:1:x"), 50.0 + 0.2 * (5.0 - 50.0)));
    }

    #[test]
    fn prefixes_walk_up() {
        let got: Vec<&str> = prefixes("a:b:c:d").collect();
        assert_eq!(got, ["a:b:c", "a:b", "a"]);
        assert_eq!(prefixes("plain").count(), 0);
        assert_eq!(prefixes(&":".repeat(20)).count(), MAX_PREFIX_LEVELS);
    }

    #[test]
    fn bounded_and_keeps_recent() {
        let c = CostModel::new(100);
        for i in 0..10_000u64 {
            c.observe(&format!("k:{i}"), ms(i % 50 + 1));
            assert!(c.len() <= 100);
        }
        assert!(c.len() >= 90);
        assert!(close(c.cost_ms("k:9999"), 50.0));
        assert!(c.inner.lock().prefixes.len() <= 100);
    }

    #[test]
    fn zero_capacity_keeps_global_only() {
        let c = CostModel::new(0);
        c.observe("a:b", ms(7));
        assert_eq!(c.len(), 0);
        assert!(close(c.cost_ms("a:b"), 7.0));
    }

    #[test]
    fn shared_between_threads() {
        let c = std::sync::Arc::new(CostModel::new(1000));
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.observe(&format!("t{t}:{i}"), ms(3));
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert!(close(c.cost_ms("t0:unknown"), 3.0));
        assert!(c.len() <= 1000);
    }
}
