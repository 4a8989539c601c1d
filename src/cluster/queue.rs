//! The shared work queue: Redis streams read through a consumer group.
//!
//! # Keys
//! - `warming:{ns}:queue:high`, `:mid`, `:low` — one stream per priority
//!   band (67..=100, 34..=66, 0..=33), each with the consumer group
//!   `warmers`. Entry fields: `key`, `priority`, `job_id`, `strategy`, `seq`.
//! - `warming:{ns}:pending` — set of the cache keys queued or in flight
//!   anywhere in the cluster (dedup).
//! - `warming:{ns}:seq` — counter giving each accepted task its `seq`.
//!
//! # Guarantees
//! - **Dedup**: [`StreamQueue::push_many`] runs one script per chunk that, per
//!   task, checks the pending set, XADDs, then SADDs. A script runs
//!   atomically, so no crash can leave a key in the set without an entry (a
//!   wedged key) or an entry without its key. The key leaves the set only
//!   when the entry is acknowledged ([`StreamQueue::ack`], also one script).
//! - **Priority**: [`StreamQueue::next`] claims from the high band, then mid,
//!   then low (one script, one round trip); only when all three are empty it
//!   blocks on a combined read of the three streams, on a connection of its
//!   own (a `BLOCK` on the shared multiplexed connection would stall every
//!   other command behind it). Strict priority therefore holds band-wise
//!   across instances; within a band entries come out FIFO. Priorities
//!   inside one band are not reordered.
//! - **Nothing accepted is lost while Redis keeps its data**: a delivered
//!   entry stays in the group's pending list until acked. An instance that
//!   dies leaves its entries there; [`StreamQueue::reclaim`] (XAUTOCLAIM)
//!   hands entries idle longer than the visibility timeout to a live
//!   consumer. A worker busy longer than that timeout should call
//!   [`StreamQueue::touch`] (resets the idle time) — the per-key lease
//!   ([`super::Leases`]) still prevents a double fetch if it does not.
//! - **Poison**: every reclaim raises an entry's delivery count; past
//!   `max_deliveries` the reclaim script acks and deletes it and returns it
//!   with [`Claimed::poisoned`] set, so the engine reports it as failed
//!   instead of retrying it forever.
//! - After a Redis restart without persistence the streams and the group are
//!   gone: reads that meet `NOGROUP` recreate the group (`0` as the start id
//!   so entries pushed before the group existed are delivered), and
//!   [`StreamQueue::ensure_groups`] can be called explicitly.
//!
//! A `next` future dropped while blocked may have claimed an entry whose
//! reply is then discarded: the entry is not lost, it stays pending under
//! the consumer and comes back through `reclaim` after the timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::{ClusterError, Coordinator, Namespace, Result};
use crate::config::Strategy;
use crate::warm::queue::Task;

/// The consumer group every instance reads through.
pub const GROUP: &str = "warmers";
/// Default number of deliveries after which an entry is poison.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Tasks per push script: bounds how long one script holds Redis.
const PUSH_CHUNK: usize = 500;
/// Entries one `reclaim` takes per band.
const RECLAIM_COUNT: usize = 100;
/// Entries one `hand_back_all` script call moves.
const HAND_BACK_COUNT: usize = 100;
/// Longest single blocking read; longer waits are capped to this.
const MAX_BLOCK: Duration = Duration::from_secs(10);

/// A priority band; each has its own stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Band {
    /// Priority 67..=100.
    High = 0,
    /// Priority 34..=66.
    Mid = 1,
    /// Priority 0..=33.
    Low = 2,
}

impl Band {
    /// Highest priority first.
    pub const ALL: [Band; 3] = [Band::High, Band::Mid, Band::Low];

    pub fn of(priority: u8) -> Band {
        match priority {
            67.. => Band::High,
            34..=66 => Band::Mid,
            _ => Band::Low,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Band::High => "high",
            Band::Mid => "mid",
            Band::Low => "low",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A task taken from the shared queue by one consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub task: Task,
    pub band: Band,
    /// The stream entry id.
    pub id: String,
    /// Times the entry was delivered (1 on the first read).
    pub deliveries: u32,
    /// Delivered more than `max_deliveries` times: already acked and removed
    /// by [`StreamQueue::reclaim`]; report it as failed, do not warm it.
    pub poisoned: bool,
}

/// Queue lengths, cluster-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Entries not yet delivered to any consumer.
    pub waiting: usize,
    /// Entries delivered and not acked (in flight, or held by a dead instance).
    pub in_flight: usize,
}

/// Handle on the shared queue; cheap to share behind an `Arc`.
pub struct StreamQueue {
    coord: Coordinator,
    conn: ConnectionManager,
    streams: [String; 3],
    pending: String,
    seq: String,
    max_deliveries: u32,
    /// Connections for blocking reads, reused between calls.
    blocking: Mutex<Vec<ConnectionManager>>,
    /// Extra entries a combined blocking read claimed, per consumer.
    stash: Mutex<HashMap<String, VecDeque<Claimed>>>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    push: Script,
    claim: Script,
    ack: Script,
    ack_if_recorded: Script,
    hand_back: Script,
    hand_back_all: Script,
    reclaim: Script,
    stats: Script,
}

/// KEYS: pending, seq, high, mid, low. ARGV: per task band(1..3), key,
/// priority, job_id, strategy. Returns per task its seq, or 0 when deduplicated.
const PUSH_LUA: &str = r"
local out = {}
local i = 1
while i <= #ARGV do
  local key = ARGV[i + 1]
  if redis.call('SISMEMBER', KEYS[1], key) == 1 then
    out[#out + 1] = 0
  else
    local seq = redis.call('INCR', KEYS[2])
    redis.call('XADD', KEYS[2 + tonumber(ARGV[i])], '*', 'key', key, 'priority', ARGV[i + 2],
      'job_id', ARGV[i + 3], 'strategy', ARGV[i + 4], 'seq', seq)
    redis.call('SADD', KEYS[1], key)
    out[#out + 1] = seq
  end
  i = i + 5
end
return out
";

/// KEYS: streams to try, best first. ARGV: group, consumer, band index of
/// KEYS[1] (0-based), most entries. Returns {band, {{id, fields}, ...}} for
/// the first stream with new entries, or false.
const CLAIM_LUA: &str = r"
for i = 1, #KEYS do
  local r = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4], 'STREAMS', KEYS[i], '>')
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'NOGROUP', 1, true) then
      redis.pcall('XGROUP', 'CREATE', KEYS[i], ARGV[1], '0', 'MKSTREAM')
      r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4], 'STREAMS', KEYS[i], '>')
    else
      return redis.error_reply(r.err)
    end
  end
  if r and r[1] and r[1][2][1] then
    return {tonumber(ARGV[3]) + i - 1, r[1][2]}
  end
end
return false
";

/// The ack of `ACK_LUA` and `ACK_IF_RECORDED_LUA` (a macro so that both
/// scripts are literals).
macro_rules! ack_lua {
    () => {
        r"
local n = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if type(n) ~= 'number' then return 0 end
if n == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('SREM', KEYS[2], ARGV[3])
end
return n
"
    };
}

/// KEYS: stream, pending. ARGV: group, id, key. 1 when this call acked it.
const ACK_LUA: &str = ack_lua!();

/// KEYS: stream, pending, the job's hash. ARGV: group, id, key. `ACK_LUA`,
/// but only once the job no longer shows the key queued or in flight (its
/// outcome is recorded, or the job is gone): an ack sent in the same
/// pipeline as the outcome never runs without it. Returns -1 when the
/// outcome is not recorded, else as `ACK_LUA`.
const ACK_IF_RECORDED_LUA: &str = concat!(
    r#"
local v = redis.call('HGET', KEYS[3], ARGV[3])
if v and (string.find(v, '"status":"queued"', 1, true) or string.find(v, '"status":"in_flight"', 1, true)) then
  return -1
end"#,
    ack_lua!()
);

/// KEYS: stream. ARGV: group, id, then the fields. Re-adds at the tail.
const HAND_BACK_LUA: &str = r"
local n = redis.pcall('XACK', KEYS[1], ARGV[1], ARGV[2])
if n ~= 1 then return false end
redis.call('XDEL', KEYS[1], ARGV[2])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
";

/// KEYS: stream. ARGV: group, consumer, count. Hands back (as
/// `HAND_BACK_LUA` does) up to `count` entries pending for `consumer`,
/// reading their fields from the stream; an entry already deleted is only
/// acked. Returns how many were looked at.
const HAND_BACK_ALL_LUA: &str = r"
local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])
if type(p) ~= 'table' or p.err then return 0 end
for _, e in ipairs(p) do
  local id = e[1]
  local r = redis.call('XRANGE', KEYS[1], id, id)
  redis.call('XACK', KEYS[1], ARGV[1], id)
  if r[1] then
    redis.call('XDEL', KEYS[1], id)
    redis.call('XADD', KEYS[1], '*', unpack(r[1][2]))
  end
end
return #p
";

/// KEYS: stream, pending. ARGV: group, consumer, min_idle_ms, count,
/// max_deliveries. Returns {{id, deliveries, poisoned, fields}, ...}.
const RECLAIM_LUA: &str = r"
local r = redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
if type(r) == 'table' and r.err then
  if string.find(r.err, 'NOGROUP', 1, true) then
    redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
    return {}
  end
  return redis.error_reply(r.err)
end
local out = {}
for _, e in ipairs(r[2]) do
  if type(e) == 'table' and e[2] then
    local id, fields = e[1], e[2]
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    local n = 1
    if p[1] then n = p[1][4] end
    local poisoned = 0
    if n > tonumber(ARGV[5]) then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      for j = 1, #fields, 2 do
        if fields[j] == 'key' then redis.call('SREM', KEYS[2], fields[j + 1]) end
      end
      poisoned = 1
    end
    out[#out + 1] = {id, n, poisoned, fields}
  end
end
return out
";

/// KEYS: streams. ARGV: group. Returns {total length, total pending}.
const STATS_LUA: &str = r"
local len, pel = 0, 0
for i = 1, #KEYS do
  len = len + redis.call('XLEN', KEYS[i])
  local p = redis.pcall('XPENDING', KEYS[i], ARGV[1])
  if type(p) == 'table' and not p.err and p[1] then pel = pel + p[1] end
end
return {len, pel}
";

impl StreamQueue {
    /// A handle on the namespace's queue; creates the consumer group.
    pub async fn new(coord: &Coordinator) -> Result<Self> {
        let ns: &Namespace = coord.namespace();
        let q = StreamQueue {
            coord: coord.clone(),
            conn: coord.conn(),
            streams: Band::ALL.map(|b| ns.key(&format!("queue:{}", b.as_str()))),
            pending: ns.key("pending"),
            seq: ns.key("seq"),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            blocking: Mutex::new(Vec::new()),
            stash: Mutex::new(HashMap::new()),
            scripts: Arc::new(Scripts {
                push: Script::new(PUSH_LUA),
                claim: Script::new(CLAIM_LUA),
                ack: Script::new(ACK_LUA),
                ack_if_recorded: Script::new(ACK_IF_RECORDED_LUA),
                hand_back: Script::new(HAND_BACK_LUA),
                hand_back_all: Script::new(HAND_BACK_ALL_LUA),
                reclaim: Script::new(RECLAIM_LUA),
                stats: Script::new(STATS_LUA),
            }),
        };
        q.ensure_groups().await?;
        q.load_pipelined_scripts().await?;
        Ok(q)
    }

    /// Deliveries after which a reclaimed entry is poison (default 5, at least 1).
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// The stream of a band (`warming:{ns}:queue:<band>`).
    pub fn stream_key(&self, band: Band) -> &str {
        &self.streams[band.index()]
    }

    /// Creates the streams and the `warmers` group where missing (start id
    /// `0`, so entries already in a stream are delivered). Idempotent; call
    /// it after Redis lost its data (reads also do it on `NOGROUP`).
    pub async fn ensure_groups(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        for stream in &self.streams {
            let r: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await;
            match r {
                Ok(()) => {}
                Err(e) if e.code() == Some("BUSYGROUP") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Queues each task unless its key is queued or in flight anywhere in
    /// the cluster. Returns, per task, whether it was queued. `Task::seq` is
    /// assigned by Redis (ignored on input).
    pub async fn push_many(&self, tasks: Vec<Task>) -> Result<Vec<bool>> {
        let mut out = Vec::with_capacity(tasks.len());
        let mut conn = self.conn.clone();
        for chunk in tasks.chunks(PUSH_CHUNK) {
            let mut inv = self.scripts.push.prepare_invoke();
            inv.key(&self.pending).key(&self.seq).key(&self.streams[..]);
            for t in chunk {
                inv.arg(Band::of(t.priority).index() + 1)
                    .arg(&t.key)
                    .arg(t.priority)
                    .arg(&*t.job_id)
                    .arg(t.strategy.as_str());
            }
            let seqs: Vec<u64> = inv.invoke_async(&mut conn).await?;
            if seqs.len() != chunk.len() {
                return Err(ClusterError::Decode(format!(
                    "push script answered {} results for {} tasks",
                    seqs.len(),
                    chunk.len()
                )));
            }
            out.extend(seqs.into_iter().map(|s| s != 0));
        }
        Ok(out)
    }

    /// Claims the best task for `consumer` (use the instance id): high band
    /// first, then mid, then low. When all are empty, waits up to `block`
    /// (capped at 10 s; zero = do not wait) for a task to arrive in any band.
    pub async fn next(&self, consumer: &str, block: Duration) -> Result<Option<Claimed>> {
        let stashed_band = self
            .stash
            .lock()
            .get(consumer)
            .and_then(|q| q.front().map(|c| c.band));
        let upto = stashed_band.map_or(3, Band::index);
        if upto > 0
            && let Some(c) = self.claim_nonblocking(consumer, upto, 1).await?.pop()
        {
            return Ok(Some(c));
        }
        if stashed_band.is_some() {
            return Ok(self.pop_stash(consumer));
        }
        if block.is_zero() {
            return Ok(None);
        }
        self.claim_blocking(consumer, block.min(MAX_BLOCK)).await
    }

    /// Claims up to `max` tasks for `consumer` in one round trip: entries
    /// of the highest band that has any (so a batch never takes low-priority
    /// work while higher-priority work waits), plus any that an earlier
    /// blocking read left stashed. When there are none, waits up to `block`
    /// (capped at 10 s; zero = do not wait) for one to arrive. The caller
    /// orders them (the local priority queue does).
    pub async fn next_batch(
        &self,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<Claimed>> {
        let mut out: Vec<Claimed> = self
            .stash
            .lock()
            .remove(consumer)
            .into_iter()
            .flatten()
            .collect();
        if out.len() < max {
            out.extend(self.claim_nonblocking(consumer, 3, max - out.len()).await?);
        }
        if out.is_empty() && !block.is_zero() {
            out.extend(self.claim_blocking(consumer, block.min(MAX_BLOCK)).await?);
            out.extend(self.stash.lock().remove(consumer).into_iter().flatten());
        }
        Ok(out)
    }

    fn pop_stash(&self, consumer: &str) -> Option<Claimed> {
        let mut stash = self.stash.lock();
        let q = stash.get_mut(consumer)?;
        let c = q.pop_front();
        if q.is_empty() {
            stash.remove(consumer);
        }
        c
    }

    /// One script trying the first `upto` bands in order: up to `count`
    /// entries of the first band that has any.
    async fn claim_nonblocking(
        &self,
        consumer: &str,
        upto: usize,
        count: usize,
    ) -> Result<Vec<Claimed>> {
        let mut conn = self.conn.clone();
        let reply: Value = self
            .scripts
            .claim
            .key(&self.streams[..upto])
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(count.max(1))
            .invoke_async(&mut conn)
            .await?;
        let Value::Array(items) = reply else {
            return Ok(Vec::new());
        };
        let [band, entries] = <[Value; 2]>::try_from(items)
            .map_err(|v| ClusterError::Decode(format!("claim reply {v:?}")))?;
        let band = Band::ALL[as_int(&band)? as usize % 3];
        let Value::Array(entries) = entries else {
            return Err(ClusterError::Decode(format!("claim entries {entries:?}")));
        };
        entries
            .into_iter()
            .map(|entry| {
                let Value::Array(parts) = entry else {
                    return Err(ClusterError::Decode(format!("claim entry {entry:?}")));
                };
                let [id, fields] = <[Value; 2]>::try_from(parts)
                    .map_err(|v| ClusterError::Decode(format!("claim entry {v:?}")))?;
                claimed(band, as_string(&id)?, &fields, 1, false)
            })
            .collect()
    }

    async fn claim_blocking(&self, consumer: &str, block: Duration) -> Result<Option<Claimed>> {
        let pooled = self.blocking.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => {
                self.coord
                    .dedicated(MAX_BLOCK + Duration::from_secs(5))
                    .await?
            }
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(super::millis(block))
            .arg("STREAMS")
            .arg(&self.streams[..])
            .arg(">")
            .arg(">")
            .arg(">");
        let reply: redis::RedisResult<Value> = cmd.query_async(&mut conn).await;
        // Back in the pool only once the reply is in: a dropped future leaves
        // the connection behind its BLOCK, so it is dropped with it.
        self.blocking.lock().push(conn);
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") => {
                self.ensure_groups().await?;
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let mut got = parse_read_reply(&self.streams, reply)?;
        if got.is_empty() {
            return Ok(None);
        }
        got.sort_by_key(|c| c.band);
        let first = got.remove(0);
        if !got.is_empty() {
            let mut stash = self.stash.lock();
            let q = stash.entry(consumer.to_owned()).or_default();
            q.extend(got);
            q.make_contiguous().sort_by_key(|c| c.band);
        }
        Ok(Some(first))
    }

    /// Adds to `pipe` an [`StreamQueue::ack`] that runs only if `job_hash`
    /// (the job's Redis hash, in this namespace) no longer shows the task's
    /// key queued or in flight, so it can follow the command recording the
    /// outcome in one round trip. Its reply: 1 acked, 0 no longer pending,
    /// -1 outcome not recorded (not acked). The script must be loaded: a
    /// pipeline does not load scripts; [`StreamQueue::ack`] and the other
    /// calls of this queue do (they share the connection's script cache).
    pub fn add_ack_if_recorded(
        &self,
        pipe: &mut redis::Pipeline,
        claimed: &Claimed,
        job_hash: &str,
    ) {
        let mut inv = self
            .scripts
            .ack_if_recorded
            .key(self.stream_key(claimed.band));
        inv.key(&self.pending)
            .key(job_hash)
            .arg(GROUP)
            .arg(&claimed.id)
            .arg(&claimed.task.key);
        pipe.invoke_script(&inv);
    }

    /// Loads the script [`StreamQueue::add_ack_if_recorded`] pipelines
    /// (at start, and again after Redis lost its scripts).
    pub async fn load_pipelined_scripts(&self) -> Result<()> {
        self.scripts
            .ack_if_recorded
            .load_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Done with the task (warmed or failed for good): acks and deletes the
    /// entry and frees its key for dedup, atomically. `false` when the entry
    /// was no longer pending (already acked, e.g. after a reclaim elsewhere).
    pub async fn ack(&self, claimed: &Claimed) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .scripts
            .ack
            .key(self.stream_key(claimed.band))
            .key(&self.pending)
            .arg(GROUP)
            .arg(&claimed.id)
            .arg(&claimed.task.key)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Gives a claimed task back without warming it (shutdown, emergency
    /// stop): it goes to the tail of its band, and its key stays deduplicated.
    /// `false` when the entry was no longer pending.
    pub async fn hand_back(&self, claimed: &Claimed) -> Result<bool> {
        let mut conn = self.conn.clone();
        let t = &claimed.task;
        let id: Option<String> = self
            .scripts
            .hand_back
            .key(self.stream_key(claimed.band))
            .arg(GROUP)
            .arg(&claimed.id)
            .arg("key")
            .arg(&t.key)
            .arg("priority")
            .arg(t.priority)
            .arg("job_id")
            .arg(&*t.job_id)
            .arg("strategy")
            .arg(t.strategy.as_str())
            .arg("seq")
            .arg(t.seq)
            .invoke_async(&mut conn)
            .await?;
        Ok(id.is_some())
    }

    /// Resets the entry's idle time so `reclaim` elsewhere does not take it
    /// while `consumer` still works on it (XCLAIM … JUSTID; the delivery
    /// count is unchanged).
    pub async fn touch(&self, consumer: &str, claimed: &Claimed) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("XCLAIM")
            .arg(self.stream_key(claimed.band))
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(&claimed.id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Takes over, for `consumer`, entries delivered more than `min_idle`
    /// ago and never acked (their instance died or hung), up to 100 per
    /// band per call, high band first. Entries past `max_deliveries` come
    /// back with `poisoned` set and are already removed from the queue.
    pub async fn reclaim(&self, consumer: &str, min_idle: Duration) -> Result<Vec<Claimed>> {
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for band in Band::ALL {
            let reply: Vec<Value> = self
                .scripts
                .reclaim
                .key(self.stream_key(band))
                .key(&self.pending)
                .arg(GROUP)
                .arg(consumer)
                .arg(super::millis(min_idle))
                .arg(RECLAIM_COUNT)
                .arg(self.max_deliveries)
                .invoke_async(&mut conn)
                .await?;
            for item in reply {
                let Value::Array(parts) = item else {
                    return Err(ClusterError::Decode(format!("reclaim item {item:?}")));
                };
                let [id, n, poisoned, fields] = <[Value; 4]>::try_from(parts)
                    .map_err(|v| ClusterError::Decode(format!("reclaim item {v:?}")))?;
                let n = u32::try_from(as_int(&n)?).unwrap_or(u32::MAX);
                out.push(claimed(
                    band,
                    as_string(&id)?,
                    &fields,
                    n,
                    as_int(&poisoned)? == 1,
                )?);
            }
        }
        Ok(out)
    }

    /// Gives back everything `consumer` still has claimed, whether or not
    /// the caller knows of it: entries held in memory, stashed by a blocking
    /// read, or claimed by a read whose reply was lost (a cancelled call).
    /// Each goes to the tail of its band at once, instead of waiting for the
    /// visibility timeout. For shutdown, once this consumer claims no more.
    /// Returns how many entries were handed back or, if already deleted, acked.
    pub async fn hand_back_all(&self, consumer: &str) -> Result<usize> {
        self.stash.lock().remove(consumer);
        let mut conn = self.conn.clone();
        let mut total = 0;
        for band in Band::ALL {
            loop {
                let n: usize = self
                    .scripts
                    .hand_back_all
                    .key(self.stream_key(band))
                    .arg(GROUP)
                    .arg(consumer)
                    .arg(HAND_BACK_COUNT)
                    .invoke_async(&mut conn)
                    .await?;
                total += n;
                if n < HAND_BACK_COUNT {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// Waiting and in-flight counts, cluster-wide (one script).
    pub async fn stats(&self) -> Result<QueueStats> {
        let mut conn = self.conn.clone();
        let (len, pel): (usize, usize) = self
            .scripts
            .stats
            .key(&self.streams[..])
            .arg(GROUP)
            .invoke_async(&mut conn)
            .await?;
        Ok(QueueStats {
            waiting: len.saturating_sub(pel),
            in_flight: pel,
        })
    }

    /// Entries waiting to be delivered, cluster-wide (acked entries are
    /// deleted, so this is the streams' length minus the delivered ones).
    pub async fn len(&self) -> Result<usize> {
        Ok(self.stats().await?.waiting)
    }

    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Entries delivered and not yet acked, cluster-wide.
    pub async fn pending_count(&self) -> Result<usize> {
        Ok(self.stats().await?.in_flight)
    }

    /// Whether `key` is queued or in flight anywhere.
    pub async fn contains(&self, key: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SISMEMBER")
            .arg(&self.pending)
            .arg(key)
            .query_async(&mut conn)
            .await?)
    }

    /// Keys queued or in flight, cluster-wide.
    pub async fn keys_count(&self) -> Result<usize> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("SCARD")
            .arg(&self.pending)
            .query_async(&mut conn)
            .await?)
    }
}

impl std::fmt::Debug for StreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamQueue")
            .field("streams", &self.streams)
            .field("max_deliveries", &self.max_deliveries)
            .finish()
    }
}

/// Parses an XREADGROUP reply: `[[stream, [[id, [f, v, ...]], ...]], ...]`.
fn parse_read_reply(streams: &[String; 3], reply: Value) -> Result<Vec<Claimed>> {
    let mut out = Vec::new();
    let per_stream = match reply {
        Value::Nil => return Ok(out),
        Value::Array(a) => a.into_iter().map(|v| match v {
            Value::Array(kv) => Ok(kv),
            other => Err(ClusterError::Decode(format!("xreadgroup item {other:?}"))),
        }),
        Value::Map(m) => {
            return parse_read_pairs(streams, m.into_iter().map(|(k, v)| vec![k, v]).collect());
        }
        other => return Err(ClusterError::Decode(format!("xreadgroup reply {other:?}"))),
    };
    let pairs = per_stream.collect::<Result<Vec<_>>>()?;
    out.extend(parse_read_pairs(streams, pairs)?);
    Ok(out)
}

fn parse_read_pairs(streams: &[String; 3], pairs: Vec<Vec<Value>>) -> Result<Vec<Claimed>> {
    let mut out = Vec::new();
    for pair in pairs {
        let [name, entries] = <[Value; 2]>::try_from(pair)
            .map_err(|v| ClusterError::Decode(format!("xreadgroup stream {v:?}")))?;
        let name = as_string(&name)?;
        let band = streams
            .iter()
            .position(|s| *s == name)
            .map(|i| Band::ALL[i])
            .ok_or_else(|| ClusterError::Decode(format!("unknown stream {name}")))?;
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let [id, fields] = <[Value; 2]>::try_from(parts)
                .map_err(|v| ClusterError::Decode(format!("stream entry {v:?}")))?;
            out.push(claimed(band, as_string(&id)?, &fields, 1, false)?);
        }
    }
    Ok(out)
}

fn claimed(
    band: Band,
    id: String,
    fields: &Value,
    deliveries: u32,
    poisoned: bool,
) -> Result<Claimed> {
    Ok(Claimed {
        task: task_from_fields(fields)?,
        band,
        id,
        deliveries,
        poisoned,
    })
}

/// A task from a flat `[field, value, ...]` array.
fn task_from_fields(fields: &Value) -> Result<Task> {
    let Value::Array(flat) = fields else {
        return Err(ClusterError::Decode(format!("entry fields {fields:?}")));
    };
    let (mut key, mut priority, mut job_id, mut strategy, mut seq) = (None, 0u8, None, None, 0u64);
    for kv in flat.chunks(2) {
        let [f, v] = kv else { break };
        let v = as_string(v)?;
        match as_string(f)?.as_str() {
            "key" => key = Some(v),
            "priority" => priority = v.parse().unwrap_or(0),
            "job_id" => job_id = Some(v),
            "strategy" => strategy = Strategy::ALL.into_iter().find(|s| s.as_str() == v),
            "seq" => seq = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    let key = key.ok_or_else(|| ClusterError::Decode("queue entry without a key".into()))?;
    Ok(Task {
        key,
        priority,
        job_id: job_id.unwrap_or_default().into(),
        strategy: strategy.unwrap_or(Strategy::Priority),
        seq,
    })
}

pub(crate) fn as_string(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b.clone()).map_err(|e| ClusterError::Decode(e.to_string()))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(ClusterError::Decode(format!(
            "expected a string, got {other:?}"
        ))),
    }
}

pub(crate) fn as_int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        other => as_string(other)?
            .parse()
            .map_err(|_| ClusterError::Decode(format!("expected an integer, got {other:?}"))),
    }
}
