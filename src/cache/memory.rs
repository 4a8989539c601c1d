//! Embedded in-process cache backend, built on `moka::future::Cache`.
//!
//! Every entry carries its own expiry instant; moka is told about it through
//! the [`Expiry`] policy ([`PerEntryTtl`]), so entries written in the same
//! batch with different TTLs expire independently. The cache is bounded by
//! entry count (`capacity`); beyond it moka evicts the least recently used
//! entries. Its default policy, TinyLFU, is not used: its admission filter
//! refuses a new entry whose key was read less often than the entries it
//! would displace, so a warmed key (never read yet, by definition) would be
//! dropped as soon as the cache is full, with the warm reported a success.
//!
//! Keys are stored as `prefix + key`, exactly as the Redis backend stores
//! them, and [`Cache::scan`] hands them back without the prefix.
//!
//! moka removes expired entries lazily, so every read path also checks the
//! stored expiry instant itself: an expired entry is never returned, even if
//! moka has not evicted it yet.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use moka::Expiry;

use super::{Cache, CacheEntry, CacheError};
use crate::glob::KeyPattern;

/// What the moka cache holds for one key.
#[derive(Debug, Clone)]
struct Stored {
    value: Bytes,
    /// When the value stops being served.
    expires_at: Instant,
}

impl Stored {
    /// Time left at `now`, `None` once expired.
    fn remaining(&self, now: Instant) -> Option<Duration> {
        let left = self.expires_at.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }
}

/// moka expiry policy: each entry lives until its own `expires_at`; reads do
/// not extend it, an overwrite replaces it.
struct PerEntryTtl;

impl Expiry<String, Stored> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Stored,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Stored,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(updated_at))
    }
}

/// In-process cache with a per-entry TTL, bounded by entry count.
pub struct MemoryCache {
    inner: moka::future::Cache<String, Stored>,
    prefix: String,
}

impl MemoryCache {
    /// A cache holding at most `capacity` entries, storing keys under `prefix`.
    pub fn new(capacity: u64, prefix: String) -> Self {
        let inner = moka::future::Cache::builder()
            .max_capacity(capacity)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache { inner, prefix }
    }

    /// Number of entries moka currently accounts for (approximate: moka
    /// applies inserts and evictions in the background; expired entries may
    /// still count until they are evicted).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Applies moka's pending maintenance (evictions beyond capacity, removal
    /// of expired entries) now. Tests call it to observe the bound.
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }

    fn full_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + key.len());
        k.push_str(&self.prefix);
        k.push_str(key);
        k
    }

    /// The live entry under `key`, if any.
    async fn live(&self, key: &str) -> Option<(Stored, Duration)> {
        let stored = self.inner.get(&self.full_key(key)).await?;
        let left = stored.remaining(Instant::now())?;
        Some((stored, left))
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(self.live(key).await.map(|(stored, _)| stored.value))
    }

    async fn set_many(&self, entries: &[CacheEntry]) -> Result<(), CacheError> {
        let now = Instant::now();
        for entry in entries {
            let stored = Stored {
                value: entry.value.clone(),
                expires_at: now + entry.ttl,
            };
            self.inner.insert(self.full_key(&entry.key), stored).await;
        }
        Ok(())
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        Ok(self.live(key).await.map(|(_, left)| left))
    }

    async fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.live(key).await.map(|(_, left)| left));
        }
        Ok(out)
    }

    /// Walks every entry (the embedded cache has no index to search), so it
    /// costs O(entries); `limit == 0` returns nothing.
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        let pattern = KeyPattern::parse(pattern).map_err(|e| CacheError::Command(e.to_string()))?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = Instant::now();
        let mut keys = Vec::new();
        for (full_key, stored) in self.inner.iter() {
            if stored.remaining(now).is_none() {
                continue;
            }
            let Some(key) = full_key.strip_prefix(self.prefix.as_str()) else {
                continue;
            };
            if pattern.is_match(key) {
                keys.push(key.to_owned());
                if keys.len() >= limit {
                    break;
                }
            }
        }
        Ok(keys)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, ttl: Duration) -> CacheEntry {
        CacheEntry {
            key: key.to_owned(),
            value: Bytes::from(value.to_owned()),
            ttl,
        }
    }

    #[tokio::test]
    async fn get_and_ttl_follow_each_entry() {
        let c = MemoryCache::new(100, "p:".into());
        c.set_many(&[
            entry("a", "1", Duration::from_secs(60)),
            entry("b", "2", Duration::from_secs(5)),
        ])
        .await
        .unwrap();
        assert_eq!(c.get("a").await.unwrap(), Some(Bytes::from("1")));
        assert_eq!(c.get("b").await.unwrap(), Some(Bytes::from("2")));
        assert_eq!(c.get("c").await.unwrap(), None);
        let ta = c.ttl("a").await.unwrap().unwrap();
        let tb = c.ttl("b").await.unwrap().unwrap();
        assert!(
            ta > Duration::from_secs(59) && ta <= Duration::from_secs(60),
            "{ta:?}"
        );
        assert!(
            tb > Duration::from_secs(4) && tb <= Duration::from_secs(5),
            "{tb:?}"
        );
        assert_eq!(c.ttl("c").await.unwrap(), None);
    }

    #[tokio::test]
    async fn overwrite_replaces_value_and_ttl() {
        let c = MemoryCache::new(100, String::new());
        c.set_many(&[entry("k", "old", Duration::from_secs(60))])
            .await
            .unwrap();
        c.set_many(&[entry("k", "new", Duration::from_secs(2))])
            .await
            .unwrap();
        assert_eq!(c.get("k").await.unwrap(), Some(Bytes::from("new")));
        assert!(c.ttl("k").await.unwrap().unwrap() <= Duration::from_secs(2));
    }

    /// In a full cache, warmed values land and displace the least recently
    /// used entries, however often those were read (TinyLFU's admission
    /// filter would have refused every one of them).
    #[tokio::test]
    async fn warms_into_a_full_cache_land() {
        let c = MemoryCache::new(100, String::new());
        let ttl = Duration::from_secs(3600);
        let old: Vec<_> = (0..100)
            .map(|i| entry(&format!("old:{i}"), "v", ttl))
            .collect();
        c.set_many(&old).await.unwrap();
        for _ in 0..3 {
            for i in 0..100 {
                c.get(&format!("old:{i}")).await.unwrap();
            }
        }
        let new: Vec<_> = (0..50)
            .map(|i| entry(&format!("new:{i}"), "v", ttl))
            .collect();
        c.set_many(&new).await.unwrap();
        c.run_pending_tasks().await;
        for i in 0..50 {
            assert!(
                c.get(&format!("new:{i}")).await.unwrap().is_some(),
                "new:{i}"
            );
        }
        assert_eq!(c.entry_count(), 100);
        let kept = futures::future::join_all((0..100).map(|i| {
            let c = &c;
            async move { c.get(&format!("old:{i}")).await.unwrap().is_some() }
        }))
        .await;
        assert_eq!(
            kept.iter().filter(|k| **k).count(),
            50,
            "the 50 least recently used went"
        );
    }

    #[tokio::test]
    async fn expired_entries_are_never_served() {
        let c = MemoryCache::new(100, String::new());
        c.set_many(&[entry("k", "v", Duration::from_millis(50))])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.get("k").await.unwrap(), None);
        assert_eq!(c.ttl("k").await.unwrap(), None);
    }
}
