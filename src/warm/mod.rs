//! The warming engine: takes warm requests (keys, patterns, predictions,
//! schedule firings), validates them, orders them with a strategy, skips keys
//! warmed recently, deduplicates against the queue, and hands them to the
//! worker pool. It owns the runtime configuration, the emergency stop and its
//! probe loop, and the orderly shutdown that persists unfinished work.
//!
//! Submodules: [`queue`] (priority queue + dedup), [`worker`] (the pool),
//! [`jobs`] (per-job progress), [`emergency`] (latency watch), [`strategy`]
//! (selective / breadth / priority), [`cost`] (observed origin latency).

pub mod cluster_link;
pub mod cost;
pub mod emergency;
pub mod jobs;
pub mod queue;
pub mod refresh;
pub mod shared_jobs;
pub mod strategy;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessTracker;
use crate::access::log::AccessLog;
use crate::cache::batch::BatchWriter;
use crate::cache::{self, Cache};
use crate::config::{
    FieldError, ServiceConfig, Settings, SharedTunables, Strategy, Tunables, TunablesUpdate,
};
use crate::events::EventBus;
use crate::events::nats::NatsPublisher;
use crate::glob::KeyPattern;
use crate::keys::validate_key;
use crate::origin::limiter::{OriginLimiter, RateGate};
use crate::origin::retry::{FetchObserver, GuardedOrigin};
use crate::origin::{self, OriginError};
use crate::predict::{self, Predictor, Write};
use crate::protocol::{
    AccessRequest, AccessTime, ConfigResponse, DEFAULT_PATTERN_LIMIT, DEFAULT_PRIORITY, JobView,
    ServiceInfo, StatusResponse, TriggerPredictiveRequest, WarmKeyRequest, WarmPatternRequest,
    WarmPatternResponse, WarmResponse,
};
use crate::readthrough::{ReadError, ReadSource, ReadThrough};
use crate::schedule::{ScheduleAction, ScheduleRunner, ScheduleSpec, Scheduler};
use crate::telemetry::Telemetry;
use cluster_link::{ClusterGate, ClusterLink, DOC_TUNABLES};
use cost::CostModel;
use emergency::Emergency;
use jobs::JobRegistry;
use queue::{Task, WarmQueue};
use strategy::{KeyFacts, plan};
use worker::WorkerBoard;

/// Why the engine refused a request. Mapped to HTTP once, in `api::error`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The request is well-formed JSON but breaks a rule; nothing was changed.
    #[error("{message}")]
    Invalid {
        code: &'static str,
        message: String,
        fields: Vec<FieldError>,
    },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    #[error("{0}")]
    Internal(String),
    #[error("coordination Redis unavailable: {0}")]
    Coordination(String),
}

impl From<crate::cluster::ClusterError> for EngineError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        EngineError::Coordination(e.to_string())
    }
}

impl From<redis::RedisError> for EngineError {
    fn from(e: redis::RedisError) -> Self {
        EngineError::Coordination(e.to_string())
    }
}

impl EngineError {
    fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }
}

/// Feeds every origin attempt to metrics, the cost model and the emergency stop.
pub(crate) struct OriginWatch {
    tunables: SharedTunables,
    telemetry: Arc<Telemetry>,
    emergency: Arc<Emergency>,
    cost: Arc<CostModel>,
}

impl FetchObserver for OriginWatch {
    fn rate_limited(&self) {
        self.telemetry.rate_limited();
    }

    fn attempt(&self, key: &str, latency: Duration, result: Result<(), &OriginError>) {
        self.telemetry.origin_request();
        if result.is_ok() || matches!(result, Err(OriginError::NotFound)) {
            self.cost.observe(key, latency);
        }
        let t = self.tunables.load();
        if let Some(info) =
            self.emergency
                .observe(key, latency, t.emergency_window, t.emergency_threshold)
        {
            self.telemetry.emergency_stopped(&info.reason);
        }
    }
}

/// Hotness from the access history, cost from observed latency.
struct Facts<'a> {
    tracker: &'a AccessTracker,
    cost: &'a CostModel,
    now: u64,
}

impl KeyFacts for Facts<'_> {
    fn hotness(&self, key: &str) -> f64 {
        self.tracker
            .stats(key, self.now)
            .map(|s| s.accesses_per_hour)
            .unwrap_or(0.0)
    }
    fn cost_ms(&self, key: &str) -> f64 {
        self.cost.cost_ms(key)
    }
}

/// The running service, minus its HTTP layer.
pub struct Engine {
    pub(crate) tunables: SharedTunables,
    service: ServiceConfig,
    pub(crate) queue: WarmQueue,
    pub(crate) jobs: JobRegistry,
    pub(crate) board: WorkerBoard,
    pub(crate) emergency: Arc<Emergency>,
    cache: Arc<dyn Cache>,
    pub(crate) writer: BatchWriter,
    pub(crate) origin: GuardedOrigin,
    limiter: Arc<dyn RateGate>,
    tracker: Arc<AccessTracker>,
    cost: Arc<CostModel>,
    /// Shared with the read-through's write hook.
    predictor: Arc<ArcSwap<Arc<dyn Predictor>>>,
    pub(crate) events: EventBus,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) watch: Arc<OriginWatch>,
    /// Keys warmed successfully, with when (for `min_rewarm_interval`).
    pub(crate) recent: moka::sync::Cache<String, Instant>,
    /// Keys the origin answered 404 for, with when: a `refresh` firing
    /// treats such a key as holding a value of `default_ttl` from then, so a
    /// predicted key the origin does not have is not asked for every minute.
    pub(crate) not_found: moka::sync::Cache<String, Instant>,
    scheduler: Arc<Scheduler>,
    readthrough: ReadThrough,
    /// Woken when the configuration changes (workers re-check their count).
    pub(crate) reconfigured: Notify,
    /// Stops the workers (first step of shutdown).
    pub(crate) workers_stop: CancellationToken,
    pub(crate) worker_tasks: TaskTracker,
    /// Stops every other background loop (last step of shutdown).
    background_stop: CancellationToken,
    background: TaskTracker,
    accepting: std::sync::atomic::AtomicBool,
    config_lock: tokio::sync::Mutex<()>,
    /// Set when instances coordinate through Redis.
    pub(crate) cluster: Option<Arc<ClusterLink>>,
    /// Set with `WARMING_ACCESS_LOG`.
    access_log: Option<Arc<AccessLog>>,
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const PENDING_FILE: &str = "pending.json";
const SCHEDULES_FILE: &str = "schedules.json";

/// A bounded map of keys to when something happened to them (a warm, a
/// 404), for checks within an interval. LRU, not moka's default TinyLFU:
/// its admission filter would refuse a key new to a full map (read less
/// often than the entries it displaces), and the check would then miss
/// exactly the keys just warmed.
fn recent_map(capacity: u64) -> moka::sync::Cache<String, Instant> {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .time_to_live(Duration::from_secs(86_400))
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .build()
}

impl Engine {
    /// Opens the backends, restores unfinished work and starts every loop.
    pub async fn start(settings: Settings) -> anyhow::Result<Arc<Engine>> {
        let Settings { tunables, service } = settings;
        let cache = cache::open(&service).await?;
        let origin_impl = origin::open(
            service.origin_url.as_deref(),
            service.origin_http,
            service.origin_ca_file.as_deref(),
        )?;
        let background_stop = CancellationToken::new();
        let mut events = EventBus::new(4096);
        if let Some(url) = &service.nats_url {
            let publisher = NatsPublisher::connect(
                url,
                &service.nats_stream,
                &service.nats_subject,
                background_stop.clone(),
            )
            .await?;
            events = events.with_nats(publisher);
        }
        let scheduler = Arc::new(Scheduler::new(
            &service.timezone,
            service.builtin_schedules,
            service.state_dir.join(SCHEDULES_FILE),
            service.max_key_len,
            service.max_keys_per_request,
        )?);
        let predictor = predict::build(
            &tunables.predictor,
            &service.predictor_settings(tunables.default_ttl),
        )
        .ok_or_else(|| anyhow::anyhow!("unknown predictor {:?}", tunables.predictor))?;
        let cluster = match service.coordination {
            crate::config::Coordination::Redis => {
                Some(Arc::new(ClusterLink::connect(&service, &tunables).await?))
            }
            crate::config::Coordination::None => None,
        };
        let limiter: Arc<dyn RateGate> = match &cluster {
            Some(c) => Arc::new(ClusterGate(c.limiter.clone())),
            None => Arc::new(OriginLimiter::new(tunables.max_origin_rps)),
        };
        let guarded = GuardedOrigin::new(origin_impl, limiter.clone());
        let tunables: SharedTunables = Arc::new(ArcSwap::from_pointee(tunables));
        let telemetry = Arc::new(Telemetry::new());
        let emergency = Arc::new(Emergency::new());
        let cost = Arc::new(CostModel::new(100_000));
        let watch = Arc::new(OriginWatch {
            tunables: tunables.clone(),
            telemetry: telemetry.clone(),
            emergency: emergency.clone(),
            cost: cost.clone(),
        });
        let predictor = Arc::new(ArcSwap::from_pointee(predictor));
        let readthrough = ReadThrough::new(
            cache.clone(),
            guarded.clone(),
            tunables.clone(),
            watch.clone(),
        )
        .with_write_hook({
            let predictor = predictor.clone();
            Arc::new(move |key: &str, ttl: Duration| {
                let p = predictor.load();
                if p.tracks_writes() {
                    p.written(key, now_unix(), ttl, Write::ReadThrough);
                }
            })
        });
        let writer = BatchWriter::spawn(cache.clone(), tunables.clone());
        let access_log = service.access_log.clone().map(|path| {
            AccessLog::new(
                path,
                service.access_log_max_bytes,
                telemetry.access_log_counters(),
            )
        });
        let engine = Arc::new(Engine {
            access_log,
            tracker: Arc::new(AccessTracker::new(
                service.tracker_max_keys,
                service.tracker_bucket,
            )),
            jobs: JobRegistry::new(service.jobs_retained),
            recent: recent_map(1_000_000),
            not_found: recent_map(100_000),
            predictor,
            queue: WarmQueue::new(),
            board: WorkerBoard::default(),
            reconfigured: Notify::new(),
            workers_stop: CancellationToken::new(),
            worker_tasks: TaskTracker::new(),
            background: TaskTracker::new(),
            accepting: true.into(),
            config_lock: tokio::sync::Mutex::new(()),
            cluster,
            background_stop,
            tunables,
            service,
            emergency,
            cache,
            writer,
            origin: guarded,
            limiter,
            cost,
            events,
            telemetry,
            watch,
            scheduler,
            readthrough,
        });
        if let Some(c) = &engine.cluster {
            // Be listed before the first request is served.
            let info = c.info(
                &engine.service.listen,
                engine.tunables.load().concurrent_warmers,
            );
            if let Err(e) = c.members.heartbeat(&info).await {
                tracing::warn!(error = %e, "first cluster heartbeat failed");
            }
            engine.adopt_shared_state().await;
        } else {
            engine.restore_pending().await;
        }
        worker::ensure_workers(&engine);
        engine.spawn_background();
        if engine.cluster.is_some() {
            engine.spawn_cluster_loops();
        }
        Ok(engine)
    }

    fn spawn_background(self: &Arc<Self>) {
        let stop = self.background_stop.clone();
        if let Some(log) = &self.access_log {
            self.background.spawn(log.clone().run(stop.clone()));
        }
        self.background
            .spawn(self.scheduler.clone().run(self.clone(), stop.clone()));
        let e = self.clone();
        let s = stop.clone();
        self.background
            .spawn(async move { e.emergency_probe_loop(s).await });
        let e = self.clone();
        self.background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        e.telemetry.upkeep();
                        let predictor = e.predictor.load_full();
                        let _ = tokio::task::spawn_blocking(move || predictor.tick(now_unix())).await;
                        e.telemetry.queue_length(e.queue.len());
                        if let Some(n) = e.events.nats() {
                            e.telemetry.events_dropped(n.dropped());
                        }
                    }
                    _ = stop.cancelled() => break,
                }
            }
        });
    }

    /// While an automatic stop lasts: wait `emergency_cooldown`, probe the
    /// origin with one request, resume when it answers under the threshold.
    async fn emergency_probe_loop(&self, stop: CancellationToken) {
        let mut state = self.emergency.subscribe();
        loop {
            let probe_key = {
                let wait = state.wait_for(|s| matches!(s, Some(i) if !i.manual));
                tokio::select! {
                    r = wait => match r {
                        Ok(s) => s.as_ref().and_then(|i| i.probe_key.clone()),
                        Err(_) => return,
                    },
                    _ = stop.cancelled() => return,
                }
            };
            let t = self.tunables.load_full();
            tokio::select! {
                _ = tokio::time::sleep(t.emergency_cooldown) => {}
                _ = stop.cancelled() => return,
            }
            if !matches!(self.emergency.current(), Some(i) if !i.manual) {
                continue;
            }
            let Some(key) = probe_key.or_else(|| self.queue_head_key()) else {
                self.emergency.resume_automatic();
                continue;
            };
            if self.limiter.acquire().await {
                self.telemetry.rate_limited();
            }
            let started = Instant::now();
            let result = self.origin.origin().fetch(&key, t.origin_timeout).await;
            let latency = started.elapsed();
            self.telemetry.origin_request();
            let healthy = matches!(result, Ok(_) | Err(OriginError::NotFound))
                && latency <= t.emergency_threshold;
            tracing::info!(
                key,
                ms = latency.as_millis() as u64,
                healthy,
                "emergency probe"
            );
            if healthy && self.emergency.resume_automatic() {
                self.telemetry
                    .emergency_active(false, "origin latency back under the threshold");
                self.queue.wake_all();
            }
        }
    }

    fn queue_head_key(&self) -> Option<String> {
        self.queue.peek_key()
    }

    // ----- intake -------------------------------------------------------

    fn check_accepting(&self) -> Result<(), EngineError> {
        if self.accepting.load(std::sync::atomic::Ordering::Acquire) {
            Ok(())
        } else {
            Err(EngineError::ShuttingDown)
        }
    }

    fn check_priority(priority: Option<u8>) -> Result<u8, EngineError> {
        match priority {
            Some(p) if p > 100 => Err(EngineError::invalid(
                "invalid_priority",
                format!("priority {p} is out of range; allowed 0..=100"),
            )),
            Some(p) => Ok(p),
            None => Ok(DEFAULT_PRIORITY),
        }
    }

    fn check_keys(&self, keys: &[String]) -> Result<(), EngineError> {
        if keys.is_empty() {
            return Err(EngineError::invalid(
                "invalid_keys",
                "keys must not be empty",
            ));
        }
        if keys.len() > self.service.max_keys_per_request {
            return Err(EngineError::invalid(
                "too_many_keys",
                format!(
                    "{} keys in one request; the limit is {}",
                    keys.len(),
                    self.service.max_keys_per_request
                ),
            ));
        }
        for (i, key) in keys.iter().enumerate() {
            validate_key(key, self.service.max_key_len)
                .map_err(|e| EngineError::invalid("invalid_key", format!("keys[{i}]: {e}")))?;
        }
        Ok(())
    }

    fn check_limit(&self, limit: Option<usize>, default: usize) -> Result<usize, EngineError> {
        let max = self.service.max_keys_per_request;
        match limit {
            Some(0) => Err(EngineError::invalid(
                "invalid_limit",
                format!("limit must be 1..={max}"),
            )),
            Some(l) if l > max => Err(EngineError::invalid(
                "invalid_limit",
                format!("limit {l} is out of range; allowed 1..={max}"),
            )),
            Some(l) => Ok(l),
            None => Ok(default.min(max)),
        }
    }

    /// Orders, filters, deduplicates and queues `keys` as one job.
    /// `limit` truncates after the strategy has ordered the keys.
    async fn submit(
        &self,
        source: &str,
        keys: Vec<String>,
        priority: u8,
        strategy: Option<Strategy>,
        force: bool,
        limit: Option<usize>,
    ) -> Result<Submitted, EngineError> {
        let t = self.tunables.load();
        let strategy = strategy.unwrap_or(t.default_strategy);
        let facts = Facts {
            tracker: &self.tracker,
            cost: &self.cost,
            now: now_unix(),
        };
        let mut planned = plan(strategy, keys, priority, &facts);
        if let Some(l) = limit {
            planned.truncate(l);
        }
        let job_id = self.jobs.next_id();
        let job: Arc<str> = Arc::from(job_id.as_str());
        let mut statuses = Vec::with_capacity(planned.len());
        let mut tasks = Vec::with_capacity(planned.len());
        let mut skipped = 0;
        let check_recent = !force && !t.min_rewarm_interval.is_zero();
        let recent_flags: Vec<bool> = match &self.cluster {
            Some(c) if check_recent => {
                let keys: Vec<String> = planned.iter().map(|p| p.key.clone()).collect();
                c.leases.recently_warmed_many(&keys).await?
            }
            _ => planned
                .iter()
                .map(|p| {
                    check_recent
                        && self
                            .recent
                            .get(&p.key)
                            .is_some_and(|at| at.elapsed() < t.min_rewarm_interval)
                })
                .collect(),
        };
        for (p, recent) in planned.iter().zip(recent_flags) {
            if recent {
                skipped += 1;
                statuses.push((p.key.clone(), jobs::SKIPPED_RECENT));
            } else {
                statuses.push((p.key.clone(), jobs::QUEUED));
                tasks.push(Task {
                    key: p.key.clone(),
                    priority: p.priority,
                    job_id: job.clone(),
                    strategy,
                    seq: 0,
                });
            }
        }
        let candidate_keys: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
        let accepted = match &self.cluster {
            Some(c) => {
                c.jobs.create(&job_id, source, strategy, &statuses).await?;
                c.queue.push_many(tasks).await?
            }
            None => {
                // The job exists before a worker can finish one of its keys.
                // Refused once shutdown has drained the queue: the caller
                // hears 503 instead of its work vanishing unsaved.
                self.jobs.create(&job_id, source, strategy, statuses);
                self.queue
                    .push_many(tasks)
                    .map_err(|_| EngineError::ShuttingDown)?
            }
        };
        let dedup: Vec<String> = candidate_keys
            .into_iter()
            .zip(&accepted)
            .filter(|(_, a)| !**a)
            .map(|(k, _)| k)
            .collect();
        if !dedup.is_empty() {
            match &self.cluster {
                Some(c) => c.jobs.mark_deduplicated(&job_id, &dedup).await?,
                None => self.jobs.mark_deduplicated(&job_id, &dedup),
            }
        }
        let queued = accepted.iter().filter(|a| **a).count();
        self.telemetry.deduplicated(dedup.len() as u64);
        self.telemetry.skipped_recent(skipped as u64);
        self.telemetry.queue_length(self.queue.len());
        Ok(Submitted {
            job_id,
            keys: planned.into_iter().map(|p| p.key).collect(),
            queued,
            deduplicated: dedup.len(),
            skipped_recent: skipped,
            estimated_time_ms: self.estimate_ms(&t),
        })
    }

    /// Time until the last queued key is done, from the queue length, the
    /// rate limit and the observed per-key duration spread over the workers.
    fn estimate_ms(&self, t: &Tunables) -> u64 {
        let waiting = (self.queue.len() + self.queue.in_flight()) as f64;
        let avg = self.telemetry.snapshot().avg_duration_ms;
        let avg = if avg > 0.0 { avg } else { 10.0 };
        let per_worker = avg / t.concurrent_warmers.max(1) as f64;
        let per_rate = if t.max_origin_rps > 0 {
            1000.0 / t.max_origin_rps as f64
        } else {
            0.0
        };
        (waiting * per_worker.max(per_rate)).ceil() as u64
    }

    /// `POST /warm/key`.
    pub async fn warm_keys(&self, req: WarmKeyRequest) -> Result<WarmResponse, EngineError> {
        self.check_accepting()?;
        let priority = Self::check_priority(req.priority)?;
        self.check_keys(&req.keys)?;
        let s = self
            .submit("key", req.keys, priority, req.strategy, req.force, None)
            .await?;
        Ok(s.into_response())
    }

    /// Keys the service knows that match `pattern`: accessed keys, keys named
    /// by schedules and keys in the cache, at most `cap`.
    pub async fn known_keys(
        &self,
        pattern: &KeyPattern,
        cap: usize,
    ) -> Result<Vec<String>, EngineError> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        // A pattern never names the coordination's own keys (the queue,
        // leases), which share the cache's database when it has no prefix.
        let usable = |k: &str| {
            validate_key(k, self.service.max_key_len).is_ok()
                && !self.cluster.as_ref().is_some_and(|c| c.owns_key(k))
        };
        let mut add = |k: String, out: &mut Vec<String>| {
            if out.len() < cap && usable(&k) && seen.insert(k.clone()) {
                out.push(k);
            }
        };
        for k in self.tracker.keys_matching(pattern, cap) {
            add(k, &mut out);
        }
        for k in self.scheduler.registered_keys() {
            if pattern.is_match(&k) {
                add(k, &mut out);
            }
        }
        if out.len() < cap {
            for k in self.cache.scan(pattern.redis_pattern(), cap).await? {
                add(k, &mut out);
            }
        }
        Ok(out)
    }

    /// `POST /warm/pattern`.
    pub async fn warm_pattern(
        &self,
        req: WarmPatternRequest,
    ) -> Result<WarmPatternResponse, EngineError> {
        self.warm_pattern_as(req, "pattern").await
    }

    async fn warm_pattern_as(
        &self,
        req: WarmPatternRequest,
        source: &str,
    ) -> Result<WarmPatternResponse, EngineError> {
        self.check_accepting()?;
        let priority = Self::check_priority(req.priority)?;
        let limit = self.check_limit(req.limit, DEFAULT_PATTERN_LIMIT)?;
        let pattern = KeyPattern::parse(&req.pattern)
            .map_err(|e| EngineError::invalid("invalid_pattern", e.to_string()))?;
        // Look further than `limit` so selective/priority can pick the best.
        let cap = limit.saturating_mul(4);
        let matched = self.known_keys(&pattern, cap).await?;
        let s = self
            .submit(
                source,
                matched,
                priority,
                req.strategy,
                req.force,
                Some(limit),
            )
            .await?;
        Ok(WarmPatternResponse {
            success: true,
            pattern: req.pattern,
            queued: s.queued,
            matched_keys: s.keys,
            job_id: s.job_id,
            estimated_time_ms: s.estimated_time_ms,
            deduplicated: s.deduplicated,
            skipped_recent: s.skipped_recent,
        })
    }

    /// `POST /warm/trigger-predictive`.
    pub async fn trigger_predictive(
        &self,
        req: TriggerPredictiveRequest,
        source: &str,
    ) -> Result<WarmResponse, EngineError> {
        self.check_accepting()?;
        let priority = Self::check_priority(req.priority)?;
        let t = self.tunables.load_full();
        let limit = self.check_limit(req.limit, t.predictive_limit)?;
        let keys = self.predicted_keys(limit).await?;
        let s = self
            .submit(source, keys, priority, req.strategy, req.force, Some(limit))
            .await?;
        Ok(s.into_response())
    }

    /// The predictor's top `limit` keys for the configured window, best first
    /// (the prediction runs off the async threads).
    async fn predicted_keys(&self, limit: usize) -> Result<Vec<String>, EngineError> {
        let predictor = self.predictor.load_full();
        let tracker = self.tracker.clone();
        let window = self.tunables.load().predict_window;
        let predictions = tokio::task::spawn_blocking(move || {
            predictor.predict(&tracker, now_unix(), window, limit)
        })
        .await
        .map_err(|e| EngineError::Internal(format!("predictor failed: {e}")))?;
        Ok(predictions.into_iter().map(|p| p.key).collect())
    }

    /// A `refresh` firing ([`refresh`]): queues those of the top predicted
    /// keys whose cached value is missing or expires within `until_next`
    /// (the time to the schedule's next firing) plus the origin timeout. A
    /// key the origin answered 404 for counts as holding a value of
    /// `default_ttl` from that answer.
    /// `limit` absent: what the origin budget fetches in `until_next`.
    /// `Ok(None)` when no key needs it.
    pub async fn refresh_expiring(
        &self,
        limit: Option<usize>,
        until_next: Duration,
        priority: u8,
        strategy: Option<Strategy>,
        source: &str,
    ) -> Result<Option<String>, EngineError> {
        self.check_accepting()?;
        let t = self.tunables.load_full();
        let limit = match limit {
            Some(l) => self.check_limit(Some(l), l)?,
            None => refresh::budget_limit(f64::from(t.max_origin_rps), until_next)
                .min(self.service.max_keys_per_request),
        };
        let keys = self.predicted_keys(refresh::candidates(limit)).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let mut ttls = self.cache.ttl_many(&keys).await?;
        // A key the origin recently said it does not have counts as cached
        // for one default TTL from that answer (given to any instance, with
        // coordination).
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| ttls[i].is_none()).collect();
        match &self.cluster {
            Some(c) if !missing.is_empty() => {
                let names: Vec<String> = missing.iter().map(|&i| keys[i].clone()).collect();
                let left = c.leases.not_found_left_many(&names).await?;
                for (i, left) in missing.into_iter().zip(left) {
                    ttls[i] = left;
                }
            }
            _ => {
                for i in missing {
                    if let Some(at) = self.not_found.get(&keys[i]) {
                        ttls[i] = t.default_ttl.checked_sub(at.elapsed());
                    }
                }
            }
        }
        let horizon = until_next + t.origin_timeout;
        let due: Vec<String> =
            refresh::due(keys.into_iter().zip(ttls), |(_, ttl)| *ttl, horizon, limit)
                .into_iter()
                .map(|(key, _)| key)
                .collect();
        if due.is_empty() {
            return Ok(None);
        }
        let s = self
            .submit(source, due, priority, strategy, false, Some(limit))
            .await?;
        Ok(Some(s.job_id))
    }

    /// Time from now to the next firing of schedule `name` (the scheduler
    /// arms it before running the current one); 60 s if it has none, at
    /// least 1 s.
    fn until_next_firing(&self, name: &str) -> Duration {
        match self.scheduler.get(name).and_then(|v| v.next_run) {
            Some(next) => (next - chrono::Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_secs(1)),
            None => Duration::from_secs(60),
        }
    }

    /// `POST /warm/access`: returns how many accesses were recorded.
    pub fn record_access(&self, req: AccessRequest) -> Result<usize, EngineError> {
        let total = req.keys.len() + req.events.len();
        if total == 0 {
            return Err(EngineError::invalid(
                "invalid_keys",
                "send at least one key in keys or events",
            ));
        }
        if total > self.service.max_keys_per_request {
            return Err(EngineError::invalid(
                "too_many_keys",
                format!(
                    "{total} accesses in one request; the limit is {}",
                    self.service.max_keys_per_request
                ),
            ));
        }
        let now = now_unix();
        let mut batch = Vec::with_capacity(total);
        for (i, k) in req.keys.iter().enumerate() {
            validate_key(k, self.service.max_key_len)
                .map_err(|e| EngineError::invalid("invalid_key", format!("keys[{i}]: {e}")))?;
            batch.push((k.as_str(), now));
        }
        for (i, ev) in req.events.iter().enumerate() {
            validate_key(&ev.key, self.service.max_key_len).map_err(|e| {
                EngineError::invalid("invalid_key", format!("events[{i}].key: {e}"))
            })?;
            let at = match &ev.at {
                None => now,
                Some(AccessTime::UnixSeconds(s)) if s.is_finite() && *s >= 0.0 => *s as u64,
                Some(AccessTime::UnixSeconds(s)) => {
                    return Err(EngineError::invalid(
                        "invalid_time",
                        format!("events[{i}].at: {s} is not a time"),
                    ));
                }
                Some(AccessTime::Rfc3339(t)) => t.timestamp().max(0) as u64,
            };
            if at > now + 300 {
                return Err(EngineError::invalid(
                    "invalid_time",
                    format!("events[{i}].at is in the future"),
                ));
            }
            batch.push((ev.key.as_str(), at));
        }
        self.note_accesses(&batch, true);
        Ok(batch.len())
    }

    /// A warm wrote a fresh value of `key`, living `ttl`, at `at`: a
    /// predictor that tracks writes hears of it, and with coordination
    /// (`done_here`) so do the other instances' (nothing is shared for the
    /// other predictors).
    pub(crate) fn note_warmed(&self, key: &str, at: u64, ttl: Duration, done_here: bool) {
        let predictor = self.predictor.load();
        if !predictor.tracks_writes() {
            return;
        }
        predictor.written(key, at, ttl, Write::Warm);
        if let (Some(c), true) = (&self.cluster, done_here) {
            c.buffer_warmed(key, at, ttl);
        }
    }

    /// Every access the service learns of: into the tracker, the predictor
    /// and the access log, and, when it arrived at this instance, to the
    /// other instances.
    pub(crate) fn note_accesses(&self, batch: &[(&str, u64)], arrived_here: bool) {
        let predictor = self.predictor.load();
        for &(k, at) in batch {
            self.tracker.record(k, at);
            predictor.observe(k, at);
            if let (Some(c), true) = (&self.cluster, arrived_here) {
                c.buffer_access(k, at);
            }
        }
        if let Some(log) = &self.access_log {
            log.record(batch.iter().copied());
        }
        if arrived_here {
            self.telemetry.accesses_recorded(batch.len() as u64);
        }
    }

    /// The access log, when `WARMING_ACCESS_LOG` is set.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// `GET /cache/{key}`: read through the cache, recording the access.
    pub async fn read(&self, key: &str) -> Result<(Bytes, ReadSource), ReadError> {
        self.note_accesses(&[(key, now_unix())], true);
        let r = self.readthrough.get(key).await;
        if let Ok((_, src)) = &r {
            self.telemetry.cache_read(*src);
        }
        r
    }

    pub fn max_key_len(&self) -> usize {
        self.service.max_key_len
    }

    // ----- status and control -------------------------------------------

    /// `GET /warm/status`. With coordination, queue and job counts are
    /// cluster-wide and `instances` lists every live instance.
    pub async fn status(&self) -> Result<StatusResponse, EngineError> {
        let stop = self.emergency.current();
        let mut status = StatusResponse {
            active_jobs: self.jobs.active(),
            queued_tasks: self.queue.len(),
            worker_status: self.board.snapshot(stop.is_some()),
            emergency_stop: stop.is_some(),
            emergency_reason: stop.map(|s| s.reason),
            metrics: self.telemetry.snapshot(),
            predictor: self.predictor_status(),
            instances: Vec::new(),
        };
        if let Some(c) = &self.cluster {
            let stats = c.queue.stats().await?;
            status.queued_tasks = stats.waiting + self.queue.len();
            status.active_jobs = c.jobs.active().await?;
            status.instances = c
                .members
                .live()
                .await?
                .into_iter()
                .map(|l| crate::protocol::InstanceStatus {
                    id: l.info.id,
                    addr: l.info.addr,
                    workers: l.info.workers,
                    started_at_ms: l.info.started_at,
                    last_heartbeat_ms: l.last_heartbeat,
                })
                .collect();
        }
        Ok(status)
    }

    /// `GET /warm/jobs/{id}`; with coordination, from any instance.
    pub async fn job(&self, id: &str) -> Result<Option<JobView>, EngineError> {
        match &self.cluster {
            Some(c) => Ok(c.jobs.view(id).await?),
            None => Ok(self.jobs.view(id)),
        }
    }

    /// `GET /warm/config`.
    pub fn config_view(&self) -> ConfigResponse {
        let s = &self.service;
        ConfigResponse {
            config: Tunables::clone(&self.tunables.load()),
            service: ServiceInfo {
                listen: s.listen.clone(),
                origin: self.origin.origin().describe(),
                origin_http: s.origin_http.as_str().to_string(),
                origin_ca_file: s.origin_ca_file.as_ref().map(|p| p.display().to_string()),
                cache_backend: self.cache.backend().to_string(),
                cache_prefix: s.cache_prefix.clone(),
                nats_subject: s.nats_url.as_ref().map(|_| s.nats_subject.clone()),
                timezone: s.timezone.clone(),
                builtin_schedules: s.builtin_schedules,
                tracker_max_keys: s.tracker_max_keys,
                max_keys_per_request: s.max_keys_per_request,
                max_key_len: s.max_key_len,
                auth: s.api_token.is_some(),
            },
        }
    }

    /// `POST /warm/config`: validated as a whole, then swapped in; on error
    /// nothing changes. Answers the configuration after the update.
    pub async fn update_config(
        &self,
        update: TunablesUpdate,
    ) -> Result<ConfigResponse, Vec<FieldError>> {
        let _serial = self.config_lock.lock().await;
        let current = self.tunables.load_full();
        let next = update.apply_to(&current, Duration::from_nanos(1))?;
        self.swap_tunables(&current, next)?;
        if let Some(c) = &self.cluster {
            let doc = self.tunables.load().to_json();
            if let Err(e) = c.state.put(DOC_TUNABLES, &doc).await {
                tracing::warn!(error = %e, "configuration applied here but not shared with the cluster");
            }
        }
        Ok(self.config_view())
    }

    /// Installs `next` (validated) in place of `current`.
    fn swap_tunables(&self, current: &Tunables, next: Tunables) -> Result<(), Vec<FieldError>> {
        // A predictor is built (and its state started afresh) only when the
        // choice changes.
        if next.predictor != current.predictor {
            let settings = self.service.predictor_settings(next.default_ttl);
            let predictor = predict::build(&next.predictor, &settings).ok_or_else(|| {
                vec![FieldError {
                    field: "predictor".into(),
                    message: format!("unknown predictor {:?}", next.predictor),
                }]
            })?;
            self.predictor.store(Arc::new(predictor));
        } else if next.default_ttl != current.default_ttl {
            self.predictor.load().ttl_changed(next.default_ttl);
        }
        if next.max_origin_rps != current.max_origin_rps {
            self.limiter.set_rate(next.max_origin_rps);
        }
        self.tunables.store(Arc::new(next));
        self.reconfigured.notify_waiters();
        Ok(())
    }

    /// Spawns or retires workers to match `concurrent_warmers` (after an update).
    pub fn apply_worker_count(self: &Arc<Self>) {
        worker::ensure_workers(self);
        self.reconfigured.notify_waiters();
    }

    /// `POST /warm/emergency-stop` (shared with every instance).
    pub async fn emergency_stop(&self, reason: Option<String>) -> bool {
        let reason = reason.unwrap_or_else(|| "stopped by an operator".into());
        let changed = self.emergency.stop_manual(&reason);
        self.telemetry.emergency_active(true, &reason);
        self.share_emergency().await;
        changed
    }

    /// `POST /warm/resume` (shared with every instance).
    pub async fn resume(&self) -> bool {
        let was = self.emergency.resume();
        self.telemetry
            .emergency_active(false, "resumed by an operator");
        self.queue.wake_all();
        self.share_emergency().await;
        was
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// `POST /warm/schedules` (shared with every instance).
    pub async fn add_schedule(
        &self,
        spec: ScheduleSpec,
    ) -> Result<crate::schedule::ScheduleView, crate::schedule::ScheduleError> {
        let view = self.scheduler.add(spec)?;
        self.share_schedules().await;
        Ok(view)
    }

    /// `DELETE /warm/schedules/{name}` (shared with every instance).
    pub async fn remove_schedule(&self, name: &str) -> Result<(), crate::schedule::ScheduleError> {
        self.scheduler.remove(name)?;
        self.share_schedules().await;
        Ok(())
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn metrics_text(&self) -> String {
        self.telemetry.queue_length(self.queue.len());
        self.predictor_status();
        self.telemetry.render()
    }

    /// The predictor's figures for `GET /warm/status`, also set in the
    /// `warming_predictor_*` gauges so that both agree.
    pub fn predictor_status(&self) -> crate::protocol::PredictorStatus {
        let status = self.predictor.load().status();
        self.telemetry.predictor(&status);
        status
    }

    /// Whether the cache answers and the service takes work.
    pub async fn ready(&self) -> Result<(), String> {
        if !self.accepting.load(std::sync::atomic::Ordering::Acquire) {
            return Err("shutting down".into());
        }
        self.cache.ping().await.map_err(|e| e.to_string())
    }

    // ----- shutdown and restart -----------------------------------------

    fn pending_path(&self) -> PathBuf {
        self.service.state_dir.join(PENDING_FILE)
    }

    /// Re-queues the work a previous process accepted but did not finish.
    async fn restore_pending(&self) {
        let path = self.pending_path();
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            return;
        };
        let tasks: Vec<Task> = match serde_json::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read pending work; keeping the file");
                return;
            }
        };
        let mut by_job: Vec<(Arc<str>, Vec<Task>)> = Vec::new();
        for t in tasks {
            match by_job.iter_mut().find(|(j, _)| *j == t.job_id) {
                Some((_, v)) => v.push(t),
                None => by_job.push((t.job_id.clone(), vec![t])),
            }
        }
        let mut n = 0;
        for (job, tasks) in by_job {
            let strategy = tasks[0].strategy;
            self.jobs.create(
                &job,
                "restored",
                strategy,
                tasks
                    .iter()
                    .map(|t| (t.key.clone(), jobs::QUEUED))
                    .collect(),
            );
            n += tasks.len();
            let keys: Vec<String> = tasks.iter().map(|t| t.key.clone()).collect();
            // At start-up: the queue is open.
            let accepted = self.queue.push_many(tasks).unwrap_or_default();
            let dup: Vec<String> = keys
                .into_iter()
                .zip(accepted)
                .filter(|(_, a)| !a)
                .map(|(k, _)| k)
                .collect();
            self.jobs.mark_deduplicated(&job, &dup);
        }
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove restored pending file");
        }
        tracing::info!(keys = n, "restored unfinished work from the previous run");
    }

    /// Stops taking work, lets workers finish their key, persists everything
    /// still queued or in flight, flushes events: all within `grace` (see
    /// [`shutdown_reserve`]). [`crate::api::Server::shutdown`] runs the same
    /// steps while the HTTP server drains.
    pub async fn shutdown(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        self.begin_shutdown();
        self.wait_workers(deadline - shutdown_reserve(grace)).await;
        self.finish_shutdown(deadline).await;
    }

    /// First step of shutdown: new work is refused (`/readyz` answers 503)
    /// and every worker stops after its current key.
    pub fn begin_shutdown(&self) {
        self.accepting
            .store(false, std::sync::atomic::Ordering::Release);
        self.workers_stop.cancel();
        self.worker_tasks.close();
    }

    /// Waits until every worker has finished its current key, or `until`.
    /// Returns whether they all finished.
    pub async fn wait_workers(&self, until: tokio::time::Instant) -> bool {
        let done = tokio::time::timeout_at(until, self.worker_tasks.wait())
            .await
            .is_ok();
        if !done {
            tracing::warn!(
                "workers still busy at the shutdown deadline; saving their keys for the next start"
            );
        }
        done
    }

    /// Last step of shutdown: saves (or, with coordination, hands back)
    /// every key still queued or in flight, whatever the time, then flushes
    /// NATS events and stops the background loops (access-log flush
    /// included) until `deadline`.
    pub async fn finish_shutdown(&self, deadline: tokio::time::Instant) {
        let left = self.queue.drain_all();
        if let Some(c) = &self.cluster {
            // The shared queue keeps the work: give back what this instance
            // claimed (queued here, in flight, or never seen) so another
            // instance takes it at once.
            let handed = c.hand_back_everything(deadline).await;
            if handed > 0 {
                tracing::info!(
                    keys = handed,
                    "claimed keys handed back to the cluster queue"
                );
            }
        } else if !left.is_empty() {
            for t in &left {
                self.jobs.mark_queued(&t.job_id, &t.key);
            }
            match self.persist_pending(&left).await {
                Ok(path) => {
                    tracing::info!(keys = left.len(), path = %path.display(), "unfinished work saved for the next start")
                }
                Err(e) => {
                    tracing::error!(keys = left.len(), error = %e, "cannot save unfinished work")
                }
            }
        }
        if let Some(n) = self.events.nats() {
            if tokio::time::timeout_at(deadline, n.flush()).await.is_err() {
                tracing::warn!("NATS events not flushed by the shutdown deadline");
            }
        }
        self.background_stop.cancel();
        self.background.close();
        if tokio::time::timeout_at(deadline, self.background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks still running at the shutdown deadline");
        }
        let m = self.telemetry.snapshot();
        tracing::info!(
            jobs_total = m.jobs_total,
            success_total = m.success_total,
            failure_total = m.failure_total,
            origin_requests = m.origin_requests,
            "final counters"
        );
    }

    async fn persist_pending(&self, tasks: &[Task]) -> std::io::Result<PathBuf> {
        let dir = &self.service.state_dir;
        tokio::fs::create_dir_all(dir).await?;
        let path = self.pending_path();
        let tmp = dir.join(format!("{PENDING_FILE}.tmp"));
        // Merge with a file left by an earlier run that was never restored.
        let mut all: Vec<Task> = match tokio::fs::read_to_string(&path).await {
            Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        all.extend_from_slice(tasks);
        let body = serde_json::to_vec(&all).map_err(std::io::Error::other)?;
        let f = {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::File::create(&tmp).await?;
            f.write_all(&body).await?;
            f.sync_all().await?;
            f
        };
        drop(f);
        tokio::fs::rename(&tmp, &path).await?;
        Ok(path)
    }
}

/// The part of the shutdown grace period kept for its last steps (saving
/// unfinished work, flushing NATS events and the access log): a fifth of the
/// grace period, at most 1 s. Requests and in-flight keys get the rest.
pub fn shutdown_reserve(grace: Duration) -> Duration {
    (grace / 5).min(Duration::from_secs(1))
}

/// The result of [`Engine::submit`].
struct Submitted {
    job_id: String,
    keys: Vec<String>,
    queued: usize,
    deduplicated: usize,
    skipped_recent: usize,
    estimated_time_ms: u64,
}

impl Submitted {
    fn into_response(self) -> WarmResponse {
        WarmResponse {
            success: true,
            queued: self.queued,
            keys: self.keys,
            job_id: self.job_id,
            estimated_time_ms: self.estimated_time_ms,
            deduplicated: self.deduplicated,
            skipped_recent: self.skipped_recent,
        }
    }
}

#[async_trait]
impl ScheduleRunner for Engine {
    async fn run_schedule(
        &self,
        spec: &ScheduleSpec,
        firing: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, String> {
        if let Some(c) = &self.cluster {
            let mine = c
                .firing
                .claim_firing(&spec.name, firing.timestamp(), Duration::from_secs(600))
                .await
                .map_err(|e| format!("cannot claim the firing: {e}"))?;
            if !mine {
                // Another instance runs this firing.
                return Ok(None);
            }
        }
        let source = format!("schedule:{}", spec.name);
        let priority = spec.priority.unwrap_or(DEFAULT_PRIORITY);
        let result = match &spec.action {
            ScheduleAction::Predictive { limit } => self
                .trigger_predictive(
                    TriggerPredictiveRequest {
                        limit: Some(*limit),
                        priority: Some(priority),
                        strategy: spec.strategy,
                        force: false,
                    },
                    &source,
                )
                .await
                .map(|r| Some(r.job_id)),
            ScheduleAction::Pattern { pattern, limit } => {
                let req = WarmPatternRequest {
                    pattern: pattern.clone(),
                    limit: Some(*limit),
                    priority: Some(priority),
                    strategy: spec.strategy,
                    force: false,
                };
                self.warm_pattern_as(req, &source)
                    .await
                    .map(|r| Some(r.job_id))
            }
            ScheduleAction::Refresh { limit } => {
                let until_next = self.until_next_firing(&spec.name);
                self.refresh_expiring(*limit, until_next, priority, spec.strategy, &source)
                    .await
            }
            ScheduleAction::Keys { keys } => {
                self.check_accepting().map_err(|e| e.to_string())?;
                self.submit(&source, keys.clone(), priority, spec.strategy, false, None)
                    .await
                    .map(|s| Some(s.job_id))
            }
        };
        result.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key just warmed is remembered even when the map is full of keys
    /// checked often (TinyLFU would have refused it, and the next request
    /// for it would not be skipped).
    #[test]
    fn the_recent_map_keeps_new_keys_when_full() {
        let m = recent_map(100);
        for i in 0..100 {
            m.insert(format!("old:{i}"), Instant::now());
        }
        for _ in 0..3 {
            for i in 0..100 {
                m.get(&format!("old:{i}"));
            }
        }
        for i in 0..50 {
            m.insert(format!("new:{i}"), Instant::now());
        }
        m.run_pending_tasks();
        for i in 0..50 {
            assert!(m.contains_key(&format!("new:{i}")), "new:{i}");
        }
        assert_eq!(m.entry_count(), 100);
    }
}
