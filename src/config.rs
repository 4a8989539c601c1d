//! Configuration: one typed [`Settings`] built from defaults, then an optional
//! TOML file, then `WARMING_*` environment variables, then validation.
//!
//! [`Tunables`] is the part that `POST /warm/config` may change at run time;
//! [`ServiceConfig`] is fixed for the life of the process (addresses, backends).
//! Runtime updates are applied to a copy, validated, and only then swapped in
//! (see [`crate::warm::Engine::update_config`]), so a bad update changes nothing.
//!
//! Units follow the spec: in the environment and the TOML file `default_ttl`,
//! `origin_timeout`, `min_rewarm_interval` and `emergency_cooldown` are seconds,
//! `backoff_base` and `emergency_threshold` milliseconds (a string such as
//! `"250ms"` or `"2h"` is also accepted). Over HTTP every duration is reported
//! in nanoseconds, as the spec's `GET /warm/config` example does; an update may
//! send nanoseconds or a string with a unit.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the keys of one request are ordered and prioritised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Top-N keys by access frequency; priority falls linearly with rank.
    Selective,
    /// Fewer `:` segments first: parents before children.
    Breadth,
    /// `importance x hotness / cost`, highest first.
    Priority,
}

impl Strategy {
    /// Every strategy, in the order the spec lists them.
    pub const ALL: [Strategy; 3] = [Strategy::Selective, Strategy::Breadth, Strategy::Priority];

    /// The name used in JSON, the environment and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Selective => "selective",
            Strategy::Breadth => "breadth",
            Strategy::Priority => "priority",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "selective" => Ok(Strategy::Selective),
            "breadth" => Ok(Strategy::Breadth),
            "priority" => Ok(Strategy::Priority),
            other => Err(format!(
                "unknown strategy {other:?}; allowed: selective, breadth, priority"
            )),
        }
    }
}

/// Settings that may change while the service runs (`POST /warm/config`).
///
/// Serialized as the `config` object of `GET /warm/config`, durations as
/// whole nanoseconds (see [`nanos`]); the typed client reads it back the
/// same way ([`crate::protocol::ConfigResponse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tunables {
    /// Most origin requests per second, retries included; 0 turns the limit off.
    /// Default 100. Env `WARMING_MAX_ORIGIN_RPS`.
    pub max_origin_rps: u32,
    /// Most cache writes sent to the backend in one pipeline. Default 50.
    pub max_batch_size: usize,
    /// Number of warming workers. Default 10.
    pub concurrent_warmers: usize,
    /// TTL of a warmed value when the origin sends no `Cache-Control: max-age`. Default 1 h.
    #[serde(with = "nanos")]
    pub default_ttl: Duration,
    /// Timeout of one origin request. Default 5 s.
    #[serde(with = "nanos")]
    pub origin_timeout: Duration,
    /// Retries after the first attempt (so up to `retry_attempts + 1` requests). Default 3.
    pub retry_attempts: u32,
    /// First retry delay; doubles each retry, with jitter. Default 100 ms.
    #[serde(with = "nanos")]
    pub backoff_base: Duration,
    /// Emergency stop when p95 origin latency over the window exceeds this. Default 2 s.
    #[serde(with = "nanos")]
    pub emergency_threshold: Duration,
    /// Strategy for requests that name none. Default `priority`.
    pub default_strategy: Strategy,
    /// A key warmed successfully this recently is skipped unless forced. Default 30 s.
    #[serde(with = "nanos")]
    pub min_rewarm_interval: Duration,
    /// Random extra TTL, as a fraction of the TTL (0.05 = up to +5%). Default 0.05.
    pub ttl_jitter: f64,
    /// Number of most recent origin requests whose p95 latency is watched. Default 50.
    pub emergency_window: usize,
    /// Wait after an emergency stop before probing the origin again. Default 10 s.
    #[serde(with = "nanos")]
    pub emergency_cooldown: Duration,
    /// Predictor used by predictive warming (`heuristic` or `frequency`). Default `heuristic`.
    pub predictor: String,
    /// Keys warmed by `POST /warm/trigger-predictive` when no limit is given. Default 100.
    pub predictive_limit: usize,
    /// The window the predictor predicts for. Default 1 h.
    #[serde(with = "nanos")]
    pub predict_window: Duration,
}

impl Default for Tunables {
    fn default() -> Self {
        Tunables {
            max_origin_rps: 100,
            max_batch_size: 50,
            concurrent_warmers: 10,
            default_ttl: Duration::from_secs(3600),
            origin_timeout: Duration::from_secs(5),
            retry_attempts: 3,
            backoff_base: Duration::from_millis(100),
            emergency_threshold: Duration::from_millis(2000),
            default_strategy: Strategy::Priority,
            min_rewarm_interval: Duration::from_secs(30),
            ttl_jitter: 0.05,
            emergency_window: 50,
            emergency_cooldown: Duration::from_secs(10),
            predictor: "heuristic".to_string(),
            predictive_limit: 100,
            predict_window: Duration::from_secs(3600),
        }
    }
}

/// Predictor names the service knows; see [`crate::predict::by_name`].
pub const PREDICTORS: &[&str] = &["heuristic", "frequency", "learned"];

/// One invalid setting: which field, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn check_range<T: PartialOrd + fmt::Display>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: T,
    min: T,
    max: T,
    unit: &str,
) {
    if value < min || value > max {
        errors.push(FieldError {
            field: field.to_string(),
            message: format!("{value}{unit} is out of range; allowed {min}{unit}..={max}{unit}"),
        });
    }
}

fn check_duration(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Duration,
    min: Duration,
    max: Duration,
) {
    if value < min || value > max {
        errors.push(FieldError {
            field: field.to_string(),
            message: format!(
                "{} is out of range; allowed {}..={}",
                humantime::format_duration(value),
                humantime::format_duration(min),
                humantime::format_duration(max)
            ),
        });
    }
}

/// Allowed values of the tunables: [`Tunables::validate`] checks them, and
/// [`TunablesUpdate::from_json`] names them when a value has the wrong type.
mod bounds {
    use std::ops::RangeInclusive;
    use std::time::Duration;

    pub const MAX_ORIGIN_RPS: RangeInclusive<u32> = 0..=1_000_000;
    pub const MAX_BATCH_SIZE: RangeInclusive<usize> = 1..=10_000;
    pub const CONCURRENT_WARMERS: RangeInclusive<usize> = 1..=1024;
    pub const DEFAULT_TTL: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(365 * 86_400);
    pub const ORIGIN_TIMEOUT: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(600);
    pub const RETRY_ATTEMPTS: RangeInclusive<u32> = 0..=20;
    pub const BACKOFF_BASE: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(60);
    pub const EMERGENCY_THRESHOLD: RangeInclusive<Duration> =
        Duration::from_millis(1)..=Duration::from_secs(600);
    pub const MIN_REWARM_INTERVAL: RangeInclusive<Duration> =
        Duration::ZERO..=Duration::from_secs(86_400);
    /// Written `0.0..=0.5` in messages.
    pub const TTL_JITTER: RangeInclusive<f64> = 0.0..=0.5;
    pub const EMERGENCY_WINDOW: RangeInclusive<usize> = 1..=10_000;
    pub const EMERGENCY_COOLDOWN: RangeInclusive<Duration> =
        Duration::from_millis(10)..=Duration::from_secs(3600);
    pub const PREDICTIVE_LIMIT: RangeInclusive<usize> = 1..=100_000;
    pub const PREDICT_WINDOW: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(7 * 86_400);
}

/// `min..=max` as range errors write it.
fn range_text<T: fmt::Display>(range: &RangeInclusive<T>) -> String {
    format!("{}..={}", range.start(), range.end())
}

/// A duration range as range errors write it (`1s..=1year 5h 49m 12s`).
fn duration_range_text(range: &RangeInclusive<Duration>) -> String {
    format!(
        "{}..={}",
        humantime::format_duration(*range.start()),
        humantime::format_duration(*range.end())
    )
}

fn check_in<T: PartialOrd + fmt::Display + Copy>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: T,
    range: &RangeInclusive<T>,
) {
    check_range(errors, field, value, *range.start(), *range.end(), "");
}

fn check_duration_in(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: Duration,
    range: &RangeInclusive<Duration>,
) {
    check_duration(errors, field, value, *range.start(), *range.end());
}

impl Tunables {
    /// Every violated bound, one entry per field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        use bounds::*;
        let mut e = Vec::new();
        check_in(
            &mut e,
            "max_origin_rps",
            self.max_origin_rps,
            &MAX_ORIGIN_RPS,
        );
        check_in(
            &mut e,
            "max_batch_size",
            self.max_batch_size,
            &MAX_BATCH_SIZE,
        );
        check_in(
            &mut e,
            "concurrent_warmers",
            self.concurrent_warmers,
            &CONCURRENT_WARMERS,
        );
        check_duration_in(&mut e, "default_ttl", self.default_ttl, &DEFAULT_TTL);
        check_duration_in(
            &mut e,
            "origin_timeout",
            self.origin_timeout,
            &ORIGIN_TIMEOUT,
        );
        check_in(
            &mut e,
            "retry_attempts",
            self.retry_attempts,
            &RETRY_ATTEMPTS,
        );
        check_duration_in(&mut e, "backoff_base", self.backoff_base, &BACKOFF_BASE);
        check_duration_in(
            &mut e,
            "emergency_threshold",
            self.emergency_threshold,
            &EMERGENCY_THRESHOLD,
        );
        check_duration_in(
            &mut e,
            "min_rewarm_interval",
            self.min_rewarm_interval,
            &MIN_REWARM_INTERVAL,
        );
        if !TTL_JITTER.contains(&self.ttl_jitter) || self.ttl_jitter.is_nan() {
            e.push(FieldError {
                field: "ttl_jitter".into(),
                message: format!("{} is out of range; allowed 0.0..=0.5", self.ttl_jitter),
            });
        }
        check_in(
            &mut e,
            "emergency_window",
            self.emergency_window,
            &EMERGENCY_WINDOW,
        );
        check_duration_in(
            &mut e,
            "emergency_cooldown",
            self.emergency_cooldown,
            &EMERGENCY_COOLDOWN,
        );
        if !PREDICTORS.contains(&self.predictor.as_str()) {
            e.push(FieldError {
                field: "predictor".into(),
                message: format!(
                    "unknown predictor {:?}; allowed: {}",
                    self.predictor,
                    PREDICTORS.join(", ")
                ),
            });
        }
        check_in(
            &mut e,
            "predictive_limit",
            self.predictive_limit,
            &PREDICTIVE_LIMIT,
        );
        check_duration_in(
            &mut e,
            "predict_window",
            self.predict_window,
            &PREDICT_WINDOW,
        );
        if e.is_empty() { Ok(()) } else { Err(e) }
    }

    /// The JSON shape of `GET /warm/config`: durations in nanoseconds.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("tunables serialize to JSON")
    }
}

/// Serde of a [`Duration`] as whole nanoseconds, the unit `GET /warm/config`
/// reports durations in (as the spec's example does). Use with
/// `#[serde(with = "warming::config::nanos")]`.
pub mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as nanoseconds (`u64::MAX` past about 584 years).
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Reads a whole number of nanoseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_nanos)
    }
}

/// A duration as it arrives over HTTP: nanoseconds, or a string with a unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DurationInput {
    /// Whole nanoseconds (a bare JSON number).
    Nanos(u64),
    /// A string with a unit: `"250ms"`, `"5s"`, `"2h"`.
    Text(String),
}

impl From<Duration> for DurationInput {
    /// Sent as nanoseconds (`u64::MAX` past about 584 years, which every
    /// bound refuses).
    fn from(d: Duration) -> Self {
        DurationInput::Nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl From<&str> for DurationInput {
    /// Sent as text, e.g. `"250ms"`; the service parses it.
    fn from(s: &str) -> Self {
        DurationInput::Text(s.to_string())
    }
}

impl DurationInput {
    fn resolve(&self, field: &str, unit: Duration) -> Result<Duration, FieldError> {
        match self {
            DurationInput::Nanos(n) => Ok(Duration::from_nanos(
                (unit.as_nanos() as u64).saturating_mul(*n),
            )),
            DurationInput::Text(s) => parse_duration_text(s).map_err(|m| FieldError {
                field: field.to_string(),
                message: m,
            }),
        }
    }
}

fn parse_duration_text(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. \"250ms\", \"5s\", \"1h\""))
}

/// A partial update of [`Tunables`], as `POST /warm/config` takes it (and
/// [`crate::client::WarmingClient::update_config`] sends it: fields left
/// `None` are not sent and keep their value). Unknown fields are rejected, so
/// a typo never silently does nothing.
///
/// ```
/// use std::time::Duration;
/// use warming::config::TunablesUpdate;
///
/// let update = TunablesUpdate {
///     max_origin_rps: Some(200),
///     backoff_base: Some(Duration::from_millis(250).into()),
///     default_ttl: Some("2h".into()),
///     ..Default::default()
/// };
/// assert_eq!(
///     serde_json::to_value(&update).unwrap(),
///     serde_json::json!({"max_origin_rps": 200, "backoff_base": 250_000_000, "default_ttl": "2h"})
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunablesUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_origin_rps: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrent_warmers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_timeout: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_attempts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_base: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency_threshold: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_strategy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_rewarm_interval: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency_window: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency_cooldown: Option<DurationInput>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictive_limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predict_window: Option<DurationInput>,
}

/// Why a `POST /warm/config` body could not be read as a [`TunablesUpdate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// A known field holds a value of the wrong type (a negative or
    /// fractional number, a string for a number, ...): reported like a
    /// range error, with the field and what it allows.
    Field(FieldError),
    /// Not an object, or an unknown field.
    Request(String),
}

/// What one field of an update takes, for [`UpdateError::Field`] messages.
enum Expected {
    /// A whole number in this range (as text).
    Integer(String),
    /// Any number in this range.
    Number(String),
    /// Nanoseconds or a string with a unit, in this range.
    Duration(String),
    /// A string, one of these names.
    Name(String),
}

impl Expected {
    fn of(field: &str) -> Option<Expected> {
        use bounds::*;
        let duration = |r: &RangeInclusive<Duration>| Expected::Duration(duration_range_text(r));
        Some(match field {
            "max_origin_rps" => Expected::Integer(range_text(&MAX_ORIGIN_RPS)),
            "max_batch_size" => Expected::Integer(range_text(&MAX_BATCH_SIZE)),
            "concurrent_warmers" => Expected::Integer(range_text(&CONCURRENT_WARMERS)),
            "retry_attempts" => Expected::Integer(range_text(&RETRY_ATTEMPTS)),
            "emergency_window" => Expected::Integer(range_text(&EMERGENCY_WINDOW)),
            "predictive_limit" => Expected::Integer(range_text(&PREDICTIVE_LIMIT)),
            "ttl_jitter" => Expected::Number("0.0..=0.5".into()),
            "default_ttl" => duration(&DEFAULT_TTL),
            "origin_timeout" => duration(&ORIGIN_TIMEOUT),
            "backoff_base" => duration(&BACKOFF_BASE),
            "emergency_threshold" => duration(&EMERGENCY_THRESHOLD),
            "min_rewarm_interval" => duration(&MIN_REWARM_INTERVAL),
            "emergency_cooldown" => duration(&EMERGENCY_COOLDOWN),
            "predict_window" => duration(&PREDICT_WINDOW),
            "default_strategy" => Expected::Name(
                Strategy::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            "predictor" => Expected::Name(PREDICTORS.join(", ")),
            _ => return None,
        })
    }

    /// Why `got` does not fit, in the words of the range errors.
    fn message(&self, got: &serde_json::Value) -> String {
        let shown = shown(got);
        // A whole number of the wrong sign or size is out of range; anything
        // else is of the wrong kind.
        let integer = got.is_i64() || got.is_u64();
        match self {
            Expected::Integer(range) if integer => {
                format!("{shown} is out of range; allowed {range}")
            }
            Expected::Integer(range) => format!("{shown} is not an integer; allowed {range}"),
            Expected::Number(range) => format!("{shown} is not a number; allowed {range}"),
            Expected::Duration(range) if integer => format!(
                "{shown} is out of range; allowed {range} (nanoseconds, or a string with a unit)"
            ),
            Expected::Duration(range) => format!(
                "{shown} is not a duration; allowed {range} as nanoseconds or a string with a \
                 unit such as \"250ms\" or \"2h\""
            ),
            Expected::Name(names) => format!("{shown} is not a name; allowed: {names}"),
        }
    }
}

/// A JSON value for an error message: scalars as written (long strings cut
/// short), containers by kind.
fn shown(v: &serde_json::Value) -> String {
    const MAX_CHARS: usize = 40;
    match v {
        serde_json::Value::Array(_) => "an array".into(),
        serde_json::Value::Object(_) => "an object".into(),
        serde_json::Value::String(s) if s.chars().count() > MAX_CHARS => {
            let cut: String = s.chars().take(MAX_CHARS).collect();
            format!("{cut:?}...")
        }
        other => other.to_string(),
    }
}

impl TunablesUpdate {
    /// Reads an update from a JSON body. A value of the wrong type in a
    /// known field is an [`UpdateError::Field`] naming the field and what it
    /// allows (as [`Tunables::validate`] reports a value out of range);
    /// anything else that does not fit is an [`UpdateError::Request`].
    pub fn from_json(body: &serde_json::Value) -> Result<TunablesUpdate, UpdateError> {
        serde_path_to_error::deserialize(body).map_err(|e| {
            let field = match e.path().iter().next() {
                Some(serde_path_to_error::Segment::Map { key }) => Some(key.as_str()),
                _ => None,
            };
            let known = field.and_then(|f| Some((f, Expected::of(f)?, body.get(f)?)));
            match known {
                Some((field, expected, got)) => UpdateError::Field(FieldError {
                    field: field.to_string(),
                    message: expected.message(got),
                }),
                None => UpdateError::Request(e.into_inner().to_string()),
            }
        })
    }

    /// `base` with this update applied, validated; `base` itself is untouched.
    /// `duration_unit` is what a bare number means (nanoseconds over HTTP).
    pub fn apply_to(
        &self,
        base: &Tunables,
        duration_unit: Duration,
    ) -> Result<Tunables, Vec<FieldError>> {
        let mut t = base.clone();
        let mut errors = Vec::new();
        macro_rules! plain {
            ($($f:ident),*) => { $( if let Some(v) = &self.$f { t.$f = v.clone(); } )* };
        }
        plain!(
            max_origin_rps,
            max_batch_size,
            concurrent_warmers,
            retry_attempts,
            ttl_jitter,
            emergency_window,
            predictor,
            predictive_limit
        );
        macro_rules! durations {
            ($($f:ident),*) => { $(
                if let Some(v) = &self.$f {
                    match v.resolve(stringify!($f), duration_unit) {
                        Ok(d) => t.$f = d,
                        Err(e) => errors.push(e),
                    }
                }
            )* };
        }
        durations!(
            default_ttl,
            origin_timeout,
            backoff_base,
            emergency_threshold,
            min_rewarm_interval,
            emergency_cooldown,
            predict_window
        );
        if let Some(s) = &self.default_strategy {
            match s.parse() {
                Ok(st) => t.default_strategy = st,
                Err(m) => errors.push(FieldError {
                    field: "default_strategy".into(),
                    message: m,
                }),
            }
        }
        if let Err(mut e) = t.validate() {
            errors.append(&mut e);
        }
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }
}

/// Settings fixed for the life of the process.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Address the HTTP API listens on. Default `0.0.0.0:4000`.
    pub listen: String,
    /// Origin URL template with `{key}`; `None` uses the built-in demo origin.
    pub origin_url: Option<String>,
    /// HTTP version spoken to the origin. Default `http1`.
    pub origin_http: OriginHttp,
    /// PEM file of CA certificates trusted for an `https://` origin besides
    /// the Mozilla roots; `None` = those roots only.
    pub origin_ca_file: Option<PathBuf>,
    /// `memory://` (default) or `redis://host:port/db`.
    pub cache_url: String,
    /// Prefix put before every key written to the cache. Default empty.
    pub cache_prefix: String,
    /// Most entries the embedded cache holds. Default 1,000,000.
    pub memory_cache_capacity: u64,
    /// NATS server for warm-completed events; `None` disables publishing.
    pub nats_url: Option<String>,
    /// Subject (and JetStream stream subject) for warm-completed events.
    pub nats_subject: String,
    /// JetStream stream that holds the events. Default `WARMING`.
    pub nats_stream: String,
    /// Bearer token required on every mutating endpoint; `None` = no auth.
    pub api_token: Option<String>,
    /// Where custom schedules and the pending queue are kept across restarts.
    pub state_dir: PathBuf,
    /// Time zone of the schedules (IANA name). Default `UTC`.
    pub timezone: String,
    /// Whether the spec's three built-in schedules run. Default true.
    pub builtin_schedules: bool,
    /// Hard cap on keys whose access history is kept. Default 1,000,000.
    pub tracker_max_keys: usize,
    /// Width of one access-history bucket. Default 15 min (5 buckets kept).
    pub tracker_bucket: Duration,
    /// Most keys in one request. Default 10,000.
    pub max_keys_per_request: usize,
    /// Longest key accepted, in bytes. Default 1024.
    pub max_key_len: usize,
    /// Largest request body accepted, in bytes. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Finished jobs remembered for `GET /warm/jobs/{id}`. Default 1000.
    pub jobs_retained: usize,
    /// `none` (default: one independent instance) or `redis` (several
    /// instances share queue, rate limit, dedup, schedules and state).
    pub coordination: Coordination,
    /// Redis used for coordination; default: `cache_url` when that is Redis.
    pub coordination_url: Option<String>,
    /// Instances with the same namespace form one service. Default `default`.
    pub cluster_namespace: String,
    /// This instance's id in the cluster; default `<hostname>-<pid>`.
    pub instance_id: Option<String>,
    /// A claimed key not acknowledged for this long is taken over by another
    /// instance (its owner is presumed dead). Default 30 s.
    pub visibility_timeout: Duration,
    /// Append every recorded access to this file as JSON lines (the
    /// `access-jsonl` format `warming replay` reads); unset = off.
    pub access_log: Option<PathBuf>,
    /// Rotate the access log to `<path>.1` past this many bytes. Default 256 MiB.
    pub access_log_max_bytes: u64,
    /// ONNX model for the learned predictor (needs the `onnx` feature).
    pub predictor_model: Option<PathBuf>,
    /// Keys with learned-predictor feature state. Default 262,144.
    pub learned_max_keys: usize,
    /// The learned predictor's expiry gate (the TTL it assumes); default `default_ttl`; 0 = off.
    pub learned_idle_gate: Option<Duration>,
    /// Width of the band around each expiry the learned predictor targets. Default 120 s.
    pub learned_band: Duration,
    /// Keys the learned model scores under this are never predicted. Default 0.
    pub learned_min_probability: f64,
    /// Keys the learned online model, once trained on 500 labelled
    /// examples, scores under this are not predicted. Default 0.5.
    pub learned_trained_min_probability: f64,
}

/// HTTP version spoken to the origin (`WARMING_ORIGIN_HTTP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OriginHttp {
    /// HTTP/1.1 on `http://`; on `https://`, HTTP/2 when the origin offers it
    /// (TLS ALPN), else HTTP/1.1.
    Auto,
    /// HTTP/1.1 only, over a pool of keep-alive connections (the default:
    /// load spreads over many connections, which a connection-balancing
    /// load balancer in front of the origin needs; one HTTP/2 connection
    /// would carry every fetch).
    #[default]
    Http1,
    /// HTTP/2 only, also on `http://` without an upgrade ("prior knowledge",
    /// h2c): many requests multiplexed on each connection. The origin must
    /// speak HTTP/2 on that port (nginx: `listen ... http2`).
    Http2,
}

impl OriginHttp {
    /// The name used in configuration and `GET /warm/config`.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginHttp::Auto => "auto",
            OriginHttp::Http1 => "http1",
            OriginHttp::Http2 => "http2",
        }
    }
}

impl FromStr for OriginHttp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(OriginHttp::Auto),
            "http1" | "http/1.1" | "1.1" | "1" | "" => Ok(OriginHttp::Http1),
            "http2" | "h2" | "h2c" | "2" => Ok(OriginHttp::Http2),
            other => Err(format!(
                "unknown origin_http {other:?}; allowed: auto, http1, http2"
            )),
        }
    }
}

/// How instances coordinate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coordination {
    /// A single, independent instance.
    #[default]
    None,
    /// Shared state in Redis.
    Redis,
}

impl FromStr for Coordination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "" => Ok(Coordination::None),
            "redis" => Ok(Coordination::Redis),
            other => Err(format!(
                "unknown coordination {other:?}; allowed: none, redis"
            )),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "0.0.0.0:4000".into(),
            origin_url: None,
            origin_http: OriginHttp::Http1,
            origin_ca_file: None,
            cache_url: "memory://".into(),
            cache_prefix: String::new(),
            memory_cache_capacity: 1_000_000,
            nats_url: None,
            nats_subject: "warming.completed".into(),
            nats_stream: "WARMING".into(),
            api_token: None,
            state_dir: PathBuf::from("warming-state"),
            timezone: "UTC".into(),
            builtin_schedules: true,
            tracker_max_keys: 1_000_000,
            tracker_bucket: Duration::from_secs(15 * 60),
            max_keys_per_request: 10_000,
            max_key_len: 1024,
            max_body_bytes: 4 * 1024 * 1024,
            jobs_retained: 1000,
            coordination: Coordination::None,
            coordination_url: None,
            cluster_namespace: "default".into(),
            instance_id: None,
            visibility_timeout: Duration::from_secs(30),
            access_log: None,
            access_log_max_bytes: 256 << 20,
            predictor_model: None,
            learned_max_keys: 1 << 18,
            learned_idle_gate: None,
            learned_band: Duration::from_secs(120),
            learned_min_probability: 0.0,
            learned_trained_min_probability: f64::from(
                crate::predict::learned::DEFAULT_TRAINED_MIN_PROBABILITY,
            ),
        }
    }
}

impl ServiceConfig {
    /// Every violated rule, one entry per field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Vec::new();
        if let Some(url) = &self.origin_url {
            if !url.contains("{key}") {
                e.push(FieldError {
                    field: "origin_url".into(),
                    message: format!(
                        "{url:?} has no {{key}} placeholder, e.g. http://origin:8080/items/{{key}}"
                    ),
                });
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                e.push(FieldError {
                    field: "origin_url".into(),
                    message: format!("{url:?} must start with http:// or https://"),
                });
            }
        }
        if !(self.cache_url.starts_with("memory://")
            || self.cache_url.starts_with("redis://")
            || self.cache_url.starts_with("rediss://")
            || self.cache_url.starts_with("redis+cluster://"))
        {
            e.push(FieldError {
                field: "cache_url".into(),
                message: format!(
                    "{:?}: allowed schemes are memory://, redis:// and redis+cluster://",
                    self.cache_url
                ),
            });
        }
        if self.timezone.parse::<chrono_tz::Tz>().is_err() {
            e.push(FieldError {
                field: "timezone".into(),
                message: format!(
                    "{:?} is not an IANA time zone such as UTC or Europe/Paris",
                    self.timezone
                ),
            });
        }
        check_range(
            &mut e,
            "tracker_max_keys",
            self.tracker_max_keys,
            1_000,
            100_000_000,
            "",
        );
        check_duration(
            &mut e,
            "tracker_bucket",
            self.tracker_bucket,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        );
        check_range(
            &mut e,
            "max_keys_per_request",
            self.max_keys_per_request,
            1,
            1_000_000,
            "",
        );
        check_range(&mut e, "max_key_len", self.max_key_len, 1, 65_536, "");
        check_range(
            &mut e,
            "max_body_bytes",
            self.max_body_bytes,
            1024,
            1 << 30,
            "",
        );
        check_range(
            &mut e,
            "jobs_retained",
            self.jobs_retained,
            1,
            1_000_000,
            "",
        );
        check_range(
            &mut e,
            "memory_cache_capacity",
            self.memory_cache_capacity,
            1,
            u64::MAX,
            "",
        );
        if self.coordination == Coordination::Redis && self.coordination_redis_url().is_none() {
            e.push(FieldError {
                field: "coordination_url".into(),
                message: "coordination=redis needs WARMING_COORDINATION_URL=redis://... (or a redis:// cache_url)".into(),
            });
        }
        if self.cluster_namespace.is_empty()
            || !self
                .cluster_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            e.push(FieldError {
                field: "cluster_namespace".into(),
                message: "use 1 or more of A-Z a-z 0-9 - _ .".into(),
            });
        }
        check_range(
            &mut e,
            "access_log_max_bytes",
            self.access_log_max_bytes,
            4096,
            1 << 40,
            "",
        );
        check_range(
            &mut e,
            "learned_max_keys",
            self.learned_max_keys,
            1_000,
            100_000_000,
            "",
        );
        for (field, value) in [
            ("learned_min_probability", self.learned_min_probability),
            (
                "learned_trained_min_probability",
                self.learned_trained_min_probability,
            ),
        ] {
            if !(0.0..=1.0).contains(&value) {
                e.push(FieldError {
                    field: field.into(),
                    message: format!("{value} is out of range; allowed 0.0..=1.0"),
                });
            }
        }
        if let Some(path) = &self.predictor_model {
            if !path.is_file() {
                e.push(FieldError {
                    field: "predictor_model".into(),
                    message: format!("{} is not a readable file", path.display()),
                });
            } else if !cfg!(feature = "onnx") {
                e.push(FieldError {
                    field: "predictor_model".into(),
                    message: "this build has no ONNX support; build with `--features onnx`".into(),
                });
            }
        }
        check_duration(
            &mut e,
            "visibility_timeout",
            self.visibility_timeout,
            Duration::from_secs(1),
            Duration::from_secs(3600),
        );
        if self.nats_subject.is_empty() || self.nats_subject.contains(' ') {
            e.push(FieldError {
                field: "nats_subject".into(),
                message: "must be a non-empty NATS subject without spaces".into(),
            });
        }
        if e.is_empty() { Ok(()) } else { Err(e) }
    }
}

impl ServiceConfig {
    /// The Redis that coordinates instances: `coordination_url`, else a
    /// single-node Redis `cache_url`.
    pub fn coordination_redis_url(&self) -> Option<String> {
        self.coordination_url.clone().or_else(|| {
            (self.cache_url.starts_with("redis://") || self.cache_url.starts_with("rediss://"))
                .then(|| self.cache_url.clone())
        })
    }

    /// What predictors are built with, given the current `default_ttl`.
    pub fn predictor_settings(&self, default_ttl: Duration) -> crate::predict::PredictorSettings {
        crate::predict::PredictorSettings {
            default_ttl,
            model_path: self.predictor_model.clone(),
            learned_max_keys: self.learned_max_keys,
            learned_idle_gate: self.learned_idle_gate,
            learned_band: Some(self.learned_band),
            learned_min_probability: self.learned_min_probability as f32,
            learned_trained_min_probability: self.learned_trained_min_probability as f32,
            seed: None,
        }
    }

    /// `instance_id`, or `<hostname>-<pid>`.
    pub fn effective_instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "warming".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// The whole configuration of one process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub tunables: Tunables,
    pub service: ServiceConfig,
}

/// Loading failed; every problem is listed, not only the first.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<FieldError>);

/// Where variables come from: the process environment in production, a map in tests.
pub trait EnvSource {
    fn get(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

impl EnvSource for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Reads raw string values by lower-case field name from the TOML file and the
/// environment, then converts them with the units of the environment.
struct Layer<'a> {
    file: Option<&'a toml::Table>,
    env: &'a dyn EnvSource,
    errors: Vec<FieldError>,
}

impl Layer<'_> {
    /// The value for `field`: the environment wins over the file.
    fn raw(&mut self, field: &str) -> Option<String> {
        let var = format!("WARMING_{}", field.to_ascii_uppercase());
        if let Some(v) = self.env.get(&var) {
            return Some(v);
        }
        let v = self.file?.get(field)?;
        Some(match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn parse<T: FromStr>(&mut self, field: &str, target: &mut T)
    where
        T::Err: fmt::Display,
    {
        if let Some(raw) = self.raw(field) {
            match raw.trim().parse::<T>() {
                Ok(v) => *target = v,
                Err(e) => self.errors.push(FieldError {
                    field: field.to_string(),
                    message: format!("{raw:?}: {e}"),
                }),
            }
        }
    }

    fn string(&mut self, field: &str, target: &mut String) {
        if let Some(raw) = self.raw(field) {
            *target = raw;
        }
    }

    fn opt_string(&mut self, field: &str, target: &mut Option<String>) {
        if let Some(raw) = self.raw(field) {
            *target = Some(raw);
        }
    }

    /// A duration: a bare number is in `unit`; a string may carry its own unit.
    fn duration(&mut self, field: &str, unit: Duration, target: &mut Duration) {
        if let Some(raw) = self.raw(field) {
            let raw = raw.trim().trim_matches('"').to_string();
            let parsed = if let Ok(n) = raw.parse::<f64>() {
                if n.is_finite() && n >= 0.0 {
                    Ok(unit.mul_f64(n))
                } else {
                    Err(format!("{raw:?} must be a non-negative number"))
                }
            } else {
                parse_duration_text(&raw)
            };
            match parsed {
                Ok(d) => *target = d,
                Err(m) => self.errors.push(FieldError {
                    field: field.to_string(),
                    message: m,
                }),
            }
        }
    }

    fn boolean(&mut self, field: &str, target: &mut bool) {
        if let Some(raw) = self.raw(field) {
            match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "on" | "yes" => *target = true,
                "0" | "false" | "off" | "no" => *target = false,
                _ => self.errors.push(FieldError {
                    field: field.to_string(),
                    message: format!("{raw:?}: use true or false"),
                }),
            }
        }
    }
}

const SECOND: Duration = Duration::from_secs(1);
const MILLI: Duration = Duration::from_millis(1);

impl Settings {
    /// Defaults, then the TOML file (if any), then the environment, then validation.
    pub fn load(file: Option<&Path>, env: &dyn EnvSource) -> Result<Settings, ConfigError> {
        let table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(vec![FieldError {
                        field: "config_file".into(),
                        message: format!("cannot read {}: {e}", path.display()),
                    }])
                })?;
                Some(text.parse::<toml::Table>().map_err(|e| {
                    ConfigError(vec![FieldError {
                        field: "config_file".into(),
                        message: format!("{} is not valid TOML: {e}", path.display()),
                    }])
                })?)
            }
            None => None,
        };
        let mut l = Layer {
            file: table.as_ref(),
            env,
            errors: Vec::new(),
        };
        let mut t = Tunables::default();
        l.parse("max_origin_rps", &mut t.max_origin_rps);
        l.parse("max_batch_size", &mut t.max_batch_size);
        l.parse("concurrent_warmers", &mut t.concurrent_warmers);
        l.duration("default_ttl", SECOND, &mut t.default_ttl);
        l.duration("origin_timeout", SECOND, &mut t.origin_timeout);
        l.parse("retry_attempts", &mut t.retry_attempts);
        l.duration("backoff_base", MILLI, &mut t.backoff_base);
        l.duration("emergency_threshold", MILLI, &mut t.emergency_threshold);
        l.parse("default_strategy", &mut t.default_strategy);
        l.duration("min_rewarm_interval", SECOND, &mut t.min_rewarm_interval);
        l.parse("ttl_jitter", &mut t.ttl_jitter);
        l.parse("emergency_window", &mut t.emergency_window);
        l.duration("emergency_cooldown", SECOND, &mut t.emergency_cooldown);
        l.string("predictor", &mut t.predictor);
        l.parse("predictive_limit", &mut t.predictive_limit);
        l.duration("predict_window", SECOND, &mut t.predict_window);

        let mut s = ServiceConfig::default();
        l.string("listen", &mut s.listen);
        l.opt_string("origin_url", &mut s.origin_url);
        l.parse("origin_http", &mut s.origin_http);
        let mut ca_file = None;
        l.opt_string("origin_ca_file", &mut ca_file);
        s.origin_ca_file = ca_file.map(PathBuf::from);
        l.string("cache_url", &mut s.cache_url);
        l.string("cache_prefix", &mut s.cache_prefix);
        l.parse("memory_cache_capacity", &mut s.memory_cache_capacity);
        l.opt_string("nats_url", &mut s.nats_url);
        l.string("nats_subject", &mut s.nats_subject);
        l.string("nats_stream", &mut s.nats_stream);
        l.opt_string("api_token", &mut s.api_token);
        let mut state_dir = s.state_dir.display().to_string();
        l.string("state_dir", &mut state_dir);
        s.state_dir = PathBuf::from(state_dir);
        l.string("timezone", &mut s.timezone);
        l.boolean("builtin_schedules", &mut s.builtin_schedules);
        l.parse("tracker_max_keys", &mut s.tracker_max_keys);
        l.duration("tracker_bucket", SECOND, &mut s.tracker_bucket);
        l.parse("max_keys_per_request", &mut s.max_keys_per_request);
        l.parse("max_key_len", &mut s.max_key_len);
        l.parse("max_body_bytes", &mut s.max_body_bytes);
        l.parse("jobs_retained", &mut s.jobs_retained);
        l.parse("coordination", &mut s.coordination);
        l.opt_string("coordination_url", &mut s.coordination_url);
        l.string("cluster_namespace", &mut s.cluster_namespace);
        l.opt_string("instance_id", &mut s.instance_id);
        l.duration("visibility_timeout", SECOND, &mut s.visibility_timeout);
        let mut access_log: Option<String> = None;
        l.opt_string("access_log", &mut access_log);
        s.access_log = access_log.map(PathBuf::from);
        l.parse("access_log_max_bytes", &mut s.access_log_max_bytes);
        let mut model: Option<String> = None;
        l.opt_string("predictor_model", &mut model);
        s.predictor_model = model.map(PathBuf::from);
        l.parse("learned_max_keys", &mut s.learned_max_keys);
        let mut gate = Duration::MAX;
        l.duration("learned_idle_gate", SECOND, &mut gate);
        s.learned_idle_gate = (gate != Duration::MAX).then_some(gate);
        l.duration("learned_band", SECOND, &mut s.learned_band);
        l.parse("learned_min_probability", &mut s.learned_min_probability);
        l.parse(
            "learned_trained_min_probability",
            &mut s.learned_trained_min_probability,
        );

        if let Some(table) = table.as_ref() {
            for key in table.keys() {
                if !KNOWN_FIELDS.contains(&key.as_str()) {
                    l.errors.push(FieldError {
                        field: key.clone(),
                        message: "unknown setting in the configuration file".into(),
                    });
                }
            }
        }
        let mut errors = l.errors;
        if let Err(mut e) = t.validate() {
            errors.append(&mut e);
        }
        if let Err(mut e) = s.validate() {
            errors.append(&mut e);
        }
        if errors.is_empty() {
            Ok(Settings {
                tunables: t,
                service: s,
            })
        } else {
            Err(ConfigError(errors))
        }
    }
}

/// Tunables shared by the engine, the workers and the read-through path;
/// loaded lock-free on every use, replaced whole on update.
pub type SharedTunables = std::sync::Arc<arc_swap::ArcSwap<Tunables>>;

/// Every setting name (lower case; the variable is `WARMING_` + upper case).
pub const KNOWN_FIELDS: &[&str] = &[
    "max_origin_rps",
    "max_batch_size",
    "concurrent_warmers",
    "default_ttl",
    "origin_timeout",
    "retry_attempts",
    "backoff_base",
    "emergency_threshold",
    "default_strategy",
    "min_rewarm_interval",
    "ttl_jitter",
    "emergency_window",
    "emergency_cooldown",
    "predictor",
    "predictive_limit",
    "predict_window",
    "listen",
    "origin_url",
    "origin_http",
    "origin_ca_file",
    "cache_url",
    "cache_prefix",
    "memory_cache_capacity",
    "nats_url",
    "nats_subject",
    "nats_stream",
    "api_token",
    "state_dir",
    "timezone",
    "builtin_schedules",
    "tracker_max_keys",
    "tracker_bucket",
    "max_keys_per_request",
    "max_key_len",
    "max_body_bytes",
    "jobs_retained",
    "coordination",
    "coordination_url",
    "cluster_namespace",
    "instance_id",
    "visibility_timeout",
    "access_log",
    "access_log_max_bytes",
    "predictor_model",
    "learned_max_keys",
    "learned_idle_gate",
    "learned_band",
    "learned_min_probability",
    "learned_trained_min_probability",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_spec() {
        let s = Settings::load(None, &env(&[])).unwrap();
        let j = s.tunables.to_json();
        assert_eq!(j["max_origin_rps"], 100);
        assert_eq!(j["max_batch_size"], 50);
        assert_eq!(j["concurrent_warmers"], 10);
        assert_eq!(j["default_ttl"], 3_600_000_000_000u64);
        assert_eq!(j["origin_timeout"], 5_000_000_000u64);
        assert_eq!(j["retry_attempts"], 3);
        assert_eq!(j["backoff_base"], 100_000_000u64);
        assert_eq!(j["emergency_threshold"], 2_000_000_000u64);
        assert_eq!(j["default_strategy"], "priority");
    }

    /// The typed client reads back exactly what the server writes, and a
    /// serialized update is read by the server as the same update.
    #[test]
    fn tunables_and_updates_round_trip_through_json() {
        let t = Tunables {
            backoff_base: Duration::from_millis(250),
            default_strategy: Strategy::Breadth,
            ttl_jitter: 0.1,
            ..Tunables::default()
        };
        let j = t.to_json();
        assert_eq!(j["backoff_base"], 250_000_000u64);
        assert_eq!(j["default_strategy"], "breadth");
        assert_eq!(j.as_object().unwrap().len(), 16, "{j}");
        assert_eq!(serde_json::from_value::<Tunables>(j.clone()).unwrap(), t);
        // Shared with other instances as an update: the same shape applies.
        let as_update = TunablesUpdate::from_json(&j).unwrap();
        assert_eq!(
            as_update
                .apply_to(&Tunables::default(), Duration::from_nanos(1))
                .unwrap(),
            t
        );

        let u = TunablesUpdate {
            concurrent_warmers: Some(4),
            origin_timeout: Some(Duration::from_secs(2).into()),
            predict_window: Some("30m".into()),
            ..TunablesUpdate::default()
        };
        let j = serde_json::to_value(&u).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"concurrent_warmers": 4, "origin_timeout": 2_000_000_000u64,
                "predict_window": "30m"})
        );
        assert_eq!(TunablesUpdate::from_json(&j).unwrap(), u);
        assert_eq!(
            serde_json::to_value(TunablesUpdate::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn env_units_follow_the_spec() {
        let s = Settings::load(
            None,
            &env(&[
                ("WARMING_DEFAULT_TTL", "60"),
                ("WARMING_ORIGIN_TIMEOUT", "2"),
                ("WARMING_BACKOFF_BASE", "250"),
                ("WARMING_EMERGENCY_THRESHOLD", "1500"),
                ("WARMING_DEFAULT_STRATEGY", "breadth"),
            ]),
        )
        .unwrap();
        assert_eq!(s.tunables.default_ttl, Duration::from_secs(60));
        assert_eq!(s.tunables.origin_timeout, Duration::from_secs(2));
        assert_eq!(s.tunables.backoff_base, Duration::from_millis(250));
        assert_eq!(s.tunables.emergency_threshold, Duration::from_millis(1500));
        assert_eq!(s.tunables.default_strategy, Strategy::Breadth);
    }

    #[test]
    fn every_bad_variable_is_reported() {
        let err = Settings::load(
            None,
            &env(&[
                ("WARMING_CONCURRENT_WARMERS", "0"),
                ("WARMING_DEFAULT_STRATEGY", "random"),
                ("WARMING_MAX_BATCH_SIZE", "lots"),
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"concurrent_warmers"), "{fields:?}");
        assert!(fields.contains(&"default_strategy"), "{fields:?}");
        assert!(fields.contains(&"max_batch_size"), "{fields:?}");
    }

    #[test]
    fn learned_predictor_settings_are_typed_and_validated() {
        let s = Settings::load(
            None,
            &env(&[
                ("WARMING_LEARNED_IDLE_GATE", "0"),
                ("WARMING_LEARNED_MAX_KEYS", "5000"),
                ("WARMING_DEFAULT_TTL", "600"),
            ]),
        )
        .unwrap();
        let p = s.service.predictor_settings(s.tunables.default_ttl);
        assert_eq!(p.learned_idle_gate, Some(Duration::ZERO));
        assert_eq!(p.learned_max_keys, 5000);
        assert_eq!(p.default_ttl, Duration::from_secs(600));
        let err = Settings::load(
            None,
            &env(&[
                ("WARMING_LEARNED_MIN_PROBABILITY", "2"),
                ("WARMING_LEARNED_TRAINED_MIN_PROBABILITY", "-0.1"),
                ("WARMING_PREDICTOR_MODEL", "/nonexistent/model.onnx"),
            ]),
        )
        .unwrap_err();
        let fields: Vec<_> = err.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"learned_min_probability"), "{fields:?}");
        assert!(
            fields.contains(&"learned_trained_min_probability"),
            "{fields:?}"
        );
        assert!(fields.contains(&"predictor_model"), "{fields:?}");
    }

    #[test]
    fn origin_http_is_parsed_and_checked() {
        let s = Settings::load(None, &env(&[])).unwrap();
        assert_eq!(s.service.origin_http, OriginHttp::Http1);
        for (value, want) in [
            ("http2", OriginHttp::Http2),
            ("HTTP1", OriginHttp::Http1),
            ("auto", OriginHttp::Auto),
        ] {
            let s = Settings::load(None, &env(&[("WARMING_ORIGIN_HTTP", value)])).unwrap();
            assert_eq!(s.service.origin_http, want);
        }
        let err = Settings::load(None, &env(&[("WARMING_ORIGIN_HTTP", "http3")])).unwrap_err();
        assert_eq!(err.0[0].field, "origin_http");
        assert_eq!(s.service.origin_ca_file, None);
        let s = Settings::load(None, &env(&[("WARMING_ORIGIN_CA_FILE", "/etc/ca.pem")])).unwrap();
        assert_eq!(
            s.service.origin_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert!(
            err.0[0].message.contains("auto, http1, http2"),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.toml");
        std::fs::write(
            &path,
            "max_origin_rps = 7\nconcurrent_warmers = 3\ndefault_ttl = \"2m\"\n",
        )
        .unwrap();
        let s = Settings::load(Some(&path), &env(&[("WARMING_CONCURRENT_WARMERS", "4")])).unwrap();
        assert_eq!(s.tunables.max_origin_rps, 7);
        assert_eq!(s.tunables.concurrent_warmers, 4);
        assert_eq!(s.tunables.default_ttl, Duration::from_secs(120));
        std::fs::write(&path, "max_orign_rps = 7\n").unwrap();
        let err = Settings::load(Some(&path), &env(&[])).unwrap_err();
        assert_eq!(err.0[0].field, "max_orign_rps");
    }

    #[test]
    fn update_is_validated_and_leaves_base_alone() {
        let base = Tunables::default();
        let upd: TunablesUpdate = serde_json::from_str(
            r#"{"max_origin_rps": 200, "default_ttl": "10m", "backoff_base": 5000000}"#,
        )
        .unwrap();
        let t = upd.apply_to(&base, Duration::from_nanos(1)).unwrap();
        assert_eq!(t.max_origin_rps, 200);
        assert_eq!(t.default_ttl, Duration::from_secs(600));
        assert_eq!(t.backoff_base, Duration::from_millis(5));
        let bad: TunablesUpdate = serde_json::from_str(r#"{"concurrent_warmers": 0}"#).unwrap();
        let e = bad.apply_to(&base, Duration::from_nanos(1)).unwrap_err();
        assert_eq!(e[0].field, "concurrent_warmers");
        assert!(e[0].message.contains("1..=1024"), "{}", e[0].message);
        assert!(serde_json::from_str::<TunablesUpdate>(r#"{"max_origin_rpz": 1}"#).is_err());
    }

    #[test]
    fn update_values_of_the_wrong_type_name_their_field() {
        let field = |body: serde_json::Value| match TunablesUpdate::from_json(&body) {
            Err(UpdateError::Field(f)) => f,
            other => panic!("{body}: {other:?}"),
        };
        let f = field(serde_json::json!({"max_origin_rps": -1}));
        assert_eq!(f.field, "max_origin_rps");
        assert_eq!(f.message, "-1 is out of range; allowed 0..=1000000");
        let f = field(serde_json::json!({"retry_attempts": "many"}));
        assert_eq!(f.message, "\"many\" is not an integer; allowed 0..=20");
        let f = field(serde_json::json!({"backoff_base": -5}));
        assert_eq!(f.field, "backoff_base");
        assert!(
            f.message
                .starts_with("-5 is out of range; allowed 1ms..=1m"),
            "{}",
            f.message
        );
        let f = field(serde_json::json!({"predictor": ["a"]}));
        assert_eq!(
            f.message,
            "an array is not a name; allowed: heuristic, frequency, learned"
        );
        let long = "x".repeat(100);
        let f = field(serde_json::json!({ "ttl_jitter": long }));
        assert!(f.message.len() < 100, "{}", f.message);
        for body in [serde_json::json!({"listen": "x"}), serde_json::json!([1])] {
            assert!(
                matches!(
                    TunablesUpdate::from_json(&body),
                    Err(UpdateError::Request(_))
                ),
                "{body}"
            );
        }
        let ok = TunablesUpdate::from_json(&serde_json::json!({"max_origin_rps": 5})).unwrap();
        assert_eq!(ok.max_origin_rps, Some(5));
    }
}
