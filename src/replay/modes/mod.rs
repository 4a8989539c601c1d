//! The warming modes replay compares. Each mode owns a [`Sim`] (its own
//! cache, origin budget and counters) and sees every request of the trace.
//!
//! | mode | rule | module |
//! |---|---|---|
//! | `none` | fill on demand, TTL only | [`basic`] |
//! | `refresh-ahead` | a read of a value older than `fraction x TTL` starts a background refresh (Caffeine `refreshAfterWrite`) | [`basic`] |
//! | `xfetch` | a read at `t` refreshes early when `t - delta x beta x ln(u) >= expiry` (Vattani, Chierichetti, Lowenstein, VLDB 2015) | [`basic`] |
//! | `heuristic`, `learned`, `predictor:NAME` | the named [`crate::predict`] predictor, fed every access, ticked, driven by the built-in schedules and by continuous refresh of predicted keys | [`predictive`] |
//! | `oracle` | warms exactly the future reads that would miss, just in time, within the same budget | [`oracle`] |
//! | `oracle-seen` | `oracle`, restricted to keys read before | [`oracle`] |

pub mod basic;
pub mod oracle;
pub mod predictive;

use std::time::Duration;

use serde::Serialize;

use super::quality::QualityRow;
use super::sim::{Series, SimConfig, Stats};
use super::trace::{KeySpace, Request};

/// One mode under replay.
pub trait Mode: Send {
    /// Seconds of future requests the mode wants to see before they happen.
    fn lookahead(&self) -> f64 {
        0.0
    }
    /// A request `lookahead()` seconds (or more) before it happens.
    fn foresee(&mut self, _req: &Request) {}
    /// The request happens: time advances to `req.at`, then the read.
    fn access(&mut self, req: &Request);
    /// Figures at the end of the trace (`end` = time of the last request).
    fn finish(&mut self, end: f64) -> ModeResult;
}

/// What a mode reports.
#[derive(Debug, Clone, Serialize)]
pub struct ModeResult {
    /// `ok`, or `unavailable` (e.g. a predictor that is not built in).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// Prediction quality (predictor modes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<Vec<QualityRow>>,
    #[serde(skip)]
    pub series: Series,
}

impl ModeResult {
    pub fn ok(stats: Stats, series: Series) -> Self {
        ModeResult {
            status: "ok".into(),
            note: None,
            stats: Some(stats),
            quality: None,
            series,
        }
    }

    /// Appends `note` to the result's note.
    pub fn add_note(&mut self, note: String) {
        self.note = Some(match self.note.take() {
            Some(n) => format!("{n}; {note}"),
            None => note,
        });
    }

    pub fn unavailable(note: String) -> Self {
        ModeResult {
            status: "unavailable".into(),
            note: Some(note),
            stats: None,
            quality: None,
            series: Series::default(),
        }
    }
}

/// Everything a mode may need to know.
#[derive(Debug, Clone)]
pub struct ModeConfig {
    pub sim: SimConfig,
    pub key_space: KeySpace,
    /// refresh-ahead: refresh once a value is this fraction of its TTL old.
    pub refresh_fraction: f64,
    /// xfetch: the paper's beta (1.0 = its recommended default).
    pub xfetch_beta: f64,
    /// Seed of the random numbers (xfetch).
    pub seed: u64,
    /// oracle: how long before a read its warm may start.
    pub oracle_lead: f64,
    pub predictive: predictive::PredictiveConfig,
    /// Settings of the predictors (the TTL is the replay's).
    pub predictor_settings: crate::predict::PredictorSettings,
}

impl ModeConfig {
    /// Defaults of the service for `sim`.
    pub fn new(sim: SimConfig, key_space: KeySpace) -> Self {
        let oracle_lead = (sim.ttl / 2.0).max(sim.latency * 2.0);
        let predictor_settings = crate::predict::PredictorSettings {
            default_ttl: std::time::Duration::from_secs_f64(sim.ttl.max(1.0)),
            seed: Some(1),
            ..Default::default()
        };
        ModeConfig {
            predictor_settings,
            predictive: predictive::PredictiveConfig::default(),
            sim,
            key_space,
            refresh_fraction: 0.8,
            xfetch_beta: 1.0,
            seed: 1,
            oracle_lead,
        }
    }
}

/// Names of the fixed modes; `predictor:NAME` is accepted too.
pub const NAMES: [&str; 7] = [
    "none",
    "refresh-ahead",
    "xfetch",
    "heuristic",
    "learned",
    "oracle",
    "oracle-seen",
];

/// The mode named `name`; `Err` for a name that is no mode at all. A
/// predictor mode whose predictor is not built in is `Ok(None)`
/// ("unavailable"), so one missing predictor does not stop the others.
pub fn build(name: &str, cfg: &ModeConfig) -> Result<Option<Box<dyn Mode>>, String> {
    let n = name.trim().to_ascii_lowercase();
    let mode: Box<dyn Mode> = match n.as_str() {
        "none" => Box::new(basic::Basic::new(basic::Rule::None, cfg)),
        "refresh-ahead" => Box::new(basic::Basic::new(
            basic::Rule::RefreshAhead {
                fraction: cfg.refresh_fraction,
            },
            cfg,
        )),
        "xfetch" => Box::new(basic::Basic::new(
            basic::Rule::XFetch {
                beta: cfg.xfetch_beta,
            },
            cfg,
        )),
        "oracle" => Box::new(oracle::Oracle::new(false, cfg)),
        "oracle-seen" => Box::new(oracle::Oracle::new(true, cfg)),
        _ => {
            let predictor = predictor_name(&n).ok_or_else(|| {
                format!(
                    "unknown mode {name:?}; allowed: {}, predictor:NAME",
                    NAMES.join(", ")
                )
            })?;
            match crate::predict::build(predictor, &cfg.predictor_settings) {
                Some(p) => Box::new(predictive::Predictive::new(p, cfg)),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(mode))
}

/// The predictor a mode name asks for: `heuristic`, `learned`, `predictor:NAME`.
pub fn predictor_name(mode: &str) -> Option<&str> {
    match mode {
        "heuristic" | "learned" => Some(mode),
        m => m.strip_prefix("predictor:").filter(|p| !p.is_empty()),
    }
}

/// Splits `--modes a,b,c`.
pub fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|m| m.trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Seconds as a [`Duration`] (negative and NaN as zero).
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}
