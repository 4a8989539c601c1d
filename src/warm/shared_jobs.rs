//! Job progress kept in Redis when instances coordinate, so any instance can
//! answer `GET /warm/jobs/{id}` and a key warmed by instance B completes the
//! job that instance A accepted.
//!
//! One hash per job, `warming:{<ns>}:job:<id>` (expires after a day):
//! `_meta` (source, strategy, created_at), `_order` (the keys in queue
//! order, JSON), `_pending` (keys still queued or in flight), `_finished_at`,
//! and one field per key holding its [`KeyOutcome`] as JSON. The set
//! `warming:{<ns>}:jobs:active` lists unfinished jobs. Outcomes are written by
//! a server-side script, so the pending count and the active set change
//! atomically with the outcome.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::jobs::{DEDUPLICATED, QUEUED};
use crate::cluster::Namespace;
use crate::config::Strategy;
use crate::protocol::{JobView, KeyOutcome};

const JOB_TTL_SECS: i64 = 86_400;

/// Records an outcome; updates `_pending`, `_finished_at` and the active set.
const FINISH: &str = r#"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if not prev then return -1 end
local was_pending = string.find(prev, '"status":"queued"', 1, true) or string.find(prev, '"status":"in_flight"', 1, true)
-- A final outcome is only ever replaced by a success (a re-delivered task
-- warmed again), never by a later failure or duplicate.
if not was_pending and not string.find(ARGV[2], '"status":"success"', 1, true) then return -3 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if was_pending then
  local left = redis.call('HINCRBY', KEYS[1], '_pending', -1)
  if left <= 0 then
    redis.call('SREM', KEYS[2], ARGV[3])
    redis.call('HSET', KEYS[1], '_finished_at', ARGV[4])
  end
  return left
end
return -2
"#;

#[derive(Serialize, Deserialize)]
struct Meta {
    source: String,
    strategy: Strategy,
    created_at: DateTime<Utc>,
}

/// Redis-backed job store of one cluster namespace.
#[derive(Clone)]
pub struct SharedJobs {
    conn: ConnectionManager,
    ns: Namespace,
    finish: redis::Script,
}

fn outcome(key: &str, status: &str) -> KeyOutcome {
    KeyOutcome {
        key: key.to_string(),
        status: status.to_string(),
        attempts: None,
        duration_ms: None,
        error: None,
    }
}

impl SharedJobs {
    pub fn new(conn: ConnectionManager, ns: Namespace) -> Self {
        SharedJobs {
            conn,
            ns,
            finish: redis::Script::new(FINISH),
        }
    }

    /// The job's Redis hash.
    pub fn job_key(&self, id: &str) -> String {
        self.ns.key(&format!("job:{id}"))
    }

    fn active_key(&self) -> String {
        self.ns.key("jobs:active")
    }

    /// Registers a job whose keys start with the given statuses.
    pub async fn create(
        &self,
        id: &str,
        source: &str,
        strategy: Strategy,
        keys: &[(String, &'static str)],
    ) -> redis::RedisResult<()> {
        let meta = Meta {
            source: source.to_string(),
            strategy,
            created_at: Utc::now(),
        };
        let order: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        let pending = keys.iter().filter(|(_, s)| *s == QUEUED).count();
        let mut fields: Vec<(String, String)> = Vec::with_capacity(keys.len() + 3);
        fields.push((
            "_meta".into(),
            serde_json::to_string(&meta).unwrap_or_default(),
        ));
        fields.push((
            "_order".into(),
            serde_json::to_string(&order).unwrap_or_default(),
        ));
        fields.push(("_pending".into(), pending.to_string()));
        if pending == 0 {
            fields.push((
                "_finished_at".into(),
                serde_json::to_string(&Utc::now()).unwrap_or_default(),
            ));
        }
        for (k, status) in keys {
            fields.push((
                k.clone(),
                serde_json::to_string(&outcome(k, status)).unwrap_or_default(),
            ));
        }
        let job = self.job_key(id);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for chunk in fields.chunks(1000) {
            pipe.hset_multiple(&job, chunk).ignore();
        }
        pipe.expire(&job, JOB_TTL_SECS).ignore();
        if pending > 0 {
            pipe.sadd(self.active_key(), id).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }

    /// The `finish` script's invocation for one outcome.
    fn finish_invocation(&self, id: &str, outcome: &KeyOutcome) -> redis::ScriptInvocation<'_> {
        let json = serde_json::to_string(outcome).unwrap_or_default();
        let now = serde_json::to_string(&Utc::now()).unwrap_or_default();
        let mut inv = self.finish.key(self.job_key(id));
        inv.key(self.active_key())
            .arg(&outcome.key)
            .arg(json)
            .arg(id)
            .arg(now);
        inv
    }

    /// Records a final (or `deduplicated`) outcome of one key.
    pub async fn finish(&self, id: &str, outcome: &KeyOutcome) -> redis::RedisResult<()> {
        let _: i64 = self
            .finish_invocation(id, outcome)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Adds [`SharedJobs::finish`] to `pipe` (the script must be loaded: a
    /// pipeline does not load scripts; `finish` does).
    pub fn add_finish(&self, pipe: &mut redis::Pipeline, id: &str, outcome: &KeyOutcome) {
        pipe.invoke_script(&self.finish_invocation(id, outcome))
            .ignore();
    }

    /// Marks keys the cluster queue refused as already queued.
    pub async fn mark_deduplicated(&self, id: &str, keys: &[String]) -> redis::RedisResult<()> {
        for k in keys {
            self.finish(id, &outcome(k, DEDUPLICATED)).await?;
        }
        Ok(())
    }

    /// Unfinished jobs in the whole cluster.
    pub async fn active(&self) -> redis::RedisResult<usize> {
        redis::cmd("SCARD")
            .arg(self.active_key())
            .query_async(&mut self.conn.clone())
            .await
    }

    /// The job as `GET /warm/jobs/{id}` shows it, from any instance.
    pub async fn view(&self, id: &str) -> redis::RedisResult<Option<JobView>> {
        let mut all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.job_key(id))
            .query_async(&mut self.conn.clone())
            .await?;
        let Some(meta) = all
            .remove("_meta")
            .and_then(|m| serde_json::from_str::<Meta>(&m).ok())
        else {
            return Ok(None);
        };
        let order: Vec<String> = all
            .remove("_order")
            .and_then(|o| serde_json::from_str(&o).ok())
            .unwrap_or_default();
        let pending: i64 = all
            .remove("_pending")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let finished_at = all
            .remove("_finished_at")
            .and_then(|f| serde_json::from_str(&f).ok());
        let keys: Vec<KeyOutcome> = order
            .iter()
            .map(|k| {
                all.get(k)
                    .and_then(|o| serde_json::from_str(o).ok())
                    .unwrap_or_else(|| outcome(k, QUEUED))
            })
            .collect();
        let count = |s: &str| keys.iter().filter(|k| k.status == s).count();
        Ok(Some(JobView {
            job_id: id.to_string(),
            source: meta.source,
            strategy: meta.strategy,
            created_at: meta.created_at,
            finished_at,
            done: pending <= 0,
            total: keys.len(),
            queued: count(QUEUED),
            in_flight: count(super::jobs::IN_FLIGHT),
            succeeded: count("success"),
            failed: count("failed") + count("cache_error"),
            not_found: count("not_found"),
            deduplicated: count(DEDUPLICATED),
            skipped_recent: count(super::jobs::SKIPPED_RECENT),
            keys,
        }))
    }
}
