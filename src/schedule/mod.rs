//! Scheduled warming: the spec's three built-in cron schedules and custom ones
//! registered over HTTP, which persist across restarts. (stub: being written)

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Strategy;

/// What a schedule does when it fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleAction {
    /// Warm the top `limit` predicted keys.
    Predictive { limit: usize },
    /// Warm up to `limit` keys matching `pattern`.
    Pattern { pattern: String, limit: usize },
    /// Warm exactly these keys.
    Keys { keys: Vec<String> },
}

/// A schedule as registered (`POST /warm/schedules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    pub name: String,
    /// 5 fields, or 6 with seconds first.
    pub cron: String,
    /// IANA zone; default: the service's `timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub action: ScheduleAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
}

/// A schedule as listed (`GET /warm/schedules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub spec: ScheduleSpec,
    pub builtin: bool,
    pub timezone_effective: String,
    pub next_run: Option<DateTime<Utc>>,
    pub last_run: Option<DateTime<Utc>>,
    pub last_job_id: Option<String>,
    pub last_error: Option<String>,
    pub runs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("schedule {0:?} already exists")]
    Exists(String),
    #[error("no schedule named {0:?}")]
    NotFound(String),
    #[error("schedule {0:?} is built in; turn built-in schedules off with WARMING_BUILTIN_SCHEDULES=false")]
    Builtin(String),
    #[error("cannot persist schedules: {0}")]
    Storage(String),
}

/// Runs a schedule's action (implemented by the warm engine).
#[async_trait]
pub trait ScheduleRunner: Send + Sync {
    /// Queues the action's keys; returns the job id.
    async fn run_schedule(&self, spec: &ScheduleSpec) -> Result<String, String>;
}

/// Holds every schedule and fires them on time.
pub struct Scheduler {}

impl Scheduler {
    /// Loads custom schedules from `store_path` (a JSON file) if present.
    pub fn new(_timezone: &str, _builtin: bool, _store_path: PathBuf, _max_key_len: usize) -> Result<Self, ScheduleError> { todo!() }
    pub fn list(&self) -> Vec<ScheduleView> { todo!() }
    pub fn get(&self, _name: &str) -> Option<ScheduleView> { todo!() }
    /// Validates (name, cron, time zone, action, priority), persists, and arms.
    pub fn add(&self, _spec: ScheduleSpec) -> Result<ScheduleView, ScheduleError> { todo!() }
    pub fn remove(&self, _name: &str) -> Result<(), ScheduleError> { todo!() }
    /// Keys named by `keys` schedules (known keys for pattern matching).
    pub fn registered_keys(&self) -> Vec<String> { todo!() }
    /// Fires schedules until `cancel`.
    pub async fn run(self: Arc<Self>, _runner: Arc<dyn ScheduleRunner>, _cancel: CancellationToken) { todo!() }
}
