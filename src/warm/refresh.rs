//! Refresh before expiry: which predicted keys a `refresh` schedule warms.
//!
//! At each firing of a `refresh` action (the built-in `expiry-refresh` runs
//! every minute) the predictor's top keys are looked up in the cache, and
//! only those whose value is missing or would expire before the next firing
//! (plus the time a fetch may take) are queued. A hot key is so refreshed
//! while readers still hit its old value, instead of expiring under load and
//! sending every reader to the origin at once; keys with plenty of TTL left
//! cost one TTL lookup, no origin request. `warming replay` runs the same
//! rule against its simulated cache.

use std::time::Duration;

/// Most keys one firing looks at when neither the action nor the budget
/// bounds it (the origin rate limit is off).
pub const UNBOUNDED_LIMIT: usize = 100_000;

/// Keys one firing may queue when its action names no limit: what the origin
/// budget fetches until the next firing, so that refreshing never asks for
/// more than the origin may give. `rps` 0 (limit off): [`UNBOUNDED_LIMIT`].
pub fn budget_limit(rps: f64, until_next: Duration) -> usize {
    let secs = until_next.as_secs_f64();
    if !(rps.is_finite() && rps > 0.0) || secs <= 0.0 {
        return UNBOUNDED_LIMIT;
    }
    ((rps * secs).ceil() as usize).clamp(1, UNBOUNDED_LIMIT)
}

/// The keys of `keys` to refresh now, in their order: those whose remaining
/// TTL (`None`: not cached) is shorter than `horizon`, the time until the
/// next firing plus the time a fetch may take.
pub fn due<K>(
    keys: impl IntoIterator<Item = K>,
    remaining: impl Fn(&K) -> Option<Duration>,
    horizon: Duration,
) -> Vec<K> {
    keys.into_iter()
        .filter(|k| remaining(k).is_none_or(|r| r < horizon))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limit_is_the_budget_until_the_next_firing() {
        assert_eq!(budget_limit(100.0, Duration::from_secs(60)), 6000);
        assert_eq!(budget_limit(0.5, Duration::from_secs(3)), 2);
        assert_eq!(budget_limit(0.0, Duration::from_secs(60)), UNBOUNDED_LIMIT);
        assert_eq!(budget_limit(1e9, Duration::from_secs(60)), UNBOUNDED_LIMIT);
        assert_eq!(budget_limit(100.0, Duration::ZERO), UNBOUNDED_LIMIT);
    }

    #[test]
    fn only_keys_missing_or_expiring_within_the_horizon_are_due() {
        let ttl = |k: &&str| match *k {
            "fresh" => Some(Duration::from_secs(600)),
            "expiring" => Some(Duration::from_secs(30)),
            "edge" => Some(Duration::from_secs(65)),
            _ => None,
        };
        let keys = ["fresh", "expiring", "missing", "edge"];
        assert_eq!(
            due(keys, ttl, Duration::from_secs(65)),
            ["expiring", "missing"]
        );
        assert_eq!(
            due(keys, ttl, Duration::from_secs(66)),
            ["expiring", "missing", "edge"]
        );
    }
}
