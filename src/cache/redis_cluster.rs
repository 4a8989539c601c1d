//! Redis Cluster cache backend.
//!
//! Selected by `WARMING_CACHE_URL=redis+cluster://host:port,host:port,...`
//! (one seed node is enough: the client discovers the others with
//! `CLUSTER SLOTS`). It uses the redis crate's async cluster client: one
//! multiplexed connection per node, `MOVED`/`ASK` redirections and topology
//! refreshes handled by the crate.
//!
//! Values are stored exactly as [`RedisCache`](super::redis::RedisCache)
//! stores them: `SET prefix+key value PX ttl_ms`, the prefix escaped before it
//! is put in front of a `SCAN MATCH` pattern.
//!
//! - **Writes** ([`Cache::set_many`]): a cluster pipeline must stay within one
//!   hash slot (the crate routes a pipeline by its first key and refuses mixed
//!   slots), so entries are grouped by slot and each group is sent as its own
//!   pipeline, all groups concurrently. The groups bound for one node travel
//!   over the same multiplexed connection, so a batch still costs about one
//!   round trip per node.
//! - **Listing** ([`Cache::scan`]): `SCAN ... MATCH ... COUNT` on every primary
//!   (found with `CLUSTER SLOTS`), concurrently, merged and deduplicated up to
//!   `limit`; never `KEYS`.
//! - **`ping`** goes to every node and succeeds only if all answer.
//!
//! # Lease keys
//!
//! Anything that must live next to a cache key (a warming lease, for
//! instance, taken with `SET NX` and checked in the same script or
//! transaction as the key) has to hash to the key's slot, or Redis Cluster
//! refuses multi-key commands with `CROSSSLOT`. [`lease_key`] names the lease
//! of cache key `K = prefix + key`:
//!
//! | `K` | lease key | hashed part |
//! |---|---|---|
//! | no hash tag, no `}` (the common case) | `{K}:warming-lease` | `K`, as `K` itself |
//! | own hash tag `{T}` (the first `{`, the first `}` after it, non-empty) | `{T}:warming-lease:K` | `T`, as `K` |
//! | no hash tag but a `}` (`a}b`, `x{}y`), or empty | `{S}:warming-lease:K` | `S`, a tag chosen so that `slot(S) == slot(K)` |
//!
//! Redis hashes only the *first* tag of a key, which is why `{K}` cannot be
//! used when `K` contains braces: `{a{b}c}` would hash `a{b`, not `a{b}c`. The
//! three forms never produce the same name for two different cache keys.
//! Lease keys start with `{`, so with a non-empty prefix they are outside the
//! prefix and never returned by [`Cache::scan`].

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::try_join_all;
use redis::Value;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, Slot,
    SlotAddr,
};

use super::redis::{escape_glob, full_key, get_value, map_err, pttl, pttl_many, ttl_millis};
use super::{Cache, CacheEntry, CacheError};
use crate::glob::KeyPattern;

/// URL scheme that selects this backend.
pub const SCHEME: &str = "redis+cluster://";
/// Longest we wait for each node connection and for the first topology.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one attempt of a command (or pipeline) may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a command may take with its retries and redirections.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(10);
/// `COUNT` hint of each `SCAN` step: keys a node examines per round trip.
const SCAN_COUNT: usize = 1000;
/// Suffix of lease keys (see the module documentation).
const LEASE_SUFFIX: &str = ":warming-lease";

/// Redis Cluster backend; see the module documentation.
pub struct RedisClusterCache {
    conn: ClusterConnection,
    prefix: String,
    /// `prefix` with glob metacharacters escaped, for `SCAN MATCH`.
    match_prefix: String,
}

impl RedisClusterCache {
    /// Connects to the cluster named by `redis+cluster://host:port[,host:port...]`
    /// (optionally `user:password@` before the first node, and `/0`); fails
    /// with a message saying what was tried.
    pub async fn connect(url: &str, prefix: String) -> Result<Self, CacheError> {
        let nodes = node_urls(url)?;
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .overall_response_timeout(Some(OVERALL_TIMEOUT))
            .build()
            .map_err(|e| CacheError::Config(format!("invalid Redis Cluster URL {url:?}: {e}")))?;
        let seeds = seed_list(url);
        let unreachable = |why: String| {
            CacheError::Unavailable(format!(
                "cannot reach the Redis Cluster at {seeds}: {why}. Check that the nodes run \
                 with `cluster-enabled yes` and that `redis-cli -p <port> cluster info` says \
                 `cluster_state:ok`, or run with WARMING_CACHE_URL=memory:// for the embedded cache"
            ))
        };
        // Building the connection reads the slot map from the seeds; bound it
        // as a whole, since every seed may time out in turn.
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT * (nodes.len() as u32 + 1),
            client.get_async_connection(),
        )
        .await
        .map_err(|_| unreachable("no slot map within the connect timeout".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        let cache = RedisClusterCache {
            conn,
            match_prefix: escape_glob(&prefix),
            prefix,
        };
        cache.ping().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(cache)
    }

    fn full_key(&self, key: &str) -> String {
        full_key(&self.prefix, key)
    }

    /// One route per primary: the first slot of a range it serves, deduplicated
    /// by node id. The crate maps the slot to the node's current connection.
    async fn primaries(&self) -> Result<Vec<Route>, CacheError> {
        let reply = self
            .conn
            .clone()
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(map_err)?;
        primaries_from_slots(reply)
    }

    /// `SCAN` one primary until its cursor returns to 0 or `limit` keys were found.
    async fn scan_node(
        &self,
        route: Route,
        match_arg: &str,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        let mut conn = self.conn.clone();
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(match_arg)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let reply = conn
                .route_command(cmd, routing.clone())
                .await
                .map_err(map_err)?;
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply)
                .map_err(|e| CacheError::Command(format!("unexpected SCAN reply: {e}")))?;
            for raw in batch {
                // Keys written by this service are UTF-8; skip anything else.
                let Ok(full) = String::from_utf8(raw) else {
                    continue;
                };
                if let Some(key) = full.strip_prefix(self.prefix.as_str()) {
                    keys.push(key.to_owned());
                }
            }
            if next == 0 || keys.len() >= limit {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// The node URLs (`redis://[userinfo@]host:port`) of a `redis+cluster://` URL.
pub fn node_urls(url: &str) -> Result<Vec<String>, CacheError> {
    let bad = |why: &str| CacheError::Config(format!("invalid Redis Cluster URL {url:?}: {why}"));
    let rest = url
        .strip_prefix(SCHEME)
        .ok_or_else(|| bad("it must start with redis+cluster://"))?;
    if rest.contains('?') {
        return Err(bad("query parameters are not supported"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !matches!(path, "" | "/" | "/0") {
        return Err(bad("a cluster has only database 0"));
    }
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let mut nodes = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        if host.is_empty() {
            return Err(bad("empty node in the list"));
        }
        // `host`, `host:port`, `[v6]` or `[v6]:port`.
        let has_port = match host.rfind(']') {
            Some(end) => host[end..].contains(':'),
            None => host.contains(':'),
        };
        let port = if has_port { "" } else { ":6379" };
        nodes.push(match userinfo {
            Some(user) => format!("redis://{user}@{host}{port}"),
            None => format!("redis://{host}{port}"),
        });
    }
    Ok(nodes)
}

/// The node list of `url` without credentials, for messages.
fn seed_list(url: &str) -> String {
    let rest = url.strip_prefix(SCHEME).unwrap_or(url);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(i) => authority[i + 1..].to_owned(),
        None => authority.to_owned(),
    }
}

/// Parses a `CLUSTER SLOTS` reply into one route per distinct primary.
fn primaries_from_slots(reply: Value) -> Result<Vec<Route>, CacheError> {
    let bad = || CacheError::Command("unexpected CLUSTER SLOTS reply".into());
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut seen = HashSet::new();
    let mut routes = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(2))
        else {
            return Err(bad());
        };
        // [host, port, id, ...]: the id when present, else host and port.
        let identity = match primary.get(2) {
            Some(id) => format!("{id:?}"),
            None => format!("{:?}:{:?}", primary.first(), primary.get(1)),
        };
        let slot = u16::try_from(*start)
            .ok()
            .and_then(Slot::new)
            .ok_or_else(bad)?;
        if seen.insert(identity) {
            routes.push(Route::with_slot(slot, SlotAddr::Master));
        }
    }
    Ok(routes)
}

/// The hash tag Redis Cluster hashes for `key`: the text between the first
/// `{` and the first `}` after it, when that text is not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let len = key[open + 1..].find('}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

/// Name of the lease of cache key `prefix + key`: always in the same hash slot
/// as the cache key, and different for different cache keys. See the module
/// documentation for the three forms.
pub fn lease_key(prefix: &str, key: &str) -> String {
    let full = format!("{prefix}{key}");
    if let Some(tag) = hash_tag(&full) {
        return format!("{{{tag}}}{LEASE_SUFFIX}:{full}");
    }
    if !full.is_empty() && !full.contains('}') {
        // `{` cannot end the tag early: Redis stops at the first `}`, ours.
        return format!("{{{full}}}{LEASE_SUFFIX}");
    }
    let tag = slot_tag(Slot::for_key(full.as_bytes()));
    format!("{{{tag}}}{LEASE_SUFFIX}:{full}")
}

/// The first of `wl0`, `wl1`, ... that hashes to `slot`. Deterministic, so a
/// key always gets the same lease; about 16 384 CRC16s of 3 to 7 bytes on
/// average, and only for keys with a stray `}`.
fn slot_tag(slot: Slot) -> String {
    let mut tag = String::with_capacity(8);
    for n in 0u32.. {
        tag.clear();
        tag.push_str("wl");
        tag.push_str(&n.to_string());
        if Slot::for_key(tag.as_bytes()) == slot {
            return tag;
        }
    }
    unreachable!("every slot is reached by some wl<n>")
}

#[async_trait]
impl Cache for RedisClusterCache {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        get_value(&mut self.conn.clone(), self.full_key(key)).await
    }

    async fn set_many(&self, entries: &[CacheEntry]) -> Result<(), CacheError> {
        let mut groups: HashMap<Slot, redis::Pipeline> = HashMap::new();
        for entry in entries {
            let key = self.full_key(&entry.key);
            groups
                .entry(Slot::for_key(key.as_bytes()))
                .or_insert_with(redis::pipe)
                .cmd("SET")
                .arg(key)
                .arg(entry.value.as_ref())
                .arg("PX")
                .arg(ttl_millis(entry.ttl))
                .ignore();
        }
        try_join_all(groups.into_values().map(|pipe| {
            let mut conn = self.conn.clone();
            async move { pipe.query_async::<()>(&mut conn).await.map_err(map_err) }
        }))
        .await?;
        Ok(())
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        pttl(&mut self.conn.clone(), self.full_key(key)).await
    }

    /// One pipeline per hash slot (as `set_many`), all slots concurrently.
    async fn ttl_many(&self, keys: &[String]) -> Result<Vec<Option<Duration>>, CacheError> {
        let mut groups: HashMap<Slot, Vec<usize>> = HashMap::new();
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        for (i, key) in full.iter().enumerate() {
            groups
                .entry(Slot::for_key(key.as_bytes()))
                .or_default()
                .push(i);
        }
        let answers = try_join_all(groups.into_values().map(|idx| {
            let mut conn = self.conn.clone();
            let slot_keys: Vec<String> = idx.iter().map(|&i| full[i].clone()).collect();
            async move { pttl_many(&mut conn, slot_keys).await.map(|t| (idx, t)) }
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for (idx, ttls) in answers {
            for (i, t) in idx.into_iter().zip(ttls) {
                out[i] = t;
            }
        }
        Ok(out)
    }

    /// Every primary is scanned concurrently, each until its cursor returns to
    /// 0 or it found `limit` keys; the merged, deduplicated list is cut at
    /// `limit`. `limit == 0` returns nothing.
    async fn scan(&self, pattern: &str, limit: usize) -> Result<Vec<String>, CacheError> {
        let pattern = KeyPattern::parse(pattern).map_err(|e| CacheError::Command(e.to_string()))?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let match_arg = format!("{}{}", self.match_prefix, pattern.redis_pattern());
        let primaries = self.primaries().await?;
        let per_node = try_join_all(
            primaries
                .into_iter()
                .map(|route| self.scan_node(route, &match_arg, limit)),
        )
        .await?;
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        for key in per_node.into_iter().flatten() {
            if keys.len() >= limit {
                break;
            }
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    async fn ping(&self) -> Result<(), CacheError> {
        self.conn
            .clone()
            .route_command(
                redis::cmd("PING"),
                RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllNodes,
                    Some(ResponsePolicy::AllSucceeded),
                )),
            )
            .await
            .map(drop)
            .map_err(map_err)
    }

    fn backend(&self) -> &'static str {
        "redis-cluster"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(key: &str) -> Slot {
        Slot::for_key(key.as_bytes())
    }

    #[test]
    fn node_urls_accept_lists_seeds_credentials_and_db0() {
        assert_eq!(
            node_urls("redis+cluster://10.0.0.1:7000,10.0.0.2:7001, 10.0.0.3").unwrap(),
            [
                "redis://10.0.0.1:7000",
                "redis://10.0.0.2:7001",
                "redis://10.0.0.3:6379"
            ]
        );
        assert_eq!(
            node_urls("redis+cluster://127.0.0.1:7000/0").unwrap(),
            ["redis://127.0.0.1:7000"]
        );
        assert_eq!(
            node_urls("redis+cluster://u:p%40ss@a:1,[::1]:2,[::1]/").unwrap(),
            [
                "redis://u:p%40ss@a:1",
                "redis://u:p%40ss@[::1]:2",
                "redis://u:p%40ss@[::1]:6379"
            ]
        );
        for bad in [
            "redis://a:1",
            "redis+cluster://",
            "redis+cluster://a:1,,b:2",
            "redis+cluster://a:1/3",
            "redis+cluster://a:1?timeout=1",
        ] {
            assert!(
                matches!(node_urls(bad), Err(CacheError::Config(_))),
                "{bad}"
            );
        }
        assert_eq!(seed_list("redis+cluster://u:p@a:1,b:2/0"), "a:1,b:2");
    }

    #[test]
    fn hash_tag_follows_redis_rules() {
        assert_eq!(hash_tag("user:1"), None);
        assert_eq!(hash_tag("{user:1}:profile"), Some("user:1"));
        assert_eq!(hash_tag("a{b}c{d}"), Some("b"));
        assert_eq!(hash_tag("a{}b{c}"), None, "empty first tag: whole key");
        assert_eq!(hash_tag("a{b{c}d"), Some("b{c"));
        assert_eq!(hash_tag("a}b{c"), None);
    }

    #[test]
    fn lease_of_a_plain_key_wraps_the_whole_key() {
        assert_eq!(lease_key("app:", "user:1"), "{app:user:1}:warming-lease");
        for i in 0..2000 {
            let key = format!("user:{i}:profile");
            assert_eq!(slot(&lease_key("p:", &key)), slot(&format!("p:{key}")));
            assert_eq!(slot(&lease_key("", &key)), slot(&key));
        }
        // An unmatched `{` is fine: our `}` closes the tag.
        assert_eq!(slot(&lease_key("", "a{b")), slot("a{b"));
    }

    #[test]
    fn lease_of_a_key_with_its_own_tag_uses_that_tag() {
        let lease = lease_key("app:", "{user:1}:profile");
        assert_eq!(lease, "{user:1}:warming-lease:app:{user:1}:profile");
        assert_eq!(slot(&lease), slot("app:{user:1}:profile"));
        assert_eq!(slot(&lease), slot("user:1"));
        // A tag in the prefix counts too.
        assert_eq!(
            slot(&lease_key("{tenant}:", "k")),
            slot("{tenant}:k"),
            "prefix tag"
        );
    }

    #[test]
    fn lease_of_a_key_with_a_stray_brace_finds_a_same_slot_tag() {
        for full in ["a}b", "x{}y", "}", "{}", "a{}b}c"] {
            let lease = lease_key("", full);
            assert!(lease.starts_with("{wl"), "{lease}");
            assert!(
                lease.ends_with(&format!(":warming-lease:{full}")),
                "{lease}"
            );
            assert_eq!(slot(&lease), slot(full), "{full} -> {lease}");
            assert_eq!(lease, lease_key("", full), "deterministic");
        }
    }

    proptest! {
        #[test]
        fn lease_shares_the_slot_and_never_collides(
            prefix in "[a{}:]{0,4}",
            a in "[ab{}:]{1,8}",
            b in "[ab{}:]{1,8}",
        ) {
            let la = lease_key(&prefix, &a);
            prop_assert_eq!(slot(&la), slot(&format!("{prefix}{a}")));
            if a != b {
                prop_assert_ne!(la, lease_key(&prefix, &b));
            }
        }
    }

    #[test]
    fn cluster_slots_reply_gives_one_route_per_primary() {
        let node = |port: i64, id: &str| {
            Value::Array(vec![
                Value::BulkString(b"127.0.0.1".to_vec()),
                Value::Int(port),
                Value::BulkString(id.as_bytes().to_vec()),
            ])
        };
        let range = |start: i64, end: i64, primary: Value| {
            Value::Array(vec![Value::Int(start), Value::Int(end), primary])
        };
        let reply = Value::Array(vec![
            range(0, 5460, node(7000, "a")),
            range(5461, 10922, node(7001, "b")),
            range(10923, 12000, node(7002, "c")),
            range(12001, 16383, node(7000, "a")),
        ]);
        let routes = primaries_from_slots(reply).unwrap();
        assert_eq!(
            routes,
            [0, 5461, 10923].map(|s| Route::with_slot(Slot::new(s).unwrap(), SlotAddr::Master))
        );
        assert!(primaries_from_slots(Value::Nil).is_err());
    }

    #[tokio::test]
    async fn unreachable_cluster_is_unavailable() {
        // Port 1 is privileged and never runs Redis here.
        let err = RedisClusterCache::connect("redis+cluster://127.0.0.1:1", String::new())
            .await
            .err()
            .expect("connect must fail");
        assert!(matches!(err, CacheError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
