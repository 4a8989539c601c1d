//! Telemetry: the spec's metric names, one Prometheus recorder per engine
//! instance, and named events that emit the log line and the metric together
//! so the two never disagree.
//!
//! Each [`Telemetry`] owns its own recorder instead of installing a global
//! one: several services can then live in one process (the integration tests
//! do this) without sharing counters. `GET /warm/status` reads the atomic
//! mirrors kept here, which are incremented in the same call as the
//! Prometheus counters, so status and `/metrics` always agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::config::Strategy;
use crate::events::WarmStatus;
use crate::protocol::StatusMetrics;

/// Metric names (the spec's, plus a few the service adds).
pub mod names {
    pub const JOBS_TOTAL: &str = "warming_jobs_total";
    pub const SUCCESS_TOTAL: &str = "warming_success_total";
    pub const FAILURE_TOTAL: &str = "warming_failure_total";
    pub const DURATION_SECONDS: &str = "warming_duration_seconds";
    pub const ORIGIN_REQUESTS_TOTAL: &str = "warming_origin_requests_total";
    pub const RATE_LIMIT_HITS_TOTAL: &str = "warming_rate_limit_hits_total";
    pub const EMERGENCY_STOPS_TOTAL: &str = "warming_emergency_stops_total";
    pub const CACHE_WRITES_TOTAL: &str = "warming_cache_writes_total";
    // Added by this implementation.
    pub const DEDUPLICATED_TOTAL: &str = "warming_deduplicated_total";
    pub const SKIPPED_RECENT_TOTAL: &str = "warming_skipped_recent_total";
    pub const QUEUE_LENGTH: &str = "warming_queue_length";
    pub const EMERGENCY_ACTIVE: &str = "warming_emergency_active";
    pub const ACCESSES_TOTAL: &str = "warming_accesses_recorded_total";
    pub const CACHE_READS_TOTAL: &str = "warming_cache_reads_total";
    pub const EVENTS_DROPPED_TOTAL: &str = "warming_events_dropped_total";
    pub const FAILURES_BY_REASON: &str = "warming_failures_by_reason_total";
    pub const ACCESS_LOG_WRITTEN_TOTAL: &str = "warming_access_log_written_total";
    pub const ACCESS_LOG_DROPPED_TOTAL: &str = "warming_access_log_dropped_total";
    pub const PREDICTOR_TRACKED_KEYS: &str = "warming_predictor_tracked_keys";
    pub const PREDICTOR_EXAMPLES: &str = "warming_predictor_examples";
    pub const PREDICTOR_POSITIVE_EXAMPLES: &str = "warming_predictor_positive_examples";
    pub const PREDICTOR_PENDING_EXAMPLES: &str = "warming_predictor_pending_examples";
    pub const PREDICTOR_TRAINED: &str = "warming_predictor_trained";
    pub const PREDICTOR_LOG_LOSS: &str = "warming_predictor_log_loss";
}

const META: Metadata<'static> = Metadata::new("warming", Level::INFO, Some(module_path!()));

/// Counters of one engine, in Prometheus and mirrored for `GET /warm/status`.
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    jobs_by_strategy: [Counter; 3],
    success: Counter,
    failure: Counter,
    failure_by_reason: [Counter; 3],
    duration: Histogram,
    origin_requests: Counter,
    rate_limit_hits: Counter,
    emergency_stops: Counter,
    cache_writes: Counter,
    deduplicated: Counter,
    skipped_recent: Counter,
    accesses: Counter,
    cache_reads: [Counter; 3],
    queue_length: Gauge,
    emergency_active: Gauge,
    events_dropped: Counter,
    access_log: crate::access::log::LogCounters,
    /// `warming_predictor_*`, in the order of [`PREDICTOR_GAUGES`].
    predictor: [Gauge; 6],
    mirror: Mirror,
}

/// The predictor's gauges: name and help.
const PREDICTOR_GAUGES: [(&str, &str); 6] = [
    (
        names::PREDICTOR_TRACKED_KEYS,
        "Keys the learned predictor keeps state for (0 for other predictors)",
    ),
    (
        names::PREDICTOR_EXAMPLES,
        "Labelled examples the learned predictor's online model trained on",
    ),
    (
        names::PREDICTOR_POSITIVE_EXAMPLES,
        "Of those, keys read within the label horizon",
    ),
    (
        names::PREDICTOR_PENDING_EXAMPLES,
        "Training snapshots waiting for their label",
    ),
    (
        names::PREDICTOR_TRAINED,
        "1 once the learned model has trained enough for its probability cut to apply",
    ),
    (
        names::PREDICTOR_LOG_LOSS,
        "Running log-loss of the learned model on examples before training on them",
    ),
];

#[derive(Default)]
struct Mirror {
    jobs: AtomicU64,
    success: AtomicU64,
    failure: AtomicU64,
    origin_requests: AtomicU64,
    cache_writes: AtomicU64,
    rate_limit_hits: AtomicU64,
    emergency_stops: AtomicU64,
    deduplicated: AtomicU64,
    duration_micros: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_quantiles(&[0.5, 0.95, 0.99])
            .expect("static quantiles are valid")
            .build_recorder();
        let handle = recorder.handle();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, help.into());
            recorder.register_counter(&Key::from_name(name), &META)
        };
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            recorder.register_counter(
                &Key::from_parts(name, vec![Label::new(label, value)]),
                &META,
            )
        };
        recorder.describe_counter(
            names::JOBS_TOTAL.into(),
            None,
            "Keys warmed to completion (success or failure), by strategy".into(),
        );
        let jobs_by_strategy =
            Strategy::ALL.map(|s| labelled(names::JOBS_TOTAL, "strategy", s.as_str()));
        let success = counter(
            names::SUCCESS_TOTAL,
            "Keys fetched and written to the cache",
        );
        let failure = counter(names::FAILURE_TOTAL, "Keys that could not be warmed");
        recorder.describe_counter(
            names::FAILURES_BY_REASON.into(),
            None,
            "Failed keys by reason (not_found, failed, cache_error)".into(),
        );
        let failure_by_reason = ["not_found", "failed", "cache_error"]
            .map(|r| labelled(names::FAILURES_BY_REASON, "reason", r));
        recorder.describe_histogram(
            names::DURATION_SECONDS.into(),
            Some(Unit::Seconds),
            "Time to warm one key (origin attempts + cache write)".into(),
        );
        let duration = recorder.register_histogram(&Key::from_name(names::DURATION_SECONDS), &META);
        let origin_requests = counter(
            names::ORIGIN_REQUESTS_TOTAL,
            "Requests sent to the origin, retries included",
        );
        let rate_limit_hits = counter(
            names::RATE_LIMIT_HITS_TOTAL,
            "Origin requests that had to wait for the rate limiter",
        );
        let emergency_stops = counter(
            names::EMERGENCY_STOPS_TOTAL,
            "Automatic emergency stops on high origin latency",
        );
        let cache_writes = counter(names::CACHE_WRITES_TOTAL, "Values written to the cache");
        let deduplicated = counter(
            names::DEDUPLICATED_TOTAL,
            "Keys not queued because already queued or in flight",
        );
        let skipped_recent = counter(
            names::SKIPPED_RECENT_TOTAL,
            "Keys skipped because warmed within min_rewarm_interval",
        );
        let accesses = counter(
            names::ACCESSES_TOTAL,
            "Key accesses recorded for prediction",
        );
        recorder.describe_counter(
            names::CACHE_READS_TOTAL.into(),
            None,
            "GET /cache reads by result (hit, miss, coalesced)".into(),
        );
        let cache_reads =
            ["hit", "miss", "coalesced"].map(|r| labelled(names::CACHE_READS_TOTAL, "result", r));
        recorder.describe_gauge(
            names::QUEUE_LENGTH.into(),
            None,
            "Keys waiting in the warm queue".into(),
        );
        let queue_length = recorder.register_gauge(&Key::from_name(names::QUEUE_LENGTH), &META);
        recorder.describe_gauge(
            names::EMERGENCY_ACTIVE.into(),
            None,
            "1 while dispatch is stopped".into(),
        );
        let emergency_active =
            recorder.register_gauge(&Key::from_name(names::EMERGENCY_ACTIVE), &META);
        let events_dropped = counter(
            names::EVENTS_DROPPED_TOTAL,
            "Warm-completed events NATS could not take",
        );
        let access_log = crate::access::log::LogCounters {
            written: counter(
                names::ACCESS_LOG_WRITTEN_TOTAL,
                "Accesses written to the access log (WARMING_ACCESS_LOG)",
            ),
            dropped: counter(
                names::ACCESS_LOG_DROPPED_TOTAL,
                "Accesses the access log dropped because the disk fell behind",
            ),
        };
        let predictor = PREDICTOR_GAUGES.map(|(name, help)| {
            recorder.describe_gauge(name.into(), None, help.into());
            let g = recorder.register_gauge(&Key::from_name(name), &META);
            g.set(0.0);
            g
        });
        // Make every series visible from the first scrape.
        for c in jobs_by_strategy
            .iter()
            .chain(&failure_by_reason)
            .chain(&cache_reads)
        {
            c.increment(0);
        }
        for c in [
            &success,
            &failure,
            &origin_requests,
            &rate_limit_hits,
            &emergency_stops,
            &cache_writes,
            &deduplicated,
            &skipped_recent,
            &accesses,
            &events_dropped,
            &access_log.written,
            &access_log.dropped,
        ] {
            c.increment(0);
        }
        queue_length.set(0.0);
        emergency_active.set(0.0);
        Telemetry {
            recorder,
            handle,
            jobs_by_strategy,
            success,
            failure,
            failure_by_reason,
            duration,
            origin_requests,
            rate_limit_hits,
            emergency_stops,
            cache_writes,
            deduplicated,
            skipped_recent,
            accesses,
            cache_reads,
            queue_length,
            emergency_active,
            events_dropped,
            access_log,
            predictor,
            mirror: Mirror::default(),
        }
    }

    /// Prometheus text exposition of every metric of this instance.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Periodic housekeeping of the summaries (call every few seconds).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Access to the recorder, for metrics added by other modules.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    /// One key finished warming.
    pub fn warm_finished(
        &self,
        key: &str,
        strategy: Strategy,
        status: WarmStatus,
        took: Duration,
        attempts: u32,
    ) {
        let idx = Strategy::ALL
            .iter()
            .position(|s| *s == strategy)
            .unwrap_or(0);
        self.jobs_by_strategy[idx].increment(1);
        self.mirror.jobs.fetch_add(1, Ordering::Relaxed);
        self.duration.record(took.as_secs_f64());
        self.mirror
            .duration_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        match status {
            WarmStatus::Success => {
                self.success.increment(1);
                self.mirror.success.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(key, %strategy, ms = took.as_millis() as u64, attempts, "warmed");
            }
            other => {
                self.failure.increment(1);
                self.mirror.failure.fetch_add(1, Ordering::Relaxed);
                let r = match other {
                    WarmStatus::NotFound => 0,
                    WarmStatus::CacheError => 2,
                    _ => 1,
                };
                self.failure_by_reason[r].increment(1);
                tracing::info!(key, %strategy, status = other.as_str(), attempts, "warm failed");
            }
        }
    }

    /// One request went to the origin.
    pub fn origin_request(&self) {
        self.origin_requests.increment(1);
        self.mirror.origin_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// An origin request had to wait for the rate limiter.
    pub fn rate_limited(&self) {
        self.rate_limit_hits.increment(1);
        self.mirror.rate_limit_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Dispatch stopped automatically because the origin is slow.
    pub fn emergency_stopped(&self, reason: &str) {
        self.emergency_stops.increment(1);
        self.mirror.emergency_stops.fetch_add(1, Ordering::Relaxed);
        self.emergency_active.set(1.0);
        tracing::warn!(reason, "emergency stop: warming paused");
    }

    /// Dispatch state changed (manual stops, resumes).
    pub fn emergency_active(&self, active: bool, why: &str) {
        self.emergency_active.set(if active { 1.0 } else { 0.0 });
        tracing::warn!(active, why, "emergency state changed");
    }

    pub fn cache_written(&self, n: u64) {
        self.cache_writes.increment(n);
        self.mirror.cache_writes.fetch_add(n, Ordering::Relaxed);
    }

    pub fn deduplicated(&self, n: u64) {
        self.deduplicated.increment(n);
        self.mirror.deduplicated.fetch_add(n, Ordering::Relaxed);
    }

    pub fn skipped_recent(&self, n: u64) {
        self.skipped_recent.increment(n);
    }

    /// The access log's counters.
    pub fn access_log_counters(&self) -> crate::access::log::LogCounters {
        self.access_log.clone()
    }

    pub fn accesses_recorded(&self, n: u64) {
        self.accesses.increment(n);
    }

    /// A `GET /cache` read: 0 hit, 1 miss, 2 coalesced.
    pub fn cache_read(&self, result: crate::readthrough::ReadSource) {
        let i = match result {
            crate::readthrough::ReadSource::Hit => 0,
            crate::readthrough::ReadSource::Origin => 1,
            crate::readthrough::ReadSource::Coalesced => 2,
        };
        self.cache_reads[i].increment(1);
    }

    pub fn queue_length(&self, n: usize) {
        self.queue_length.set(n as f64);
    }

    /// Sets the dropped-events counter to the publisher's running total.
    pub fn events_dropped(&self, total: u64) {
        self.events_dropped.absolute(total);
    }

    /// Sets the `warming_predictor_*` gauges to `status` (0 for a figure
    /// the predictor does not keep).
    pub fn predictor(&self, status: &crate::protocol::PredictorStatus) {
        let values = [
            status.tracked_keys.map(|n| n as f64),
            status.examples.map(|n| n as f64),
            status.positive_examples.map(|n| n as f64),
            status.pending_examples.map(|n| n as f64),
            status.trained.map(|t| f64::from(u8::from(t))),
            status.log_loss,
        ];
        for (g, v) in self.predictor.iter().zip(values) {
            g.set(v.unwrap_or(0.0));
        }
    }

    /// The `metrics` object of `GET /warm/status`.
    pub fn snapshot(&self) -> StatusMetrics {
        let m = &self.mirror;
        let jobs = m.jobs.load(Ordering::Relaxed);
        let success = m.success.load(Ordering::Relaxed);
        StatusMetrics {
            jobs_total: jobs,
            success_total: success,
            failure_total: m.failure.load(Ordering::Relaxed),
            success_rate: if jobs == 0 {
                0.0
            } else {
                success as f64 / jobs as f64
            },
            origin_requests: m.origin_requests.load(Ordering::Relaxed),
            cache_writes: m.cache_writes.load(Ordering::Relaxed),
            rate_limit_hits: m.rate_limit_hits.load(Ordering::Relaxed),
            emergency_stops: m.emergency_stops.load(Ordering::Relaxed),
            avg_duration_ms: if jobs == 0 {
                0.0
            } else {
                m.duration_micros.load(Ordering::Relaxed) as f64 / jobs as f64 / 1000.0
            },
            deduplicated_total: m.deduplicated.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_uses_the_spec_names_and_agrees_with_snapshot() {
        let t = Telemetry::new();
        t.warm_finished(
            "a",
            Strategy::Breadth,
            WarmStatus::Success,
            Duration::from_millis(20),
            1,
        );
        t.warm_finished(
            "b",
            Strategy::Breadth,
            WarmStatus::Failed,
            Duration::from_millis(40),
            4,
        );
        t.origin_request();
        t.cache_written(1);
        let text = t.render();
        assert!(
            text.contains("warming_jobs_total{strategy=\"breadth\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("warming_jobs_total{strategy=\"selective\"} 0"),
            "{text}"
        );
        assert!(text.contains("warming_success_total 1"), "{text}");
        assert!(text.contains("warming_failure_total 1"), "{text}");
        assert!(
            text.contains("warming_duration_seconds{quantile=\"0.5\"}"),
            "{text}"
        );
        assert!(
            text.contains("warming_duration_seconds{quantile=\"0.99\"}"),
            "{text}"
        );
        assert!(text.contains("warming_origin_requests_total 1"), "{text}");
        assert!(text.contains("warming_cache_writes_total 1"), "{text}");
        assert!(text.contains("warming_emergency_stops_total 0"), "{text}");
        assert!(text.contains("warming_rate_limit_hits_total 0"), "{text}");
        let s = t.snapshot();
        assert_eq!((s.jobs_total, s.success_total, s.failure_total), (2, 1, 1));
        assert!((s.avg_duration_ms - 30.0).abs() < 0.01);
        assert!((s.success_rate - 0.5).abs() < 1e-9);
    }
}
