//! Leases: per cache key (at most one instance fetches a key at a time), the
//! cluster-wide minimum re-warm interval, and once-per-firing schedules.
//!
//! # Keys
//! - `{<tag>}:warming:{ns}:lease` — string holding the owner id, `SET NX PX`.
//! - `{<tag>}:warming:{ns}:warmed` — string `1` with `PX = min_rewarm_interval`.
//! - `warming:{ns}:firing:<schedule>:<unix secs>` — string holding the
//!   instance that runs that firing, `SET NX PX`.
//!
//! `<tag>` is the Redis Cluster hash tag of the *cache* key
//! (`<cache prefix><key>`), computed by the same rule Redis applies
//! ([`hash_tag`]): the content of the key's first non-empty `{…}`, else the
//! whole key. Wrapped in braces it makes the lease land in the same slot as
//! the cached value, so a script may touch both under Redis Cluster. The one
//! key this cannot co-locate is a cache key without a valid hash tag that
//! contains `}` (wrapping it would cut the tag short); its lease still works,
//! in another slot.
//!
//! A lease is released only by its owner (compare-and-delete script) and
//! expires on its own if the owner dies; the owner must pick a TTL longer
//! than a fetch (retries included) or [`Leases::renew`] it.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Coordinator, Namespace, Result, millis};

/// The hash-tag content Redis Cluster hashes for `key`: the text between
/// the first `{` and the next `}` when non-empty, else the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// `{<tag of cache_key>}` + `suffix`.
fn co_located(cache_key: &str, suffix: &str) -> String {
    let tag = hash_tag(cache_key);
    let mut k = String::with_capacity(tag.len() + suffix.len() + 2);
    k.push('{');
    k.push_str(tag);
    k.push('}');
    k.push_str(suffix);
    k
}

const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

/// Per-key fetch leases and re-warm markers.
#[derive(Clone)]
pub struct Leases {
    conn: ConnectionManager,
    cache_prefix: String,
    lease_suffix: String,
    warmed_suffix: String,
    not_found_suffix: String,
    release: Script,
    renew: Script,
}

impl Leases {
    /// `cache_prefix` is the prefix the cache backend puts before keys, so
    /// the lease shares the cached value's hash slot.
    pub fn new(coord: &Coordinator, cache_prefix: &str) -> Self {
        let ns: &Namespace = coord.namespace();
        Leases {
            conn: coord.conn(),
            cache_prefix: cache_prefix.to_owned(),
            lease_suffix: format!(":{}lease", ns.prefix()),
            warmed_suffix: format!(":{}warmed", ns.prefix()),
            not_found_suffix: format!(":{}notfound", ns.prefix()),
            release: Script::new(RELEASE_LUA),
            renew: Script::new(RENEW_LUA),
        }
    }

    fn cache_key(&self, key: &str) -> String {
        format!("{}{key}", self.cache_prefix)
    }

    /// `{<tag>}:warming:{ns}:lease`.
    pub fn lease_key(&self, key: &str) -> String {
        co_located(&self.cache_key(key), &self.lease_suffix)
    }

    /// `{<tag>}:warming:{ns}:warmed`.
    pub fn warmed_key(&self, key: &str) -> String {
        co_located(&self.cache_key(key), &self.warmed_suffix)
    }

    /// `{<tag>}:warming:{ns}:notfound`.
    pub fn not_found_key(&self, key: &str) -> String {
        co_located(&self.cache_key(key), &self.not_found_suffix)
    }

    /// Takes the lease on `key` for `ttl` unless someone holds it.
    pub async fn try_acquire(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let ok: Option<String> = redis::cmd("SET")
            .arg(self.lease_key(key))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        Ok(ok.is_some())
    }

    /// Extends the lease if `owner` still holds it; `false` when it does not
    /// (expired, or taken by someone else since).
    pub async fn renew(&self, key: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .renew
            .key(self.lease_key(key))
            .arg(owner)
            .arg(millis(ttl))
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Drops the lease if `owner` holds it; `false` otherwise (nothing changes).
    pub async fn release(&self, key: &str, owner: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .release
            .key(self.lease_key(key))
            .arg(owner)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Adds [`Leases::release`] to `pipe` (its script must be loaded: a
    /// pipeline does not load scripts; `release` does).
    pub fn add_release(&self, pipe: &mut redis::Pipeline, key: &str, owner: &str) {
        pipe.invoke_script(self.release.key(self.lease_key(key)).arg(owner))
            .ignore();
    }

    /// Adds [`Leases::mark_warmed`] to `pipe`.
    pub fn add_mark_warmed(&self, pipe: &mut redis::Pipeline, key: &str, interval: Duration) {
        add_mark(pipe, self.warmed_key(key), interval);
    }

    /// Adds [`Leases::mark_not_found`] to `pipe`.
    pub fn add_mark_not_found(&self, pipe: &mut redis::Pipeline, key: &str, quiet: Duration) {
        add_mark(pipe, self.not_found_key(key), quiet);
    }

    /// Records that the origin answered 404 for `key`: for `quiet`, every
    /// instance's refresh treats the key as cached ([`Leases::not_found_left_many`]).
    pub async fn mark_not_found(&self, key: &str, quiet: Duration) -> Result<()> {
        if quiet.is_zero() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        self.add_mark_not_found(&mut pipe, key, quiet);
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// For each key, how long its 404 mark has left (`None`: no mark).
    pub async fn not_found_left_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("PTTL").arg(self.not_found_key(key));
        }
        let mut conn = self.conn.clone();
        let left: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(left
            .into_iter()
            .map(|ms| u64::try_from(ms).ok().map(Duration::from_millis))
            .collect())
    }

    /// A connection to the coordination Redis, for a pipeline of the above.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The current holder of the lease, if any.
    pub async fn holder(&self, key: &str) -> Result<Option<String>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.lease_key(key))
            .query_async(&mut conn)
            .await?)
    }

    /// Records that `key` was warmed: `recently_warmed` answers true for
    /// `interval`, on every instance.
    pub async fn mark_warmed(&self, key: &str, interval: Duration) -> Result<()> {
        self.mark_warmed_many(std::slice::from_ref(&key.to_string()), interval)
            .await
    }

    /// Batch `mark_warmed` in one pipeline.
    pub async fn mark_warmed_many(&self, keys: &[String], interval: Duration) -> Result<()> {
        if keys.is_empty() || interval.is_zero() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            self.add_mark_warmed(&mut pipe, key, interval);
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Whether any instance warmed `key` within its `min_rewarm_interval`.
    pub async fn recently_warmed(&self, key: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("EXISTS")
            .arg(self.warmed_key(key))
            .query_async(&mut conn)
            .await?)
    }

    /// `recently_warmed` for many keys, one pipeline.
    pub async fn recently_warmed_many(&self, keys: &[String]) -> Result<Vec<bool>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXISTS").arg(self.warmed_key(key));
        }
        let mut conn = self.conn.clone();
        Ok(pipe.query_async(&mut conn).await?)
    }
}

/// Adds `SET marker 1 PX for` to `pipe` (nothing for a zero duration).
fn add_mark(pipe: &mut redis::Pipeline, marker: String, for_: Duration) {
    if !for_.is_zero() {
        pipe.cmd("SET")
            .arg(marker)
            .arg(1)
            .arg("PX")
            .arg(millis(for_))
            .ignore();
    }
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("cache_prefix", &self.cache_prefix)
            .field("lease_suffix", &self.lease_suffix)
            .finish()
    }
}

/// Claims of schedule firings: exactly one instance runs each firing.
#[derive(Clone)]
pub struct FiringLease {
    conn: ConnectionManager,
    ns: Namespace,
    instance_id: String,
}

impl FiringLease {
    pub fn new(coord: &Coordinator, instance_id: &str) -> Self {
        FiringLease {
            conn: coord.conn(),
            ns: coord.namespace().clone(),
            instance_id: instance_id.to_owned(),
        }
    }

    /// `warming:{ns}:firing:<schedule>:<unix secs>`.
    pub fn firing_key(&self, schedule: &str, firing_unix_secs: i64) -> String {
        self.ns
            .key(&format!("firing:{schedule}:{firing_unix_secs}"))
    }

    /// `true` for exactly one caller per (schedule, firing time) while the
    /// claim lives: pick `ttl` longer than the clock skew between instances
    /// plus the gap at which a late instance could still try that firing
    /// (a few minutes is plenty; the key then expires by itself).
    pub async fn claim_firing(
        &self,
        schedule: &str,
        firing_unix_secs: i64,
        ttl: Duration,
    ) -> Result<bool> {
        let mut conn = self.conn.clone();
        let ok: Option<String> = redis::cmd("SET")
            .arg(self.firing_key(schedule, firing_unix_secs))
            .arg(&self.instance_id)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut conn)
            .await?;
        Ok(ok.is_some())
    }
}

impl std::fmt::Debug for FiringLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiringLease")
            .field("ns", &self.ns)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}
