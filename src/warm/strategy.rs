//! The three warming strategies of the spec: in what order, and at what
//! priority, the keys of one request are queued.
//!
//! [`plan`] is pure: it asks [`KeyFacts`] about hotness and cost and returns
//! the keys in queue order (the queue serves priority descending, then FIFO,
//! so the returned order is the warming order among equal priorities).
//! Repeated keys within one request are dropped (the first occurrence stays).
//! Every strategy keeps all the keys it is given: callers apply `limit`.
//!
//! | strategy    | order                                                   | priority |
//! |-------------|---------------------------------------------------------|----------|
//! | `selective` | hotness descending, ties in input order                 | `base - floor(base * rank / n)`, at least 1 when `base > 0` |
//! | `breadth`   | depth (number of `:`) ascending, ties lexicographic     | `base` |
//! | `priority`  | `importance * hotness / cost` descending, ties in input order | `base` |
//!
//! Selective: the hottest key gets `base`, and priority falls linearly with
//! rank to about `base / n` for the coldest (e.g. base 100, 4 keys: 100, 75,
//! 50, 25); it never reaches 0 unless `base` is 0, since a 0 would rank
//! below every other request's keys for no reason of their own.
//!
//! Priority: `importance = max(base, 1)` (the request's priority, 1..=100),
//! `hotness = facts.hotness(key) + 1` (so keys never seen still rank by
//! cost instead of all scoring 0), `cost = facts.cost_ms(key)`; a cost that
//! is not a positive finite number counts as 1 ms. Importance is the same
//! for every key of one request, so within a request the order is
//! `(hotness + 1) / cost`; importance matters when scores are compared
//! across requests.

use std::collections::HashSet;

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
pub fn plan(
    strategy: Strategy,
    keys: Vec<String>,
    base_priority: u8,
    facts: &dyn KeyFacts,
) -> Vec<Planned> {
    let keys = dedup(keys);
    match strategy {
        Strategy::Selective => selective(keys, base_priority, facts),
        Strategy::Breadth => breadth(keys, base_priority),
        Strategy::Priority => priority(keys, base_priority, facts),
    }
}

/// Drops repeated keys, keeping the first occurrence and the order.
fn dedup(keys: Vec<String>) -> Vec<String> {
    let keep: Vec<bool> = {
        let mut seen: HashSet<&str> = HashSet::with_capacity(keys.len());
        keys.iter().map(|k| seen.insert(k.as_str())).collect()
    };
    keys.into_iter()
        .zip(keep)
        .filter_map(|(k, keep)| keep.then_some(k))
        .collect()
}

fn sane_hotness(h: f64) -> f64 {
    if h.is_finite() && h > 0.0 { h } else { 0.0 }
}

/// Priority of rank `i` (0 = hottest) of `n`.
pub fn selective_priority(base: u8, i: usize, n: usize) -> u8 {
    if base == 0 || n == 0 {
        return base;
    }
    let drop = usize::from(base) * i / n;
    (usize::from(base) - drop.min(usize::from(base))).max(1) as u8
}

fn selective(keys: Vec<String>, base: u8, facts: &dyn KeyFacts) -> Vec<Planned> {
    let mut ranked: Vec<(f64, String)> = keys
        .into_iter()
        .map(|k| (sane_hotness(facts.hotness(&k)), k))
        .collect();
    // Stable: equal hotness keeps input order.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let n = ranked.len();
    ranked
        .into_iter()
        .enumerate()
        .map(|(i, (_, key))| Planned {
            key,
            priority: selective_priority(base, i, n),
        })
        .collect()
}

/// Number of `:` separators: `user` 0, `user:1` 1, `user:1:posts` 2.
pub fn depth(key: &str) -> usize {
    key.bytes().filter(|&b| b == b':').count()
}

fn breadth(mut keys: Vec<String>, base: u8) -> Vec<Planned> {
    keys.sort_by(|a, b| depth(a).cmp(&depth(b)).then_with(|| a.cmp(b)));
    keys.into_iter()
        .map(|key| Planned {
            key,
            priority: base,
        })
        .collect()
}

/// `importance * hotness / cost` of the priority strategy.
pub fn priority_score(base: u8, hotness: f64, cost_ms: f64) -> f64 {
    let importance = f64::from(base.max(1));
    let cost = if cost_ms.is_finite() && cost_ms > 0.0 {
        cost_ms
    } else {
        1.0
    };
    importance * (sane_hotness(hotness) + 1.0) / cost
}

fn priority(keys: Vec<String>, base: u8, facts: &dyn KeyFacts) -> Vec<Planned> {
    let mut scored: Vec<(f64, String)> = keys
        .into_iter()
        .map(|k| {
            (
                priority_score(base, facts.hotness(&k), facts.cost_ms(&k)),
                k,
            )
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .into_iter()
        .map(|(_, key)| Planned {
            key,
            priority: base,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct Facts {
        hot: HashMap<&'static str, f64>,
        cost: HashMap<&'static str, f64>,
    }

    impl KeyFacts for Facts {
        fn hotness(&self, key: &str) -> f64 {
            self.hot.get(key).copied().unwrap_or(0.0)
        }
        fn cost_ms(&self, key: &str) -> f64 {
            self.cost.get(key).copied().unwrap_or(10.0)
        }
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    fn order(p: &[Planned]) -> Vec<&str> {
        p.iter().map(|p| p.key.as_str()).collect()
    }

    fn prios(p: &[Planned]) -> Vec<u8> {
        p.iter().map(|p| p.priority).collect()
    }

    #[test]
    fn selective_orders_by_hotness_with_linear_priorities() {
        let f = Facts {
            hot: HashMap::from([("a", 1.0), ("b", 50.0), ("c", 10.0), ("d", 10.0)]),
            ..Default::default()
        };
        let p = plan(Strategy::Selective, keys(&["a", "b", "c", "d"]), 100, &f);
        assert_eq!(order(&p), ["b", "c", "d", "a"]); // c before d: input order
        assert_eq!(prios(&p), [100, 75, 50, 25]);
    }

    #[test]
    fn selective_priority_never_reaches_zero() {
        assert_eq!(selective_priority(3, 9, 10), 1);
        assert_eq!(selective_priority(1, 5, 6), 1);
        assert_eq!(selective_priority(0, 0, 3), 0);
        assert_eq!(selective_priority(100, 0, 1), 100);
        let f = Facts::default();
        let many: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
        let p = plan(Strategy::Selective, many, 10, &f);
        assert!(p.iter().all(|p| (1..=10).contains(&p.priority)));
        assert!(p.windows(2).all(|w| w[0].priority >= w[1].priority));
        assert_eq!(p[0].key, "k0"); // all unseen: input order
    }

    #[test]
    fn breadth_puts_parents_first_then_lexicographic() {
        let f = Facts::default();
        let p = plan(
            Strategy::Breadth,
            keys(&[
                "user:1:posts:9",
                "user:2",
                "user:1:posts",
                "user",
                "user:1",
                "post",
            ]),
            70,
            &f,
        );
        assert_eq!(
            order(&p),
            [
                "post",
                "user",
                "user:1",
                "user:2",
                "user:1:posts",
                "user:1:posts:9"
            ]
        );
        assert!(p.iter().all(|p| p.priority == 70));
    }

    #[test]
    fn priority_is_hotness_over_cost() {
        let f = Facts {
            hot: HashMap::from([("hot_slow", 99.0), ("hot_fast", 99.0), ("cold_fast", 0.0)]),
            cost: HashMap::from([("hot_slow", 1000.0), ("hot_fast", 10.0), ("cold_fast", 0.5)]),
        };
        // Scores (base 80): hot_fast 80*100/10 = 800; cold_fast 80*1/0.5 = 160;
        // hot_slow 80*100/1000 = 8; unseen (cost 10) 80*1/10 = 8 -> tie with
        // hot_slow, input order decides.
        let p = plan(
            Strategy::Priority,
            keys(&["hot_slow", "unseen", "cold_fast", "hot_fast"]),
            80,
            &f,
        );
        assert_eq!(order(&p), ["hot_fast", "cold_fast", "hot_slow", "unseen"]);
        assert!(p.iter().all(|p| p.priority == 80));
        assert_eq!(priority_score(0, 0.0, 1.0), 1.0); // importance at least 1
        assert_eq!(priority_score(10, 1.0, 0.0), 20.0); // bad cost counts as 1 ms
        assert_eq!(priority_score(10, f64::NAN, f64::NAN), 10.0);
    }

    #[test]
    fn repeated_keys_are_planned_once() {
        let f = Facts::default();
        for s in Strategy::ALL {
            let p = plan(s, keys(&["a", "b", "a", "c", "b"]), 50, &f);
            let mut o = order(&p);
            o.sort();
            assert_eq!(o, ["a", "b", "c"], "{s}");
        }
        let p = plan(Strategy::Priority, keys(&["b", "a", "b"]), 50, &f);
        assert_eq!(order(&p), ["b", "a"]);
    }

    #[test]
    fn empty_input() {
        let f = Facts::default();
        for s in Strategy::ALL {
            assert!(plan(s, Vec::new(), 50, &f).is_empty());
        }
    }

    #[test]
    fn depth_counts_colons() {
        assert_eq!(depth("a"), 0);
        assert_eq!(depth("a:b:c"), 2);
        assert_eq!(depth("a/b"), 0);
    }
}
