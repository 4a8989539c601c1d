//! Cache manager: the [`Cache`] trait and its backends, the embedded
//! in-process cache ([`memory::MemoryCache`], moka), Redis
//! ([`redis::RedisCache`]) and Redis Cluster
//! ([`redis_cluster::RedisClusterCache`], whose [`lease_key`] names a key's
//! lease so that it lives in the key's hash slot), plus
//! [`batch::BatchWriter`], which groups the workers' writes into pipelines of
//! up to `max_batch_size` entries.
//!
//! Backends store values under the key as given, after an optional prefix; they
//! know nothing of origins, jobs or HTTP.

pub mod batch;
pub mod memory;
pub mod redis;
pub mod redis_cluster;

pub use redis_cluster::lease_key;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::ServiceConfig;

/// One value to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: String,
    pub value: Bytes,
    pub ttl: Duration,
}

/// A cache backend failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("cache backend unavailable: {0}")]
    Unavailable(String),
    #[error("cache command failed: {0}")]
    Command(String),
    #[error("invalid cache configuration: {0}")]
    Config(String),
}

/// Most `PTTL`s in one pipeline of [`Cache::ttl_many`].
pub const TTL_BATCH: usize = 1000;

/// A cache the service reads through and writes warmed values into.
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    /// Store every entry, each with its own TTL, in as few round trips as the
    /// backend allows (Redis: one pipeline). All or error.
    async fn set_many(&self, entries: &[CacheEntry]) -> Result<(), CacheError>;
    /// Remaining TTL of `key`, `None` when absent or without expiry.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError>;
    /// Remaining TTL of each of `keys`, in order: `None` when absent,
    /// [`Duration::MAX`] when it never expires. As few round trips as the
    /// backend allows (Redis: pipelines of [`TTL_BATCH`] `PTTL`s).
    async fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>, CacheError>;
    /// Up to `limit` keys (without the prefix) matching the glob `pattern`
    /// (`*`, `?`, `[..]`). Redis uses `SCAN MATCH`, never `KEYS`.
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError>;
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), CacheError>;
    /// `"memory"`, `"redis"` or `"redis-cluster"`.
    fn backend(&self) -> &'static str;
}

/// Opens the backend named by `cache_url` (`memory://`, `redis://host:port/db`
/// or `redis+cluster://host:port,host:port,...`).
pub async fn open(service: &ServiceConfig) -> Result<Arc<dyn Cache>, CacheError> {
    if service.cache_url.starts_with("memory://") {
        Ok(Arc::new(memory::MemoryCache::new(
            service.memory_cache_capacity,
            service.cache_prefix.clone(),
        )))
    } else if service.cache_url.starts_with(redis_cluster::SCHEME) {
        Ok(Arc::new(
            redis_cluster::RedisClusterCache::connect(
                &service.cache_url,
                service.cache_prefix.clone(),
            )
            .await?,
        ))
    } else {
        Ok(Arc::new(
            redis::RedisCache::connect(&service.cache_url, service.cache_prefix.clone()).await?,
        ))
    }
}

/// TTL of a warmed value: the origin's `max-age` when it sent one, else
/// `default_ttl`, plus a random extra of up to `jitter` x TTL so keys warmed
/// together do not all expire together.
pub fn effective_ttl(max_age: Option<Duration>, default_ttl: Duration, jitter: f64) -> Duration {
    let base = max_age.filter(|d| !d.is_zero()).unwrap_or(default_ttl);
    if jitter <= 0.0 {
        return base;
    }
    let extra = base.mul_f64(jitter * rand::random::<f64>());
    base + extra
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_prefers_max_age_and_stays_within_jitter() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let t = effective_ttl(None, d, 0.1);
            assert!(t >= d && t <= Duration::from_secs(110), "{t:?}");
            let t = effective_ttl(Some(Duration::from_secs(10)), d, 0.1);
            assert!(
                t >= Duration::from_secs(10) && t <= Duration::from_secs(11),
                "{t:?}"
            );
        }
        assert_eq!(effective_ttl(None, d, 0.0), d);
    }
}
