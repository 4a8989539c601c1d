//! Coordination of several `warming` instances through one Redis
//! (`WARMING_COORDINATION=redis`, issue 4): standalone primitives the engine
//! builds on. Nothing here knows about HTTP, the origin or the cache backend.
//!
//! | primitive | file | job |
//! |---|---|---|
//! | [`StreamQueue`] | `queue.rs` | shared work queue: one Redis stream per priority band, consumer group, cluster-wide dedup, reclaim of a dead instance's work, poison detection |
//! | [`Leases`], [`FiringLease`] | `lease.rs` | per-key fetch lease, cluster-wide `min_rewarm_interval`, once-per-firing schedules |
//! | [`ClusterLimiter`] | `limiter.rs` | cluster-wide origin GCRA in a server-side script, with batched slot reservation as the local fast path |
//! | [`Membership`] | `members.rs` | heartbeats and the list of live instances |
//! | [`SharedState`] | `state.rs` | versioned shared documents (tunables, emergency stop, custom schedules) + change notification |
//! | [`AccessFanout`] | `access.rs` | every instance sees every access recorded anywhere |
//!
//! # Redis keys
//!
//! Every key lives under `warming:{<ns>}:` where `<ns>` is the namespace
//! ([`Namespace`]). The braces are literal: they are a Redis Cluster *hash
//! tag*, so all coordination keys of one namespace share one slot and the
//! multi-key scripts (queue push/ack touch a stream and the pending set) stay
//! valid if the coordination Redis is ever a cluster. The per-cache-key keys
//! (lease, warmed marker) instead carry the cache key's own hash tag so they
//! sit in the same slot as the cached value (see [`lease`]).
//!
//! | key | type | written by | read by | TTL | why |
//! |---|---|---|---|---|---|
//! | `warming:{ns}:queue:high` / `:mid` / `:low` | stream, group `warmers` | `StreamQueue::push_many` (XADD), `ack` (XDEL), `hand_back`, `hand_back_all` (shutdown: every entry pending for this consumer) | `StreamQueue::next` (XREADGROUP), `reclaim` (XAUTOCLAIM), `len` | none (entries deleted on ack) | the shared work queue; one stream per priority band (67..=100, 34..=66, 0..=33) so priority holds across instances |
//! | `warming:{ns}:pending` | set of cache keys | `push_many` (SADD), `ack` (SREM) | `push_many`, `contains`, `keys_count` | none | cluster-wide dedup of queued-or-in-flight keys |
//! | `warming:{ns}:seq` | integer | `push_many` (INCR) | `push_many` | none | cluster-wide insertion order (`Task::seq`) |
//! | `{<cache key tag>}:warming:{ns}:lease` | string = owner id | `Leases::try_acquire` (SET NX PX), `renew`, `release` (compare-and-delete) | `Leases` | lease TTL | a key is fetched by at most one instance at a time |
//! | `{<cache key tag>}:warming:{ns}:warmed` | string `1` | `Leases::mark_warmed` (SET PX) | `Leases::recently_warmed[_many]` (EXISTS) | `min_rewarm_interval` | cluster-wide minimum re-warm interval |
//! | `{<cache key tag>}:warming:{ns}:notfound` | string `1` | `Leases::mark_not_found` (SET PX) | `Leases::not_found_left_many` (PTTL) | `default_ttl` | a 404 from the origin quiets the key's refreshes cluster-wide |
//! | `warming:{ns}:firing:<schedule>:<unix secs>` | string = instance id | `FiringLease::claim_firing` (SET NX PX) | nobody else | claim TTL | exactly one instance runs each schedule firing |
//! | `warming:{ns}:gcra` | string: TAT in ms (float, Redis clock) | `ClusterLimiter` script | same script | TAT − now + 1 s | cluster-wide origin rate limit (GCRA) |
//! | `warming:{ns}:instances` | hash id → InstanceInfo JSON | `Membership::heartbeat`, `leave` | `Membership::live` | none (pruned with `seen`) | who is in the cluster |
//! | `warming:{ns}:seen` | sorted set id, score = last heartbeat (ms, Redis clock) | `heartbeat`, `leave` | `live` | none (entries older than the expiry pruned on every heartbeat/read) | liveness: silent > 3 s = gone |
//! | `warming:{ns}:state` | hash name → JSON document | `SharedState::put`, `delete` | `SharedState::get` | none | tunables, emergency stop, custom schedules |
//! | `warming:{ns}:state:versions` | hash name → version | `put`, `delete` | `get`, the watcher's 1 s poll | none | change detection when a pub/sub message was missed |
//! | `warming:{ns}:changes` | pub/sub channel, message = name | `put`, `delete` (PUBLISH) | `SharedState::watch` | n/a | push notification of changes |
//! | `warming:{ns}:accesses` | stream, fields `o` (origin instance) + `d` (batch) | `AccessFanout::publish` (XADD MAXLEN ~ 1,000,000) | every instance's reader (XREAD, no group) | trimmed by length | cluster-wide access statistics |
//!
//! # Redis restarts and persistence
//!
//! Every primitive uses a [`ConnectionManager`] (reconnects by itself) and
//! treats connection errors as retryable ([`ClusterError::is_retryable`]);
//! the pub/sub watcher re-subscribes; the stream queue recreates its consumer
//! group when a read reports `NOGROUP` ([`StreamQueue::ensure_groups`]).
//!
//! Redis is the only store of the shared queue. A Redis running without
//! persistence (`--save '' --appendonly no`, as in the test setup) that
//! restarts forgets every queued and in-flight entry, the dedup set, leases
//! and the limiter state: **accepted-but-unacked work held only in Redis is
//! lost** in that case. Run the coordination Redis with AOF
//! (`appendonly yes`, `appendfsync everysec` loses at most ~1 s) if accepted
//! work must survive a Redis restart; connection blips without data loss
//! lose nothing (unacked entries are reclaimed).

pub mod access;
pub mod lease;
pub mod limiter;
pub mod members;
pub mod queue;
pub mod state;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use access::{Access, AccessFanout};
pub use lease::{FiringLease, Leases};
pub use limiter::ClusterLimiter;
pub use members::{InstanceInfo, LiveInstance, Membership};
pub use queue::{Band, Claimed, StreamQueue};
pub use state::{SharedState, Versioned};

/// Longest we wait for a connection before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one ordinary command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the coordination layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Redis refused the command or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis could not be reached at start-up.
    #[error("{0}")]
    Unavailable(String),
    /// Something in Redis does not have the shape we wrote.
    #[error("malformed coordination data: {0}")]
    Decode(String),
}

impl ClusterError {
    /// Worth retrying later (connection trouble, Redis loading or failing
    /// over); `false` for errors that will repeat (bad data, wrong type).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || matches!(
                        e.code(),
                        Some(
                            "LOADING"
                                | "TRYAGAIN"
                                | "BUSY"
                                | "MASTERDOWN"
                                | "CLUSTERDOWN"
                                | "NOGROUP"
                        )
                    )
            }
            ClusterError::Unavailable(_) => true,
            ClusterError::Decode(_) => false,
        }
    }
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// The key prefix of one coordination namespace: `warming:{<ns>}:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    ns: String,
    base: String,
}

impl Namespace {
    pub fn new(ns: &str) -> Self {
        Namespace {
            ns: ns.to_owned(),
            base: format!("warming:{{{ns}}}:"),
        }
    }

    /// The namespace name as given.
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// `warming:{<ns>}:<suffix>`.
    pub fn key(&self, suffix: &str) -> String {
        let mut k = String::with_capacity(self.base.len() + suffix.len());
        k.push_str(&self.base);
        k.push_str(suffix);
        k
    }

    /// The prefix every coordination key of this namespace starts with
    /// (lease and warmed keys excepted, they lead with the cache key's tag).
    pub fn prefix(&self) -> &str {
        &self.base
    }
}

/// A Redis client plus the shared multiplexed connection every primitive
/// clones. Blocking reads and pub/sub open their own connections from
/// `client`, so they never stall the shared one.
#[derive(Clone)]
pub struct Coordinator {
    client: redis::Client,
    conn: ConnectionManager,
    ns: Namespace,
}

impl Coordinator {
    /// Connects to `redis://host:port/db`; fails with a message saying how
    /// to start Redis.
    pub async fn connect(url: &str, ns: &str) -> Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| ClusterError::Unavailable(format!("invalid Redis URL {url:?}: {e}")))?;
        let conn = manager(&client, RESPONSE_TIMEOUT).await?;
        Ok(Coordinator {
            client,
            conn,
            ns: Namespace::new(ns),
        })
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// A clone of the shared connection.
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A new, separate connection (for blocking commands) whose commands may
    /// take up to `response_timeout`.
    pub async fn dedicated(&self, response_timeout: Duration) -> Result<ConnectionManager> {
        manager(&self.client, response_timeout).await
    }
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").field("ns", &self.ns).finish()
    }
}

async fn manager(client: &redis::Client, response_timeout: Duration) -> Result<ConnectionManager> {
    let addr = client.get_connection_info().addr().to_string();
    let unreachable = |why: String| {
        ClusterError::Unavailable(format!(
            "cannot reach the coordination Redis at {addr}: {why}. Start it with \
             `redis-server --daemonize yes --port 6379 --save '' --appendonly no`"
        ))
    };
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response_timeout));
    let mut conn = tokio::time::timeout(
        CONNECT_TIMEOUT,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
    .map_err(|e| unreachable(e.to_string()))?;
    let _: () = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(conn)
}

/// `PX` wants whole, positive milliseconds.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
