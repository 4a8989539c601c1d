//! Embedded in-process cache backend (moka). (stub: being written)

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, CacheEntry, CacheError};

/// In-process cache with a per-entry TTL, bounded by entry count.
pub struct MemoryCache {}

impl MemoryCache {
    pub fn new(_capacity: u64, _prefix: String) -> Self {
        todo!()
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, CacheError> { todo!() }
    async fn set_many(&self, _entries: &[CacheEntry]) -> Result<(), CacheError> { todo!() }
    async fn ttl(&self, _key: &str) -> Result<Option<Duration>, CacheError> { todo!() }
    async fn scan(&self, _pattern: &str, _limit: usize) -> Result<Vec<String>, CacheError> { todo!() }
    async fn ping(&self) -> Result<(), CacheError> { todo!() }
    fn backend(&self) -> &'static str { "memory" }
}
