//! The engine's side of coordination (`WARMING_COORDINATION=redis`): joins
//! the primitives of [`crate::cluster`] to the engine.
//!
//! - Intake pushes tasks to the shared stream queue (cluster-wide dedup) and
//!   records jobs in Redis ([`SharedJobs`]), so any instance can report them.
//! - A **pump** claims tasks from the shared queue into the local priority
//!   queue, up to 64 in one round trip, never holding more than about twice
//!   `concurrent_warmers`, so work spreads over instances and priority holds
//!   across them.
//! - Claims held here are **touched** regularly; a dead instance's claims go
//!   idle and another instance **reclaims** them after `visibility_timeout`.
//! - Workers take a per-key lease before fetching, mark the key warmed
//!   cluster-wide, record the outcome and ack the claim.
//! - Tunables, emergency stop and custom schedules are shared documents;
//!   a change on one instance reaches the others through the watcher.
//! - Accesses are buffered and fanned out, so every tracker sees them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::shared_jobs::SharedJobs;
use crate::cluster::{
    Access, AccessFanout, Claimed, ClusterLimiter, Coordinator, FiringLease, InstanceInfo, Leases,
    Membership, SharedState, StreamQueue,
};
use crate::config::{ServiceConfig, Tunables};
use crate::origin::limiter::RateGate;
use crate::protocol::KeyOutcome;

/// What a finished key leaves behind for every instance
/// ([`ClusterLink::finish_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Warmed: not warmed again within this `min_rewarm_interval`.
    Warmed(Duration),
    /// The origin answered 404: refreshes treat the key as cached this long.
    NotFound(Duration),
}

/// Shared document names.
pub const DOC_TUNABLES: &str = "tunables";
pub const DOC_EMERGENCY: &str = "emergency";
pub const DOC_SCHEDULES: &str = "schedules";

/// Most tasks the pump claims from the shared queue in one round trip.
const CLAIM_BATCH: usize = 64;

/// The shared emergency-stop state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStop {
    pub stopped: bool,
    pub reason: Option<String>,
    pub manual: bool,
    pub by: String,
}

/// Everything an instance holds to take part in a cluster.
pub struct ClusterLink {
    pub id: String,
    pub queue: StreamQueue,
    pub leases: Leases,
    pub firing: FiringLease,
    pub limiter: Arc<ClusterLimiter>,
    pub members: Membership,
    pub state: SharedState,
    pub fanout: AccessFanout,
    pub jobs: SharedJobs,
    pub visibility: Duration,
    /// `warming:{<ns>}:`, in every coordination key (leases included).
    namespace_marker: String,
    /// Tasks claimed from the shared queue and not yet acked, by key.
    claims: Mutex<HashMap<String, Claimed>>,
    /// Signalled when a worker takes a claim (the pump may refill).
    released: tokio::sync::Notify,
    /// The loops that claim from the shared queue (pump, reclaim): shutdown
    /// waits for them before handing everything back.
    claimers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Accesses recorded here, waiting to be fanned out.
    accesses: Mutex<Vec<Access>>,
    /// The last emergency state this instance applied from or wrote to Redis.
    pub last_stop: Mutex<Option<SharedStop>>,
}

impl ClusterLink {
    pub async fn connect(
        service: &ServiceConfig,
        tunables: &Tunables,
    ) -> anyhow::Result<ClusterLink> {
        let url = service
            .coordination_redis_url()
            .ok_or_else(|| anyhow::anyhow!("coordination=redis needs WARMING_COORDINATION_URL"))?;
        let coord = Coordinator::connect(&url, &service.cluster_namespace).await?;
        let id = service.effective_instance_id();
        let queue = StreamQueue::new(&coord).await?;
        Ok(ClusterLink {
            leases: Leases::new(&coord, &service.cache_prefix),
            firing: FiringLease::new(&coord, &id),
            limiter: Arc::new(ClusterLimiter::new(&coord, tunables.max_origin_rps)),
            members: Membership::new(&coord),
            state: SharedState::new(&coord),
            fanout: AccessFanout::new(&coord, &id),
            jobs: SharedJobs::new(coord.conn(), coord.namespace().clone()),
            visibility: service.visibility_timeout,
            namespace_marker: coord.namespace().prefix().to_owned(),
            claims: Mutex::new(HashMap::new()),
            released: tokio::sync::Notify::new(),
            claimers: Mutex::new(Vec::new()),
            accesses: Mutex::new(Vec::new()),
            last_stop: Mutex::new(None),
            queue,
            id,
        })
    }

    pub fn info(&self, addr: &str, workers: usize) -> InstanceInfo {
        InstanceInfo {
            id: self.id.clone(),
            addr: addr.to_string(),
            workers,
            started_at: chrono::Utc::now().timestamp_millis().max(0) as u64,
        }
    }

    /// Whether `key` (as a cache scan returns it) is one of the coordination's
    /// own Redis keys: the queue, leases, shared state, when they live in
    /// the cache's database without a cache prefix to tell them apart.
    pub fn owns_key(&self, key: &str) -> bool {
        key.contains(&self.namespace_marker)
    }

    /// Remembers a claim whose task went into the local queue.
    pub fn hold(&self, claimed: Claimed) {
        self.claims.lock().insert(claimed.task.key.clone(), claimed);
    }

    /// The claim of `key`, removed (the worker is about to finish it).
    pub fn release_claim(&self, key: &str) -> Option<Claimed> {
        let claim = self.claims.lock().remove(key);
        if claim.is_some() {
            self.released.notify_one();
        }
        claim
    }

    pub fn held(&self) -> usize {
        self.claims.lock().len()
    }

    pub fn held_claims(&self) -> Vec<Claimed> {
        self.claims.lock().values().cloned().collect()
    }

    /// Shutdown's hand-back: once the loops that claim work have stopped
    /// (they stop with the workers; waited for until `deadline`), gives
    /// every entry this instance still has claimed back to the shared
    /// queue, so another instance takes it at once. This includes claims
    /// the local queue never saw: a blocking read cancelled after Redis
    /// answered it, or a batch claimed while shutdown began. Returns how
    /// many entries went back.
    pub async fn hand_back_everything(&self, deadline: tokio::time::Instant) -> usize {
        let loops = std::mem::take(&mut *self.claimers.lock());
        for l in loops {
            if tokio::time::timeout_at(deadline, l).await.is_err() {
                tracing::warn!("a queue-claiming loop still running at the shutdown deadline");
            }
        }
        self.claims.lock().clear();
        match self.queue.hand_back_all(&self.id).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand claimed keys back; other instances take them after the visibility timeout");
                0
            }
        }
    }

    /// Acks a finished task (retrying briefly: losing an ack means the task
    /// would be warmed again after the visibility timeout, never lost).
    pub async fn ack(&self, claimed: &Claimed) {
        for attempt in 0..15u64 {
            match self.queue.ack(claimed).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(key = %claimed.task.key, attempt, error = %e, "ack failed; retrying");
                    tokio::time::sleep(Duration::from_millis((250 * (attempt + 1)).min(1000)))
                        .await;
                }
            }
        }
    }

    /// Records how a fetched key ended and acks its claim, in one round
    /// trip: the cluster-wide mark (`mark`: "warmed" or "not found", for
    /// how long), the job outcome, the release of the fetch lease, and the
    /// ack of `claim`, which runs only if the job then shows the outcome
    /// (at least once: a task whose outcome is not recorded is delivered
    /// again). If that pipeline fails (Redis away, or its script cache
    /// emptied by a restart: a pipeline does not load scripts), the same
    /// steps run one by one, which load their scripts and retry the
    /// outcome, and the ack follows only if the outcome was recorded.
    pub async fn finish_key(
        &self,
        job_id: &str,
        outcome: &KeyOutcome,
        mark: Option<Mark>,
        claim: Option<&Claimed>,
    ) {
        let key = outcome.key.as_str();
        let mut pipe = redis::pipe();
        match mark {
            Some(Mark::Warmed(interval)) => self.leases.add_mark_warmed(&mut pipe, key, interval),
            Some(Mark::NotFound(quiet)) => self.leases.add_mark_not_found(&mut pipe, key, quiet),
            None => {}
        }
        self.jobs.add_finish(&mut pipe, job_id, outcome);
        self.leases.add_release(&mut pipe, key, &self.id);
        if let Some(claim) = claim {
            self.queue
                .add_ack_if_recorded(&mut pipe, claim, &self.jobs.job_key(job_id));
        }
        match pipe
            .query_async::<Vec<i64>>(&mut self.leases.connection())
            .await
        {
            // Acked (1), or no longer pending (0: handed back, or reclaimed
            // elsewhere); -1 cannot follow a recorded outcome.
            Ok(acks) if acks.iter().all(|&n| n >= 0) => return,
            Ok(_) => tracing::debug!(key, "outcome not seen by the ack; step by step"),
            Err(e) => {
                tracing::debug!(key, error = %e, "finishing in one round trip failed; step by step")
            }
        }
        let marked = match mark {
            Some(Mark::Warmed(interval)) => self.leases.mark_warmed(key, interval).await,
            Some(Mark::NotFound(quiet)) => self.leases.mark_not_found(key, quiet).await,
            None => Ok(()),
        };
        if let Err(e) = marked {
            tracing::warn!(key, error = %e, "cannot mark the key's outcome cluster-wide");
        }
        let mut recorded = false;
        for attempt in 0..20u32 {
            match self.jobs.finish(job_id, outcome).await {
                Ok(()) => {
                    recorded = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(key, attempt, error = %e, "cannot record the outcome; retrying");
                    tokio::time::sleep(Duration::from_millis(
                        250 * u64::from((attempt + 1).min(4)),
                    ))
                    .await;
                }
            }
        }
        let _ = self.leases.release(key, &self.id).await;
        // Redis may have lost its scripts: reload the pipelined ack's.
        let _ = self.queue.load_pipelined_scripts().await;
        if let (Some(claim), true) = (claim, recorded) {
            self.ack(claim).await;
        }
    }

    /// Takes the fetch lease of `key`. A lease left by this instance (a
    /// release lost in a Redis outage) or by an instance that is no longer
    /// alive is taken over; `Ok(false)` means a live instance holds it.
    pub async fn take_lease(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<bool, crate::cluster::ClusterError> {
        if self.leases.try_acquire(key, &self.id, ttl).await? {
            return Ok(true);
        }
        let Some(holder) = self.leases.holder(key).await? else {
            return self.leases.try_acquire(key, &self.id, ttl).await;
        };
        let alive = holder != self.id
            && self
                .members
                .live()
                .await?
                .iter()
                .any(|l| l.info.id == holder);
        if alive {
            return Ok(false);
        }
        self.leases.release(key, &holder).await?;
        self.leases.try_acquire(key, &self.id, ttl).await
    }

    pub fn buffer_access(&self, key: &str, at_unix_secs: u64) {
        self.buffer(key, at_unix_secs, None);
    }

    /// A warm of `key` completed here, its value living `ttl`: shared with
    /// the others like an access.
    pub fn buffer_warmed(&self, key: &str, at_unix_secs: u64, ttl: Duration) {
        let ttl = ttl.as_secs().clamp(1, u64::from(u32::MAX)) as u32;
        self.buffer(key, at_unix_secs, Some(ttl));
    }

    fn buffer(&self, key: &str, at_unix_secs: u64, warmed: Option<u32>) {
        self.accesses.lock().push(Access {
            key: key.to_string(),
            at_ms: at_unix_secs.saturating_mul(1000),
            warmed,
        });
    }

    pub fn take_accesses(&self) -> Vec<Access> {
        std::mem::take(&mut *self.accesses.lock())
    }
}

/// The cluster-wide limiter as the origin's rate gate. It fails closed: while
/// Redis cannot be reached no request goes out; the caller waits and retries.
pub struct ClusterGate(pub Arc<ClusterLimiter>);

#[async_trait::async_trait]
impl RateGate for ClusterGate {
    async fn acquire(&self) -> bool {
        let mut waited = false;
        loop {
            match self.0.acquire().await {
                Ok(w) => return w || waited,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster rate limiter unreachable; holding origin requests");
                    waited = true;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn set_rate(&self, rps: u32) {
        self.0.set_rate(rps);
    }
}

impl SharedStop {
    fn same_state(&self, other: &SharedStop) -> bool {
        self.stopped == other.stopped && self.manual == other.manual && self.reason == other.reason
    }
}

use super::Engine;
use crate::config::TunablesUpdate;
use crate::schedule::ScheduleSpec;

impl Engine {
    fn link(&self) -> Option<&Arc<ClusterLink>> {
        self.cluster.as_ref()
    }

    /// At start: take the cluster's tunables, emergency state and custom
    /// schedules, if another instance published them.
    pub(crate) async fn adopt_shared_state(self: &Arc<Self>) {
        for name in [DOC_TUNABLES, DOC_EMERGENCY, DOC_SCHEDULES] {
            self.apply_shared(name).await;
        }
    }

    /// Applies the current version of the shared document `name` here,
    /// without publishing it again.
    async fn apply_shared(self: &Arc<Self>, name: &str) {
        let Some(c) = self.link() else { return };
        let doc = match c.state.get(name).await {
            Ok(Some(v)) => v.value,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(document = name, error = %e, "cannot read shared state");
                return;
            }
        };
        match name {
            DOC_TUNABLES => {
                let _serial = self.config_lock.lock().await;
                let current = self.tunables.load_full();
                let next = serde_json::from_value::<TunablesUpdate>(doc)
                    .map_err(|e| {
                        vec![crate::config::FieldError {
                            field: "tunables".into(),
                            message: e.to_string(),
                        }]
                    })
                    .and_then(|u| u.apply_to(&current, Duration::from_nanos(1)));
                match next {
                    Ok(next) if next != *current => {
                        if let Err(e) = self.swap_tunables(&current, next) {
                            tracing::warn!(?e, "shared configuration refused");
                        } else {
                            tracing::info!("configuration changed by another instance");
                            super::worker::ensure_workers(self);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(?e, "shared configuration refused"),
                }
            }
            DOC_EMERGENCY => {
                let Ok(stop) = serde_json::from_value::<SharedStop>(doc) else {
                    return;
                };
                *c.last_stop.lock() = Some(stop.clone());
                let reason = stop.reason.clone().unwrap_or_default();
                match (stop.stopped, stop.manual) {
                    (true, true) => {
                        self.emergency.stop_manual(&reason);
                    }
                    (true, false) => self.emergency.stop_shared(&reason),
                    (false, _) => {
                        if self.emergency.resume() {
                            self.queue.wake_all();
                        }
                    }
                }
                self.telemetry
                    .emergency_active(stop.stopped, "emergency state changed by another instance");
            }
            DOC_SCHEDULES => match serde_json::from_value::<Vec<ScheduleSpec>>(doc) {
                Ok(specs) if specs != self.scheduler.custom_specs() => {
                    if let Err(e) = self.scheduler.replace_custom(specs) {
                        tracing::warn!(error = %e, "cannot apply shared schedules");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "invalid shared schedules"),
            },
            _ => {}
        }
    }

    /// Publishes this instance's emergency state unless it is what the
    /// cluster already has.
    pub(crate) async fn share_emergency(&self) {
        let Some(c) = self.link() else { return };
        let current = self.emergency.current();
        let stop = SharedStop {
            stopped: current.is_some(),
            reason: current.as_ref().map(|s| s.reason.clone()),
            manual: current.as_ref().is_some_and(|s| s.manual),
            by: c.id.clone(),
        };
        let already = c
            .last_stop
            .lock()
            .as_ref()
            .is_some_and(|s| s.same_state(&stop))
            || (c.last_stop.lock().is_none() && !stop.stopped);
        if already {
            return;
        }
        *c.last_stop.lock() = Some(stop.clone());
        if let Err(e) = c.state.put_json(DOC_EMERGENCY, &stop).await {
            tracing::warn!(error = %e, "emergency state not shared with the cluster");
        }
    }

    pub(crate) async fn share_schedules(&self) {
        let Some(c) = self.link() else { return };
        if let Err(e) = c
            .state
            .put_json(DOC_SCHEDULES, &self.scheduler.custom_specs())
            .await
        {
            tracing::warn!(error = %e, "schedules not shared with the cluster");
        }
    }

    /// A task claimed from the shared queue enters the local queue.
    async fn take_in(&self, c: &ClusterLink, claimed: crate::cluster::Claimed) {
        if claimed.poisoned {
            let outcome = crate::protocol::KeyOutcome::finished(
                claimed.task.key.clone(),
                crate::events::WarmStatus::Failed,
                0,
                0,
                Some(format!(
                    "abandoned after {} deliveries without finishing",
                    claimed.deliveries
                )),
            );
            self.telemetry.warm_finished(
                &claimed.task.key,
                claimed.task.strategy,
                crate::events::WarmStatus::Failed,
                Duration::ZERO,
                0,
            );
            let _ = c.jobs.finish(&claimed.task.job_id, &outcome).await;
            return;
        }
        let task = claimed.task.clone();
        if self.queue.contains(&task.key) {
            // Already here (reclaimed from ourselves: the same stream entry):
            // keep the fresh claim; the local worker acks it when done.
            c.hold(claimed);
            return;
        }
        c.hold(claimed);
        // Closed for shutdown: the held claim is handed back with the rest
        // (or, if the hand-back already ran, redelivered after the
        // visibility timeout).
        let _ = self.queue.push_many(vec![task]);
        self.telemetry.queue_length(self.queue.len());
    }

    /// Starts the loops that keep this instance part of the cluster.
    pub(crate) fn spawn_cluster_loops(self: &Arc<Self>) {
        let Some(c) = self.link().cloned() else {
            return;
        };
        let stop = self.background_stop.clone();

        // Pump: shared queue -> local queue, at most ~2x the workers held.
        let (e, link, s) = (self.clone(), c.clone(), self.workers_stop.clone());
        let pump = self.background.spawn(async move {
            loop {
                if s.is_cancelled() {
                    break;
                }
                // Refill once half the claims held have gone to workers, so
                // each round trip claims a batch, and the workers never run
                // dry while the pump waits.
                let cap = 2 * e.tunables.load().concurrent_warmers;
                if e.emergency.is_stopped() || link.held() > cap / 2 {
                    tokio::select! {
                        _ = link.released.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = s.cancelled() => break,
                    }
                    continue;
                }
                // One round trip claims a batch, up to the cap: one claim per
                // round trip would bound an instance to one key per Redis RTT.
                // The batch claim itself is not cancelled half-way (its
                // entries would stay claimed here until another instance
                // reclaims them); only the wait for new work is.
                let want = cap.saturating_sub(link.held()).clamp(1, CLAIM_BATCH);
                let mut next = link.queue.next_batch(&link.id, want, Duration::ZERO).await;
                if next.as_ref().is_ok_and(Vec::is_empty) {
                    next = tokio::select! {
                        r = link.queue.next_batch(&link.id, want, Duration::from_millis(500)) => r,
                        _ = s.cancelled() => break,
                    };
                }
                match next {
                    Ok(batch) => {
                        for claimed in batch {
                            e.take_in(&link, claimed).await;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the shared queue; retrying");
                        if err.to_string().contains("NOGROUP") {
                            let _ = link.queue.ensure_groups().await;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });

        // Keep our claims alive, take over those of dead instances.
        let (e, link, s) = (self.clone(), c.clone(), self.workers_stop.clone());
        let reclaim = self.background.spawn(async move {
            let every = (link.visibility / 3).max(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = s.cancelled() => break,
                }
                for claim in link.held_claims() {
                    if let Err(err) = link.queue.touch(&link.id, &claim).await {
                        tracing::debug!(error = %err, "touch failed");
                    }
                }
                if e.emergency.is_stopped() {
                    continue;
                }
                match link.queue.reclaim(&link.id, link.visibility).await {
                    Ok(claims) => {
                        if !claims.is_empty() {
                            tracing::info!(
                                keys = claims.len(),
                                "reclaimed keys of an instance that stopped answering"
                            );
                        }
                        for claim in claims {
                            e.take_in(&link, claim).await;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "reclaim failed"),
                }
            }
        });
        c.claimers.lock().extend([pump, reclaim]);

        // Accesses: publish ours, record everyone else's.
        let (link, s) = (c.clone(), stop.clone());
        self.background.spawn(async move {
            loop {
                let done = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => false,
                    _ = s.cancelled() => true,
                };
                let batch = link.take_accesses();
                if !batch.is_empty() {
                    if let Err(err) = link.fanout.publish(&batch).await {
                        tracing::warn!(error = %err, accesses = batch.len(), "accesses not shared with the cluster");
                    }
                }
                if done {
                    break;
                }
            }
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<crate::cluster::Access>>(64);
        let reader = c.fanout.spawn_reader(tx, stop.clone());
        self.background.spawn(async move {
            let _ = reader.await;
        });
        let e = self.clone();
        self.background.spawn(async move {
            while let Some(batch) = rx.recv().await {
                let (warms, reads): (Vec<_>, Vec<_>) =
                    batch.iter().partition(|a| a.warmed.is_some());
                let accesses: Vec<(&str, u64)> = reads
                    .iter()
                    .map(|a| (a.key.as_str(), a.at_ms / 1000))
                    .collect();
                e.note_accesses(&accesses, false);
                let default_ttl = e.tunables.load().default_ttl;
                for w in warms {
                    let ttl = match w.warmed {
                        Some(s) if s > 0 => Duration::from_secs(u64::from(s)),
                        _ => default_ttl,
                    };
                    e.note_warmed(&w.key, w.at_ms / 1000, ttl, false);
                }
            }
        });

        // Shared documents changed elsewhere.
        let (e, link, s) = (self.clone(), c.clone(), stop.clone());
        self.background.spawn(async move {
            use futures::StreamExt;
            loop {
                let mut changes = match link.state.watch().await {
                    Ok(w) => Box::pin(w),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot watch shared state; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = s.cancelled() => break,
                        }
                    }
                };
                loop {
                    tokio::select! {
                        name = changes.next() => match name {
                            Some(name) => e.apply_shared(&name).await,
                            None => break,
                        },
                        _ = s.cancelled() => return,
                    }
                }
            }
        });

        // Our own emergency changes (automatic trips and recoveries) go out.
        let (e, s) = (self.clone(), stop.clone());
        self.background.spawn(async move {
            let mut state = e.emergency.subscribe();
            loop {
                tokio::select! {
                    r = state.changed() => if r.is_err() { break },
                    _ = s.cancelled() => break,
                }
                e.share_emergency().await;
            }
        });

        // Heartbeat (leaves the cluster when stopped).
        let info = c.info(
            &self.service.listen,
            self.tunables.load().concurrent_warmers,
        );
        let beat = c.members.spawn_heartbeat(info, stop);
        self.background.spawn(async move {
            let _ = beat.await;
        });
    }
}

/// Engine-side helpers of the worker in cluster mode.
impl ClusterLink {
    /// How long a fetch lease lasts: every attempt, its backoff, and slack.
    pub fn lease_ttl(t: &Tunables) -> Duration {
        let attempts = t.retry_attempts + 1;
        t.origin_timeout * attempts
            + t.backoff_base * (1u32 << t.retry_attempts.min(10)) * 2
            + Duration::from_secs(10)
    }
}
