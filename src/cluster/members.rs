//! Membership: which instances are alive, for `GET /warm/status`.
//!
//! # Keys
//! - `warming:{ns}:instances` — hash: instance id → [`InstanceInfo`] JSON.
//! - `warming:{ns}:seen` — sorted set: instance id scored by its last
//!   heartbeat, in milliseconds on the **Redis** clock (scripts read
//!   `TIME`, so instance clocks do not matter).
//!
//! Every heartbeat and every read prune the instances silent for longer
//! than the expiry (default 3 s) from both keys, so an instance that stops
//! heartbeating disappears from [`Membership::live`] within the expiry and
//! leaves nothing behind. Heartbeat every second ([`Membership::spawn_heartbeat`]).

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::{as_int, as_string};
use super::{ClusterError, Coordinator, Result, millis};

/// How long an instance stays listed after its last heartbeat.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(3);
/// How often [`Membership::spawn_heartbeat`] beats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// What an instance says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub id: String,
    /// Address of its HTTP API (`host:port`).
    pub addr: String,
    pub workers: usize,
    /// Unix milliseconds.
    pub started_at: u64,
}

/// A live instance and when it last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveInstance {
    #[serde(flatten)]
    pub info: InstanceInfo,
    /// Unix milliseconds, Redis clock.
    pub last_heartbeat: u64,
}

/// KEYS: instances, seen. ARGV: expiry_ms, [id, json]. Returns now (ms).
const HEARTBEAT_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], string.format('%d', now), ARGV[2])
end
local cutoff = string.format('(%d', now - tonumber(ARGV[1]))
local dead = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)
for _, id in ipairs(dead) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
if ARGV[2] then return {} end
local live = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local info = redis.call('HGET', KEYS[1], live[i])
  if info then out[#out + 1] = {live[i + 1], info} end
end
return out
";

/// Heartbeats and the list of live instances.
#[derive(Clone)]
pub struct Membership {
    conn: ConnectionManager,
    instances: String,
    seen: String,
    expiry: Duration,
    script: Script,
}

impl Membership {
    pub fn new(coord: &Coordinator) -> Self {
        let ns = coord.namespace();
        Membership {
            conn: coord.conn(),
            instances: ns.key("instances"),
            seen: ns.key("seen"),
            expiry: DEFAULT_EXPIRY,
            script: Script::new(HEARTBEAT_LUA),
        }
    }

    /// Silence after which an instance is gone (default 3 s).
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// Says `info.id` is alive now (and updates its details).
    pub async fn heartbeat(&self, info: &InstanceInfo) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|e| ClusterError::Decode(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _: Value = self
            .script
            .key(&self.instances)
            .key(&self.seen)
            .arg(millis(self.expiry))
            .arg(&info.id)
            .arg(json)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes `id` at once (graceful shutdown).
    pub async fn leave(&self, id: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .atomic()
            .cmd("HDEL")
            .arg(&self.instances)
            .arg(id)
            .ignore()
            .cmd("ZREM")
            .arg(&self.seen)
            .arg(id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Instances that heartbeat within the expiry, by id.
    pub async fn live(&self) -> Result<Vec<LiveInstance>> {
        let mut conn = self.conn.clone();
        let rows: Vec<Vec<Value>> = self
            .script
            .key(&self.instances)
            .key(&self.seen)
            .arg(millis(self.expiry))
            .invoke_async(&mut conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let [score, json] = <[Value; 2]>::try_from(row)
                .map_err(|v| ClusterError::Decode(format!("membership row {v:?}")))?;
            let info: InstanceInfo = serde_json::from_str(&as_string(&json)?)
                .map_err(|e| ClusterError::Decode(format!("instance info: {e}")))?;
            let last = as_string(&score)?
                .parse::<f64>()
                .map(|f| f as u64)
                .or_else(|_| as_int(&score).map(|i| i as u64))
                .map_err(|_| ClusterError::Decode(format!("heartbeat score {score:?}")))?;
            out.push(LiveInstance {
                info,
                last_heartbeat: last,
            });
        }
        out.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(out)
    }

    /// Heartbeats every second until `stop` fires, then leaves. Errors are
    /// logged and the next beat retries (the connection reconnects).
    pub fn spawn_heartbeat(&self, info: InstanceInfo, stop: CancellationToken) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = me.heartbeat(&info).await {
                            tracing::warn!(error = %e, "cluster heartbeat failed");
                        }
                    }
                    () = stop.cancelled() => break,
                }
            }
            if let Err(e) = me.leave(&info.id).await {
                tracing::warn!(error = %e, "cluster leave failed");
            }
        })
    }
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("instances", &self.instances)
            .field("expiry", &self.expiry)
            .finish()
    }
}
