//! Redis cache backend.
//!
//! One [`ConnectionManager`] (a multiplexed connection that reconnects by
//! itself) is shared by every caller; cloning it is cheap. Writes go out as
//! one pipeline of `SET key value PX ttl_ms` per [`Cache::set_many`] call, so a
//! batch costs one round trip. Key listing uses `SCAN ... MATCH ... COUNT`,
//! never `KEYS`, which would block the server on a large keyspace.
//!
//! Keys are stored as `prefix + key`. The prefix is escaped before it is put
//! in front of a `MATCH` pattern, so a prefix such as `app[1]:` matches
//! itself literally.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use super::{Cache, CacheEntry, CacheError};
use crate::glob::KeyPattern;

/// Longest we wait for the first connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one command (or pipeline) may take before it fails.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// `COUNT` hint of each `SCAN` step: keys Redis examines per round trip.
const SCAN_COUNT: usize = 1000;

/// Redis backend.
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    /// `prefix` with glob metacharacters escaped, for `SCAN MATCH`.
    match_prefix: String,
}

impl RedisCache {
    /// Connects to `redis://host:port/db`; fails with a message saying how to start Redis.
    pub async fn connect(url: &str, prefix: String) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)
            .map_err(|e| CacheError::Config(format!("invalid Redis URL {url:?}: {e}")))?;
        let addr = client.get_connection_info().addr().to_string();
        let unreachable = |why: String| {
            CacheError::Unavailable(format!(
                "cannot reach Redis at {addr}: {why}. Start it with \
                 `redis-server --daemonize yes --port 6379 --save '' --appendonly no`, \
                 or run with WARMING_CACHE_URL=memory:// for the embedded cache"
            ))
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
        // The handshake succeeded; PING catches a server that refuses commands
        // (authentication required, still loading its data set).
        let _: () = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let match_prefix = escape_glob(&prefix);
        Ok(RedisCache {
            conn,
            prefix,
            match_prefix,
        })
    }

    fn full_key(&self, key: &str) -> String {
        full_key(&self.prefix, key)
    }
}

/// `s` with the `SCAN MATCH` metacharacters (`* ? [ ] \`) backslash-escaped.
pub fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Connection trouble is `Unavailable`; anything the server refused is `Command`.
pub(super) fn map_err(e: redis::RedisError) -> CacheError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        CacheError::Unavailable(e.to_string())
    } else {
        CacheError::Command(e.to_string())
    }
}

/// `prefix + key`, the name a cache key is stored under.
pub(super) fn full_key(prefix: &str, key: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + key.len());
    k.push_str(prefix);
    k.push_str(key);
    k
}

/// `GET key` (a full key) over `conn`.
pub(super) async fn get_value(
    conn: &mut impl ConnectionLike,
    key: String,
) -> Result<Option<Bytes>, CacheError> {
    let value: Option<Vec<u8>> = redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(map_err)?;
    Ok(value.map(Bytes::from))
}

/// `PTTL key` (a full key) over `conn`: `None` when the key does not exist or
/// never expires.
pub(super) async fn pttl(
    conn: &mut impl ConnectionLike,
    key: String,
) -> Result<Option<Duration>, CacheError> {
    let ms: i64 = redis::cmd("PTTL")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(map_err)?;
    // -2: no such key; -1: no expiry.
    Ok(u64::try_from(ms).ok().map(Duration::from_millis))
}

/// `PTTL` of every full key of `keys`, pipelined: `None` for a key that
/// does not exist, [`Duration::MAX`] for one that never expires.
pub(super) async fn pttl_many(
    conn: &mut impl ConnectionLike,
    keys: impl IntoIterator<Item = String>,
) -> Result<Vec<Option<Duration>>, CacheError> {
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("PTTL").arg(key);
    }
    let ms: Vec<i64> = pipe.query_async(conn).await.map_err(map_err)?;
    Ok(ms
        .into_iter()
        .map(|ms| match ms {
            -1 => Some(Duration::MAX),
            ms => u64::try_from(ms).ok().map(Duration::from_millis),
        })
        .collect())
}

/// `PX` wants whole, positive milliseconds: round sub-millisecond TTLs up.
pub(super) fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        get_value(&mut self.conn.clone(), self.full_key(key)).await
    }

    async fn set_many(&self, entries: &[CacheEntry]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for entry in entries {
            pipe.cmd("SET")
                .arg(self.full_key(&entry.key))
                .arg(entry.value.as_ref())
                .arg("PX")
                .arg(ttl_millis(entry.ttl))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        pttl(&mut self.conn.clone(), self.full_key(key)).await
    }

    async fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(super::TTL_BATCH) {
            let full = chunk.iter().map(|k| self.full_key(k));
            out.extend(pttl_many(&mut self.conn.clone(), full).await?);
        }
        Ok(out)
    }

    /// `SCAN` until the cursor returns to 0 or `limit` keys were found;
    /// `limit == 0` returns nothing. Keys are deduplicated (SCAN may repeat a
    /// key while Redis rehashes).
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        let pattern = KeyPattern::parse(pattern).map_err(|e| CacheError::Command(e.to_string()))?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let match_arg = format!("{}{}", self.match_prefix, pattern.redis_pattern());
        let mut conn = self.conn.clone();
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&match_arg)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut conn)
                .await
                .map_err(map_err)?;
            for raw in batch {
                // Keys written by this service are UTF-8; skip anything else.
                let Ok(full) = String::from_utf8(raw) else {
                    continue;
                };
                let Some(key) = full.strip_prefix(self.prefix.as_str()) else {
                    continue;
                };
                if seen.insert(key.to_owned()) {
                    keys.push(key.to_owned());
                    if keys.len() >= limit {
                        return Ok(keys);
                    }
                }
            }
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn ping(&self) -> Result<(), CacheError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_metacharacters() {
        assert_eq!(escape_glob("app:"), "app:");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn ttl_is_whole_positive_millis() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(10)), 1);
        assert_eq!(ttl_millis(Duration::from_millis(1500)), 1500);
    }

    #[tokio::test]
    async fn unreachable_redis_says_how_to_start_it() {
        // Port 1 is privileged and never runs Redis here.
        let err = RedisCache::connect("redis://127.0.0.1:1/0", String::new())
            .await
            .err()
            .expect("connect must fail");
        let msg = err.to_string();
        assert!(matches!(err, CacheError::Unavailable(_)), "{msg}");
        assert!(
            msg.contains("redis-server --daemonize yes --port 6379"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn bad_url_is_a_config_error() {
        let err = RedisCache::connect("not a url", String::new())
            .await
            .err()
            .unwrap();
        assert!(matches!(err, CacheError::Config(_)), "{err}");
    }
}
