//! Redis cache backend (ConnectionManager, pipelined writes, SCAN). (stub: being written)

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cache, CacheEntry, CacheError};

/// Redis backend.
pub struct RedisCache {}

impl RedisCache {
    /// Connects to `redis://host:port/db`; fails with a message saying how to start Redis.
    pub async fn connect(_url: &str, _prefix: String) -> Result<Self, CacheError> {
        todo!()
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, _key: &str) -> Result<Option<Bytes>, CacheError> { todo!() }
    async fn set_many(&self, _entries: &[CacheEntry]) -> Result<(), CacheError> { todo!() }
    async fn ttl(&self, _key: &str) -> Result<Option<Duration>, CacheError> { todo!() }
    async fn scan(&self, _pattern: &str, _limit: usize) -> Result<Vec<String>, CacheError> { todo!() }
    async fn ping(&self) -> Result<(), CacheError> { todo!() }
    fn backend(&self) -> &'static str { "redis" }
}
