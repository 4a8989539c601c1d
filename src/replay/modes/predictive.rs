//! Predictor modes (`heuristic`, `learned`, `predictor:NAME`): the service's
//! own predictive warming, in virtual time.
//!
//! What runs is the service's code, not a copy: an [`AccessTracker`] with the
//! service's cap and bucket width records every read; the predictor (from
//! [`crate::predict::by_name`]) `observe`s every read and is `tick`ed every
//! 5 s of trace time (the engine's cadence); keys are chosen by
//! [`choose_keys`], which is what `Engine::trigger_predictive` does
//! (`predict`, then the strategy's [`plan`], then the limit).
//!
//! Warming is started by the service's built-in schedules ([`builtin_specs`],
//! parsed by [`parse_cron`], in the service time zone, trace timestamps read
//! as unix time), run as the engine runs them:
//! - `predictive` ones (hourly top 50, daily, peak hours): the top `limit`
//!   predicted keys at the schedule's priority;
//! - the `refresh` one (`expiry-refresh`, every minute): of the top
//!   predicted keys, in the predictor's order, those whose simulated value
//!   is missing or expires before the next firing plus the service's
//!   `origin_timeout` ([`refresh::due`]), as many as the origin budget
//!   fetches until the next firing ([`refresh::budget_limit`]) unless
//!   `warm_limit` says otherwise, then planned by the strategy (as
//!   `Engine::refresh_expiring`).
//!
//! A schedule that names no strategy uses the service's `default_strategy`.
//! A predictor that tracks writes hears of each warm with its value's TTL.
//!
//! As in the engine, a key queued less than `min_rewarm_interval` (30 s)
//! ago is skipped, a key is queued once, and the queue is served priority
//! first, then FIFO, within the origin budget.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::{Mode, ModeConfig, ModeResult, secs};
use crate::access::AccessTracker;
use crate::config::{ServiceConfig, Strategy, Tunables};
use crate::predict::{Predictor, Write};
use crate::protocol::DEFAULT_PRIORITY;
use crate::replay::quality::{DEFAULT_KS, Quality};
use crate::replay::sim::{IdMap, Sim, WarmQueue};
use crate::replay::trace::{KeySpace, Request};
use crate::schedule::{ScheduleAction, ScheduleSpec, builtin_specs, parse_cron};
use crate::warm::refresh;
use crate::warm::strategy::{KeyFacts, Planned, plan};

/// Knobs of the predictor modes; defaults are the service's.
#[derive(Debug, Clone)]
pub struct PredictiveConfig {
    pub tracker_max_keys: usize,
    pub tracker_bucket: Duration,
    /// What the predictor is told it predicts for.
    pub predict_window: Duration,
    /// Most keys a `refresh` firing may queue; `None`: what the origin
    /// budget fetches until the next firing (as the engine).
    pub warm_limit: Option<usize>,
    /// Run the built-in `refresh` schedule (with `schedules`).
    pub refresh: bool,
    pub min_rewarm: f64,
    /// The strategy of a schedule that names none (the service's
    /// `default_strategy`).
    pub default_strategy: Strategy,
    /// Added to the time to a `refresh` firing's next one to tell which
    /// values are due (the service's `origin_timeout`).
    pub origin_timeout: Duration,
    /// Seconds between `tick`s.
    pub tick_every: f64,
    /// Run the built-in schedules.
    pub schedules: bool,
    pub timezone: String,
    /// Prediction quality window, seconds.
    pub quality_window: f64,
    pub quality_ks: Vec<usize>,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        let t = Tunables::default();
        let s = ServiceConfig::default();
        PredictiveConfig {
            tracker_max_keys: s.tracker_max_keys,
            tracker_bucket: s.tracker_bucket,
            predict_window: t.predict_window,
            warm_limit: None,
            refresh: true,
            min_rewarm: t.min_rewarm_interval.as_secs_f64(),
            default_strategy: t.default_strategy,
            origin_timeout: t.origin_timeout,
            tick_every: 5.0,
            schedules: s.builtin_schedules,
            timezone: s.timezone,
            quality_window: 300.0,
            quality_ks: DEFAULT_KS.to_vec(),
        }
    }
}

/// Hotness from the tracker (as the engine's facts), a constant cost.
struct TrackerFacts<'a> {
    tracker: &'a AccessTracker,
    now: u64,
    cost_ms: f64,
}

impl KeyFacts for TrackerFacts<'_> {
    fn hotness(&self, key: &str) -> f64 {
        self.tracker
            .stats(key, self.now)
            .map_or(0.0, |s| s.accesses_per_hour)
    }
    fn cost_ms(&self, _key: &str) -> f64 {
        self.cost_ms
    }
}

/// The keys predictive warming queues at `now`, in queue order with their
/// priorities: the predictor's top `limit`, ordered by `strategy` (the
/// engine's `default_strategy` unless the schedule or request names one),
/// truncated to `limit`. This is `Engine::trigger_predictive` minus the
/// queue.
#[allow(clippy::too_many_arguments)]
pub fn choose_keys(
    predictor: &dyn Predictor,
    tracker: &AccessTracker,
    now: u64,
    window: Duration,
    limit: usize,
    strategy: Strategy,
    priority: u8,
    cost_ms: f64,
) -> Vec<Planned> {
    let keys: Vec<String> = predicted(predictor, tracker, now, window, limit);
    plan_keys(tracker, now, keys, limit, strategy, priority, cost_ms)
}

/// The predictor's top `limit` keys, best first.
fn predicted(
    predictor: &dyn Predictor,
    tracker: &AccessTracker,
    now: u64,
    window: Duration,
    limit: usize,
) -> Vec<String> {
    predictor
        .predict(tracker, now, window, limit)
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// `keys` ordered by `strategy` and truncated to `limit`, as the engine's
/// `submit` plans a job.
fn plan_keys(
    tracker: &AccessTracker,
    now: u64,
    keys: Vec<String>,
    limit: usize,
    strategy: Strategy,
    priority: u8,
    cost_ms: f64,
) -> Vec<Planned> {
    let facts = TrackerFacts {
        tracker,
        now,
        cost_ms,
    };
    let mut planned = plan(strategy, keys, priority, &facts);
    planned.truncate(limit);
    planned
}

struct Scheduled {
    spec: ScheduleSpec,
    cron: Cron,
    /// Next firing, trace seconds.
    next: f64,
}

/// A predictor mode.
pub struct Predictive {
    sim: Sim,
    queue: WarmQueue,
    tracker: AccessTracker,
    predictor: Arc<dyn Predictor>,
    key_space: KeySpace,
    cfg: PredictiveConfig,
    tz: Tz,
    schedules: Vec<Scheduled>,
    started: bool,
    next_tick: f64,
    /// When each key was last queued (for `min_rewarm`).
    recent: IdMap<f64>,
    /// The key of each queued id, to tell the predictor when it is warmed
    /// (only for a predictor that tracks writes, as in the engine).
    queued_keys: IdMap<String>,
    quality: Quality,
    note: Option<String>,
}

fn next_after(cron: &Cron, tz: Tz, t: f64) -> f64 {
    let Some(at) = DateTime::<Utc>::from_timestamp(t.floor() as i64, 0) else {
        return f64::INFINITY;
    };
    cron.find_next_occurrence(&at.with_timezone(&tz), false)
        .map_or(f64::INFINITY, |n| n.timestamp() as f64)
}

impl Predictive {
    pub fn new(predictor: Arc<dyn Predictor>, cfg: &ModeConfig) -> Self {
        let p = cfg.predictive.clone();
        let (tz, note) = match p.timezone.parse::<Tz>() {
            Ok(tz) => (tz, None),
            Err(_) => (
                Tz::UTC,
                Some(format!("unknown time zone {:?}; UTC used", p.timezone)),
            ),
        };
        let schedules = if p.schedules {
            builtin_specs()
                .into_iter()
                .filter(|spec| p.refresh || !matches!(spec.action, ScheduleAction::Refresh { .. }))
                .filter_map(|spec| {
                    let cron = parse_cron(&spec.cron).ok()?;
                    Some(Scheduled {
                        spec,
                        cron,
                        next: f64::INFINITY,
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        Predictive {
            sim: Sim::new(cfg.sim.clone()),
            queue: WarmQueue::default(),
            tracker: AccessTracker::new(p.tracker_max_keys, p.tracker_bucket),
            predictor,
            key_space: cfg.key_space,
            quality: Quality::new(p.quality_window, p.quality_ks.clone()),
            cfg: p,
            tz,
            schedules,
            started: false,
            next_tick: f64::INFINITY,
            recent: IdMap::default(),
            queued_keys: IdMap::default(),
            note,
        }
    }

    /// The tracker, for tests and memory figures.
    pub fn tracker(&self) -> &AccessTracker {
        &self.tracker
    }

    fn start(&mut self, t: f64) {
        self.started = true;
        self.next_tick = t + self.cfg.tick_every.max(0.001);
        for s in &mut self.schedules {
            s.next = next_after(&s.cron, self.tz, t);
        }
        self.quality.start(t);
    }

    fn choose(&self, now: f64, limit: usize, strategy: Strategy, priority: u8) -> Vec<Planned> {
        choose_keys(
            &*self.predictor,
            &self.tracker,
            now.max(0.0) as u64,
            self.cfg.predict_window,
            limit,
            strategy,
            priority,
            self.sim.cfg.latency * 1000.0,
        )
    }

    /// Queues `key` unless it was queued less than `min_rewarm` ago.
    fn enqueue(&mut self, now: f64, key: &str, priority: u8) {
        let Some(id) = self.key_space.id(key) else {
            return;
        };
        if let Some(&at) = self.recent.get(&id) {
            if now - at < self.cfg.min_rewarm {
                return;
            }
        }
        if self.queue.push(id, priority) {
            self.recent.insert(id, now);
            if self.predictor.tracks_writes() {
                self.queued_keys.insert(id, key.into());
            }
        }
    }

    fn fire_schedule(&mut self, i: usize, now: f64) {
        let spec = self.schedules[i].spec.clone();
        let next = next_after(&self.schedules[i].cron, self.tz, now);
        self.schedules[i].next = next;
        let priority = spec.priority.unwrap_or(DEFAULT_PRIORITY);
        let strategy = spec.strategy.unwrap_or(self.cfg.default_strategy);
        match spec.action {
            ScheduleAction::Predictive { limit } => {
                for p in self.choose(now, limit, strategy, priority) {
                    self.enqueue(now, &p.key, p.priority);
                }
            }
            ScheduleAction::Refresh { limit } => {
                let until_next = secs(next - now);
                let limit = self
                    .cfg
                    .warm_limit
                    .or(limit)
                    .unwrap_or_else(|| refresh::budget_limit(self.sim.cfg.rps, until_next));
                // As `Engine::refresh_expiring`: the due keys in the
                // predictor's order, then the strategy's plan.
                let at = now.max(0.0) as u64;
                let keys = predicted(
                    &*self.predictor,
                    &self.tracker,
                    at,
                    self.cfg.predict_window,
                    refresh::candidates(limit),
                );
                let horizon = until_next + self.cfg.origin_timeout;
                let sim = &self.sim;
                let key_space = self.key_space;
                let remaining = |key: &String| {
                    let id = key_space.id(key)?;
                    let left = sim.valid_until(id) - now;
                    (left > 0.0).then(|| secs(left))
                };
                let due = refresh::due(keys, remaining, horizon, limit);
                let cost_ms = self.sim.cfg.latency * 1000.0;
                for p in plan_keys(&self.tracker, at, due, limit, strategy, priority, cost_ms) {
                    self.enqueue(now, &p.key, p.priority);
                }
            }
            ScheduleAction::Pattern { .. } | ScheduleAction::Keys { .. } => {}
        }
    }

    /// Runs every timed event due by `t`, in time order.
    fn advance(&mut self, t: f64) {
        loop {
            let sched = self
                .schedules
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.next.total_cmp(&b.1.next))
                .map(|(i, s)| (i, s.next));
            let q = self.quality.next_at();
            let mut next = self.next_tick;
            if let Some((_, at)) = sched {
                next = next.min(at);
            }
            if !q.is_nan() {
                next = next.min(q);
            }
            if next > t {
                break;
            }
            self.drain(next);
            self.sim.set_now(next);
            if self.next_tick <= next {
                self.predictor.tick(next.max(0.0) as u64);
                self.next_tick = next + self.cfg.tick_every.max(0.001);
                // Queue times older than `min_rewarm` no longer matter: the
                // map holds the last `min_rewarm` seconds of warms, not
                // every key ever warmed.
                let min_rewarm = self.cfg.min_rewarm;
                self.recent.retain(|_, at| next - *at < min_rewarm);
            } else if q <= next {
                self.quality
                    .roll(&*self.predictor, &self.tracker, self.key_space);
            } else if let Some((i, at)) = sched.filter(|s| s.1 <= next) {
                self.fire_schedule(i, at);
            }
        }
        if !self.queue.is_empty() {
            self.drain(t);
        }
    }

    /// Starts the queued warms due by `t`, telling the predictor of each
    /// value written (as the engine does when a warm succeeds).
    fn drain(&mut self, t: f64) {
        let Predictive {
            queue,
            sim,
            predictor,
            queued_keys,
            ..
        } = self;
        queue.drain_with(sim, t, |id, landed| {
            if let (Some(key), Some((at, ttl))) = (queued_keys.remove(&id), landed) {
                predictor.written(&key, at.max(0.0) as u64, secs(ttl), Write::Warm);
            }
        });
    }
}

impl Mode for Predictive {
    fn access(&mut self, req: &Request) {
        let t = req.at;
        if !self.started {
            self.start(t);
        }
        self.advance(t);
        let at = t.max(0.0) as u64;
        self.tracker.record(&req.key, at);
        self.predictor.observe(&req.key, at);
        self.quality.request(req.id);
        self.sim.access(t, req.id, req.size, req.ttl);
    }

    fn finish(&mut self, end: f64) -> ModeResult {
        self.drain(end);
        let stats = self.sim.finish(end);
        let mut r = ModeResult::ok(stats, self.sim.series.clone());
        r.quality = self.quality.enabled().then(|| self.quality.rows());
        r.note = self.note.clone();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::by_name;
    use crate::replay::sim::{Capacity, SimConfig};

    fn cfg() -> ModeConfig {
        let mut c = ModeConfig::new(
            SimConfig {
                capacity: Capacity::Entries(1000),
                ttl: 300.0,
                latency: 0.1,
                rps: 0.0,
                admission: false,
                max_remembered: usize::MAX,
            },
            KeySpace::Numeric,
        );
        c.predictive.schedules = false;
        c
    }

    fn req(at: f64, id: u64) -> Request {
        Request {
            at,
            id,
            key: id.to_string().into(),
            size: 1,
            ttl: None,
            write: false,
        }
    }

    /// Key 1 read every 400 s with TTL 300 s: `none` would miss every read.
    /// The built-in `expiry-refresh` schedule fires every minute; key 1 (the
    /// only key, so predicted) is re-fetched whenever it would expire before
    /// the next firing: every read after the first hits.
    #[test]
    fn expiry_refresh_keeps_a_predicted_key_warm() {
        let p = by_name("heuristic").unwrap();
        let mut c = cfg();
        c.predictive.schedules = true;
        let mut m = Predictive::new(p, &c);
        let mut end = 0.0;
        for i in 0..10 {
            end = 1_000_000.0 + f64::from(i) * 400.0;
            m.access(&req(end, 1));
        }
        let s = m.finish(end).stats.unwrap();
        assert_eq!((s.misses_cold, s.hits), (1, 9), "{s:?}");
        assert_eq!(s.misses_expired, 0);
        assert!(s.origin_fetches_warming >= 9);
    }

    /// The hourly schedule fires at each full hour of trace time and warms
    /// the top predicted keys. `expiry-refresh` off, TTL 50 min: a key read
    /// at 01:10 (and at 01:50, a hit) expires at 02:00 (+0.1 s latency), so
    /// `none` would miss its read at 02:10; the 02:00 firing re-warms it (the
    /// heuristic scores it: read in the recent two 15-min buckets) and the
    /// read hits. `daily-warmup` also fires at 02:00 and is deduplicated
    /// (`min_rewarm`): one warm in all.
    #[test]
    fn hourly_schedule_warms_predicted_keys() {
        let mut c = cfg();
        c.predictive.schedules = true;
        c.predictive.refresh = false;
        c.sim.ttl = 3000.0;
        let p = by_name("heuristic").unwrap();
        let mut m = Predictive::new(p, &c);
        let day = 86_400.0 * 100.0;
        for minute in [70.0, 110.0, 130.0] {
            m.access(&req(day + minute * 60.0, 1));
        }
        let s = m.finish(day + 130.0 * 60.0).stats.unwrap();
        assert_eq!((s.misses_cold, s.hits), (1, 2), "{s:?}");
        assert_eq!(s.origin_fetches_warming, 1);
    }

    /// Many more distinct keys than the caps: the tracker and the learned
    /// predictor stay within theirs (the replay's memory for them is the
    /// configured cap, not the trace's key count) while warming goes on, and
    /// the map of recent warms holds only the last `min_rewarm` seconds.
    #[test]
    fn caps_hold_under_many_distinct_keys() {
        let mut c = cfg();
        c.predictive.schedules = true;
        c.predictive.tracker_max_keys = 5_000;
        c.sim.max_remembered = 5_000;
        c.predictor_settings.learned_max_keys = 50_000;
        c.sim.capacity = Capacity::Entries(1_000_000);
        // Values live a minute: `expiry-refresh` keeps warming (no budget:
        // demand alone is 1,100 fetches a second).
        c.sim.ttl = 60.0;
        c.predictor_settings.default_ttl = Duration::from_secs(60);
        let learned = Arc::new(crate::predict::LearnedPredictor::from_settings(
            &c.predictor_settings,
        ));
        let mut m = Predictive::new(learned.clone(), &c);
        let t0 = 2_000_000.0;
        let keys = 200_000u64;
        for i in 0..keys {
            // 1,000 one-off keys a second, and 2,000 hot keys read every 20 s.
            let t = t0 + i as f64 / 1000.0;
            m.access(&req(t, 1_000_000 + i));
            if i % 10 == 0 {
                m.access(&req(t, (i / 10) % 2_000));
            }
        }
        assert!(m.tracker().len() <= 5_000, "tracker {}", m.tracker().len());
        // Keys still cached are remembered whatever the cap (the cache's
        // size bounds them); of the others at most the cap.
        assert!(
            m.sim.remembered() <= m.sim.len() + 5_000,
            "simulation {} with {} cached",
            m.sim.remembered(),
            m.sim.len()
        );
        assert!(learned.len() <= 50_000, "learned {}", learned.len());
        let end = t0 + keys as f64 / 1000.0;
        assert!(
            m.recent
                .values()
                .all(|at| end - at < c.predictive.min_rewarm + 5.0),
            "recent warms kept {}",
            m.recent.len()
        );
        let s = m.finish(end).stats.unwrap();
        assert_eq!(s.misses_cold, keys + 2_000);
        assert!(
            s.origin_fetches_warming > 5_000,
            "warmed all along: {}",
            s.origin_fetches_warming
        );
    }

    /// `learned` through `expiry-refresh`, TTL 300 s: key 1 is read at 0
    /// (a miss that writes a value expiring at 300.1) and at 330; key 2 at
    /// 0 only. Without warming the read at 330 misses (expired). The
    /// learned predictor names both keys when their values near expiry (at
    /// the firing at 240, within the 120 s band, with a minimum probability
    /// of 0 every candidate counts), both are refreshed once, and the read
    /// at 330 hits; key 2's warm is never read. With a minimum probability
    /// above any score nothing is warmed: the same misses as `none`.
    #[test]
    fn learned_refreshes_keys_whose_values_expire() {
        let mut c = cfg();
        c.predictive.schedules = true;
        c.predictor_settings.default_ttl = Duration::from_secs(300);
        let t0 = 1_000_020.0;
        let trace = [(t0, 1), (t0, 2), (t0 + 330.0, 1)];
        let run = |min_probability: f32| {
            let mut c = c.clone();
            c.predictor_settings.learned_min_probability = min_probability;
            let p = crate::predict::build("learned", &c.predictor_settings).unwrap();
            let mut m = Predictive::new(p, &c);
            for &(t, id) in &trace {
                m.access(&req(t, id));
            }
            m.finish(t0 + 330.0).stats.unwrap()
        };
        let s = run(0.0);
        assert_eq!(
            (s.misses_cold, s.misses_expired, s.hits),
            (2, 0, 1),
            "{s:?}"
        );
        assert_eq!(s.origin_fetches_warming, 2, "{s:?}");
        let s = run(1.0);
        assert_eq!(
            (s.misses_cold, s.misses_expired, s.hits),
            (2, 1, 0),
            "{s:?}"
        );
        assert_eq!(s.origin_fetches_warming, 0);
    }

    /// Keys read once each, replayed over 20 TTLs with a budget that could
    /// warm every one of them at every expiry: `learned` warms each at most
    /// once (an unread warm is not followed by another), so its wasted
    /// fetches stay at one per read.
    #[test]
    fn learned_warms_a_key_read_once_at_most_once() {
        let mut c = cfg();
        c.predictive.schedules = true;
        c.predictor_settings.default_ttl = Duration::from_secs(300);
        let p = crate::predict::build("learned", &c.predictor_settings).unwrap();
        let mut m = Predictive::new(p, &c);
        let t0 = 1_000_020.0;
        for id in 0..50 {
            m.access(&req(t0 + f64::from(id as u32), id));
        }
        // One late read keeps the replay going for 20 TTLs.
        m.access(&req(t0 + 6000.0, 1000));
        let s = m.finish(t0 + 6000.0).stats.unwrap();
        assert_eq!(s.origin_fetches_warming, 50, "{s:?}");
        assert_eq!(s.wasted_warms, 50, "{s:?}");
    }
}
