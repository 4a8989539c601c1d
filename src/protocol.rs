//! Wire types of the HTTP API, shared by the server ([`crate::api`]) and the
//! typed client ([`crate::client`]). Plain serde structs: no axum, no engine.
//!
//! Requests reject unknown fields so that a typo is an error, not a no-op.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Strategy, Tunables};
use crate::events::WarmStatus;

/// Priority used when a request names none.
pub const DEFAULT_PRIORITY: u8 = 50;

/// `POST /warm/key`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmKeyRequest {
    pub keys: Vec<String>,
    /// 0..=100, higher first. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Warm even keys warmed within `min_rewarm_interval`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// `POST /warm/pattern`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmPatternRequest {
    /// Glob: `*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\` escapes.
    pub pattern: String,
    /// Most keys to warm. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Default `limit` of a pattern request.
pub const DEFAULT_PATTERN_LIMIT: usize = 1000;

/// `POST /warm/trigger-predictive` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerPredictiveRequest {
    /// Most keys to warm. Default: the `predictive_limit` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Answer to `POST /warm/key` and `POST /warm/trigger-predictive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmResponse {
    pub success: bool,
    /// Keys newly queued by this request.
    pub queued: usize,
    /// The keys of the request, in the order the strategy queued them.
    pub keys: Vec<String>,
    pub job_id: String,
    pub estimated_time_ms: u64,
    /// Keys already queued or in flight, not queued again.
    #[serde(default)]
    pub deduplicated: usize,
    /// Keys warmed within `min_rewarm_interval`, skipped (send `force` to override).
    #[serde(default)]
    pub skipped_recent: usize,
}

/// Answer to `POST /warm/pattern`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmPatternResponse {
    pub success: bool,
    pub pattern: String,
    pub queued: usize,
    pub matched_keys: Vec<String>,
    pub job_id: String,
    pub estimated_time_ms: u64,
    #[serde(default)]
    pub deduplicated: usize,
    #[serde(default)]
    pub skipped_recent: usize,
}

/// One worker in `GET /warm/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: usize,
    /// `idle`, `busy`, `waiting_rate_limit` or `paused`.
    pub state: String,
    pub current_key: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
}

/// Counters of `GET /warm/status`; the same numbers as `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusMetrics {
    /// Keys warmed to completion (success + failure), `warming_jobs_total`.
    pub jobs_total: u64,
    pub success_total: u64,
    pub failure_total: u64,
    pub success_rate: f64,
    /// Origin requests, retries included.
    pub origin_requests: u64,
    pub cache_writes: u64,
    pub rate_limit_hits: u64,
    pub emergency_stops: u64,
    pub avg_duration_ms: f64,
    #[serde(default)]
    pub deduplicated_total: u64,
}

/// `GET /warm/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Jobs with keys still queued or in flight.
    pub active_jobs: usize,
    pub queued_tasks: usize,
    pub worker_status: Vec<WorkerStatus>,
    pub emergency_stop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emergency_reason: Option<String>,
    pub metrics: StatusMetrics,
    /// The predictor in use and, for one that trains, how far it is.
    #[serde(default)]
    pub predictor: PredictorStatus,
    /// Live instances, when several coordinate through Redis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<InstanceStatus>,
}

/// The `predictor` object of `GET /warm/status` (the same figures as the
/// `warming_predictor_*` metrics). Fields other than `name` are present
/// only for a predictor that keeps them (the learned one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictorStatus {
    /// `heuristic`, `frequency` or `learned` (`WARMING_PREDICTOR`).
    pub name: String,
    /// Keys with per-key state (at most `WARMING_LEARNED_MAX_KEYS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracked_keys: Option<usize>,
    /// Labelled examples the online model has trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples: Option<u64>,
    /// Of those, the keys read within the horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_examples: Option<u64>,
    /// Snapshots waiting for their label (one horizon after they were taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_examples: Option<usize>,
    /// Whether the model has trained on enough examples for its
    /// probabilities to be cut (`WARMING_LEARNED_TRAINED_MIN_PROBABILITY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<bool>,
    /// Running log-loss of the online model on each example before it
    /// trained on it (lower is better; 0.693 = a coin toss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_loss: Option<f64>,
}

/// One live instance of a cluster in `GET /warm/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: String,
    /// Address of its HTTP API.
    pub addr: String,
    pub workers: usize,
    /// Unix milliseconds.
    pub started_at_ms: u64,
    /// Unix milliseconds (Redis clock); silent for 3 s = gone.
    pub last_heartbeat_ms: u64,
}

/// `POST /warm/access` body: plain keys (accessed now) and/or timed events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AccessEvent>,
}

/// One access with its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    pub key: String,
    /// Unix seconds (fractions allowed) or an RFC 3339 timestamp; default now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<AccessTime>,
}

/// A point in time as a client may send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AccessTime {
    UnixSeconds(f64),
    Rfc3339(DateTime<Utc>),
}

/// `POST /warm/access` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessResponse {
    pub recorded: usize,
}

/// Where a job came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOutcome {
    pub key: String,
    /// `queued`, `in_flight`, `deduplicated`, `skipped_recent`, or a final
    /// [`WarmStatus`] (`success`, `not_found`, `failed`, `cache_error`),
    /// or `handed_back` when the service stopped before warming it.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /warm/jobs/{job_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub job_id: String,
    /// `key`, `pattern`, `predictive` or `schedule:<name>`.
    pub source: String,
    pub strategy: Strategy,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub done: bool,
    pub total: usize,
    pub queued: usize,
    pub in_flight: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub not_found: usize,
    pub deduplicated: usize,
    pub skipped_recent: usize,
    pub keys: Vec<KeyOutcome>,
}

impl KeyOutcome {
    /// Outcome of a finished key.
    pub fn finished(
        key: String,
        status: WarmStatus,
        attempts: u32,
        duration_ms: u64,
        error: Option<String>,
    ) -> Self {
        KeyOutcome {
            key,
            status: status.as_str().to_string(),
            attempts: Some(attempts),
            duration_ms: Some(duration_ms),
            error,
        }
    }
}

/// `GET /warm/config`, and the answer to `POST /warm/config` (the
/// configuration after the update).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResponse {
    /// The settings `POST /warm/config` may change; durations are
    /// nanoseconds on the wire.
    pub config: Tunables,
    /// Settings fixed for the life of the process (read only).
    pub service: ServiceInfo,
}

/// The `service` object of `GET /warm/config`: what the process was started
/// with and cannot change at run time. Secrets are not shown (`auth` only
/// says whether a token is required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Address the HTTP API is bound to.
    pub listen: String,
    /// The origin: its URL template, or `demo (built-in)`.
    pub origin: String,
    /// HTTP version spoken to the origin: `http1`, `auto` or `http2`.
    pub origin_http: String,
    /// CA file trusted for an `https://` origin besides the Mozilla roots
    /// (`WARMING_ORIGIN_CA_FILE`), when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_ca_file: Option<String>,
    /// `memory`, `redis` or `redis-cluster`.
    pub cache_backend: String,
    /// Prefix of every cache key (empty for none).
    pub cache_prefix: String,
    /// NATS subject of warm-completed events, when NATS is on.
    pub nats_subject: Option<String>,
    /// IANA zone of the schedules.
    pub timezone: String,
    /// Whether the built-in schedules run.
    pub builtin_schedules: bool,
    /// Most keys with access history.
    pub tracker_max_keys: usize,
    /// Most keys in one request.
    pub max_keys_per_request: usize,
    /// Longest key accepted, in bytes.
    pub max_key_len: usize,
    /// Whether `POST` and `DELETE` need a bearer token.
    pub auth: bool,
}

/// `POST /warm/emergency-stop` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    /// Shown as `emergency_reason` in `GET /warm/status`; default
    /// `stopped by an operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Response of `POST /warm/emergency-stop` and `POST /warm/resume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopResponse {
    pub success: bool,
    /// Whether dispatching is stopped now.
    pub emergency_stop: bool,
    /// Whether this request changed it (false: it already was so).
    pub changed: bool,
}

/// `{"error": {"code", "message"}}` of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// Per-field problems, for validation errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<crate::config::FieldError>,
}
