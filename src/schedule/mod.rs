//! Scheduled warming: the spec's three built-in cron schedules and custom ones
//! registered over HTTP, which persist across restarts.
//!
//! - Built-ins (when enabled): `daily-warmup` (`0 2 * * *`, top 100 predicted
//!   keys), `hourly-refresh` (`0 * * * *`, top 50) and `peak-hours-warmup`
//!   (`0 7,11,17 * * *`, top 100 at priority 90), in the service time zone.
//! - Custom schedules are validated by [`Scheduler::add`], written to a JSON
//!   file (see [`store`]) and reloaded by [`Scheduler::new`]. An action's
//!   `limit` is bounded by `max_keys_per_request`, as the engine bounds the
//!   request each firing makes.
//! - [`Scheduler::run`] is one loop: it sleeps until the earliest next firing
//!   (woken early when schedules change) and hands each due schedule to a
//!   [`ScheduleRunner`] in its own task, so a slow run delays no other schedule.
//!
//! Firings missed while the process was busy or asleep are run once, not once
//! per missed slot; a schedule whose previous run is still going is skipped.
//! Cron expressions have 5 fields, or 6 with seconds first (croner syntax).

mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Strategy;

/// Longest schedule name.
pub const MAX_NAME_LEN: usize = 64;
/// Most keys of a `keys` action.
pub const MAX_ACTION_KEYS: usize = 10_000;
/// Priority of the built-in `expiry-refresh` schedule's keys.
pub const REFRESH_PRIORITY: u8 = 20;
/// Names of the built-in schedules, reserved even when they are turned off.
pub const BUILTIN_NAMES: [&str; 4] = [
    "daily-warmup",
    "hourly-refresh",
    "peak-hours-warmup",
    "expiry-refresh",
];

/// Longest sleep of the loop: bounds the effect of a wall-clock jump.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long `run` waits for runs in flight once cancelled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// Refresh before expiry: of the top `limit` predicted keys, warm those
    /// whose cached value is missing or expires before the schedule's next
    /// firing (plus the origin timeout). `limit` absent: what the origin
    /// budget fetches until the next firing (see [`crate::warm::refresh`]).
    Refresh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
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
    #[error(
        "schedule {0:?} is built in; turn built-in schedules off with WARMING_BUILTIN_SCHEDULES=false"
    )]
    Builtin(String),
    #[error("cannot persist schedules: {0}")]
    Storage(String),
}

/// Runs a schedule's action (implemented by the warm engine).
#[async_trait]
pub trait ScheduleRunner: Send + Sync {
    /// Queues the action's keys; returns the job id, or `None` when no job
    /// was started (nothing to refresh, or another instance runs this
    /// firing). `firing` is the scheduled instant (the same on every
    /// instance), so a cluster can run each firing once.
    async fn run_schedule(
        &self,
        spec: &ScheduleSpec,
        firing: DateTime<Utc>,
    ) -> Result<Option<String>, String>;
}

/// Holds every schedule and fires them on time.
pub struct Scheduler {
    /// Service time zone, for schedules that name none.
    tz: Tz,
    store_path: PathBuf,
    max_key_len: usize,
    /// Largest `limit` of an action (the service's `max_keys_per_request`):
    /// each firing is one request to the engine, which refuses more.
    max_limit: usize,
    /// Schedules and their run state. A std mutex: it is never held across an
    /// await, and critical sections are short (the file write of `add` and
    /// `remove` included: it keeps the file and the memory in the same order).
    state: Mutex<State>,
    /// Wakes the loop when the set of schedules changes.
    changed: Notify,
}

#[derive(Default)]
struct State {
    builtins: Vec<Entry>,
    custom: BTreeMap<String, Entry>,
    /// Identifies entries, so a run that finishes after its schedule was
    /// removed (and maybe re-added) records nothing.
    next_id: u64,
}

struct Entry {
    id: u64,
    spec: ScheduleSpec,
    builtin: bool,
    cron: Cron,
    tz: Tz,
    next_run: Option<DateTime<Utc>>,
    last_run: Option<DateTime<Utc>>,
    last_job_id: Option<String>,
    last_error: Option<String>,
    runs: u64,
    running: bool,
}

impl Entry {
    fn view(&self, service_tz: Tz) -> ScheduleView {
        let tz = if self.spec.timezone.is_some() {
            self.tz
        } else {
            service_tz
        };
        ScheduleView {
            spec: self.spec.clone(),
            builtin: self.builtin,
            timezone_effective: tz.name().to_string(),
            next_run: self.next_run,
            last_run: self.last_run,
            last_job_id: self.last_job_id.clone(),
            last_error: self.last_error.clone(),
            runs: self.runs,
        }
    }
}

impl State {
    fn entries_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.builtins.iter_mut().chain(self.custom.values_mut())
    }

    fn find_mut(&mut self, name: &str) -> Option<&mut Entry> {
        self.entries_mut().find(|e| e.spec.name == name)
    }

    fn custom_specs(&self) -> Vec<ScheduleSpec> {
        self.custom.values().map(|e| e.spec.clone()).collect()
    }
}

/// The spec's three pre-configured schedules.
pub fn builtin_specs() -> Vec<ScheduleSpec> {
    let predictive = |name: &str, cron: &str, limit: usize, priority: Option<u8>| ScheduleSpec {
        name: name.into(),
        cron: cron.into(),
        timezone: None,
        action: ScheduleAction::Predictive { limit },
        priority,
        strategy: None,
    };
    vec![
        // "Runs at 2 AM daily, warms critical cache keys, uses predictive warming."
        predictive("daily-warmup", "0 2 * * *", 100, None),
        // "Runs every hour, refreshes frequently accessed keys, top 50 predicted keys."
        predictive("hourly-refresh", "0 * * * *", 50, None),
        // "Runs 1 hour before peak times (8 AM, 12 PM, 6 PM), top 100 keys, high priority."
        predictive("peak-hours-warmup", "0 7,11,17 * * *", 100, Some(90)),
        // Every minute: predicted keys whose value would expire before the
        // next minute are refreshed, so a hot key never expires under load.
        // Background upkeep: below the default priority, so explicit
        // requests are not kept waiting behind it.
        ScheduleSpec {
            name: "expiry-refresh".into(),
            cron: "* * * * *".into(),
            timezone: None,
            action: ScheduleAction::Refresh { limit: None },
            priority: Some(REFRESH_PRIORITY),
            strategy: None,
        },
    ]
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ScheduleError {
    ScheduleError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Parses a cron expression of 5 fields, or 6 with seconds first; the error
/// names the offending field.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    const FIVE: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
    const SIX: [&str; 6] = [
        "second",
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIVE,
        6 => &SIX,
        n => {
            return Err(format!(
                "{expr:?} has {n} fields; expected 5 (minute hour day-of-month month day-of-week) \
                 or 6 with seconds first"
            ));
        }
    };
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    match parser.parse(expr) {
        Ok(cron) => Ok(cron),
        Err(whole) => {
            // Find the culprit: parse each field alone, the others left as `*`.
            for (i, field) in fields.iter().enumerate() {
                let mut probe = vec!["*"; fields.len()];
                probe[i] = field;
                if let Err(e) = parser.parse(&probe.join(" ")) {
                    return Err(format!("{} field {field:?} is invalid: {e}", names[i]));
                }
            }
            Err(format!("{expr:?} is invalid: {whole}"))
        }
    }
}

/// The first firing of `cron` in `tz` strictly after `after`.
fn next_after(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn validate_name(name: &str) -> Result<(), ScheduleError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters long, got {len}"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(invalid(
            "name",
            format!("{c:?} is not allowed; use letters, digits, '_', '.' and '-'"),
        ));
    }
    Ok(())
}

/// The `limit` of an action that has one.
fn action_limit(action: &ScheduleAction) -> Option<usize> {
    match action {
        ScheduleAction::Predictive { limit } | ScheduleAction::Pattern { limit, .. } => {
            Some(*limit)
        }
        ScheduleAction::Refresh { limit } => *limit,
        ScheduleAction::Keys { .. } => None,
    }
}

impl Scheduler {
    /// Loads custom schedules from `store_path` (a JSON file) if present.
    /// `max_limit` is the largest action `limit` [`Scheduler::add`] accepts
    /// (the service's `max_keys_per_request`).
    ///
    /// Errors: an unknown `timezone` (`Invalid`), or a store file that cannot
    /// be read or holds an invalid schedule (`Storage`). A stored schedule
    /// whose `limit` exceeds `max_limit` (the setting was lowered since it
    /// was added) is kept with a warning: its firings report the error.
    pub fn new(
        timezone: &str,
        builtin: bool,
        store_path: PathBuf,
        max_key_len: usize,
        max_limit: usize,
    ) -> Result<Self, ScheduleError> {
        let tz: Tz = timezone.parse().map_err(|_| {
            invalid(
                "timezone",
                format!("{timezone:?} is not an IANA time zone such as UTC or Europe/Paris"),
            )
        })?;
        let scheduler = Scheduler {
            tz,
            store_path,
            max_key_len,
            max_limit,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        };
        let now = Utc::now();
        let stored = store::load(&scheduler.store_path).map_err(ScheduleError::Storage)?;
        let mut state = State::default();
        if builtin {
            for spec in builtin_specs() {
                let entry = scheduler
                    .entry(&mut state, spec, true, now)
                    .expect("built-in schedules are valid");
                state.builtins.push(entry);
            }
        }
        for spec in stored {
            let name = spec.name.clone();
            let place = scheduler.store_path.display();
            if BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(ScheduleError::Storage(format!(
                    "{place}: {name:?} is the name of a built-in schedule"
                )));
            }
            if state.custom.contains_key(&name) {
                return Err(ScheduleError::Storage(format!(
                    "{place}: schedule {name:?} appears twice"
                )));
            }
            let entry = scheduler
                .entry(&mut state, spec, false, now)
                .map_err(|e| ScheduleError::Storage(format!("{place}: schedule {name:?}: {e}")))?;
            scheduler.warn_if_limit_too_large(&entry.spec);
            state.custom.insert(name, entry);
        }
        *scheduler.lock() = state;
        Ok(scheduler)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update
        // is a plain assignment), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates `spec` and builds its entry, armed for its next firing.
    fn entry(
        &self,
        state: &mut State,
        spec: ScheduleSpec,
        builtin: bool,
        now: DateTime<Utc>,
    ) -> Result<Entry, ScheduleError> {
        let (cron, tz) = self.validate(&spec)?;
        let next_run = next_after(&cron, tz, now);
        if next_run.is_none() {
            return Err(invalid("cron", format!("{:?} never fires", spec.cron)));
        }
        state.next_id += 1;
        Ok(Entry {
            id: state.next_id,
            spec,
            builtin,
            cron,
            tz,
            next_run,
            last_run: None,
            last_job_id: None,
            last_error: None,
            runs: 0,
            running: false,
        })
    }

    /// Checks every field of `spec` (not its name's availability).
    fn validate(&self, spec: &ScheduleSpec) -> Result<(Cron, Tz), ScheduleError> {
        validate_name(&spec.name)?;
        let cron = parse_cron(&spec.cron).map_err(|m| invalid("cron", m))?;
        let tz = match &spec.timezone {
            None => self.tz,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                invalid(
                    "timezone",
                    format!("{name:?} is not an IANA time zone such as UTC or Europe/Paris"),
                )
            })?,
        };
        // The upper bound is `check_limit_fits`, which loading only warns about.
        if action_limit(&spec.action) == Some(0) {
            return Err(self.limit_out_of_range(0));
        }
        match &spec.action {
            ScheduleAction::Predictive { .. } | ScheduleAction::Refresh { .. } => {}
            ScheduleAction::Pattern { pattern, .. } => {
                crate::glob::KeyPattern::parse(pattern)
                    .map_err(|e| invalid("action.pattern", e.to_string()))?;
            }
            ScheduleAction::Keys { keys } => {
                if keys.is_empty() || keys.len() > MAX_ACTION_KEYS {
                    return Err(invalid(
                        "action.keys",
                        format!("must hold 1 to {MAX_ACTION_KEYS} keys, got {}", keys.len()),
                    ));
                }
                for (i, key) in keys.iter().enumerate() {
                    crate::keys::validate_key(key, self.max_key_len)
                        .map_err(|e| invalid(format!("action.keys[{i}]"), e.to_string()))?;
                }
            }
        }
        if let Some(p) = spec.priority.filter(|p| *p > 100) {
            return Err(invalid(
                "priority",
                format!("must be between 0 and 100, got {p}"),
            ));
        }
        Ok((cron, tz))
    }

    /// Refuses an action `limit` above `max_limit`: every firing would fail.
    fn check_limit_fits(&self, spec: &ScheduleSpec) -> Result<(), ScheduleError> {
        match action_limit(&spec.action) {
            Some(limit) if limit > self.max_limit => Err(self.limit_out_of_range(limit)),
            _ => Ok(()),
        }
    }

    /// For schedules added earlier (stored, or shared by another instance),
    /// which are kept: a too-large `limit` is logged, and each firing
    /// records the engine's error in `last_error`.
    fn warn_if_limit_too_large(&self, spec: &ScheduleSpec) {
        if let Err(e) = self.check_limit_fits(spec) {
            tracing::warn!(schedule = %spec.name, error = %e, "schedule kept, but its firings will fail");
        }
    }

    fn limit_out_of_range(&self, limit: usize) -> ScheduleError {
        invalid(
            "action.limit",
            format!(
                "{limit} is out of range; allowed 1..={} (max_keys_per_request)",
                self.max_limit
            ),
        )
    }

    /// Built-in schedules, then custom ones sorted by name.
    pub fn list(&self) -> Vec<ScheduleView> {
        let state = self.lock();
        state
            .builtins
            .iter()
            .chain(state.custom.values())
            .map(|e| e.view(self.tz))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<ScheduleView> {
        let mut state = self.lock();
        state.find_mut(name).map(|e| e.view(self.tz))
    }

    /// Validates (name, cron, time zone, action and its `limit`, priority),
    /// persists, and arms.
    pub fn add(&self, spec: ScheduleSpec) -> Result<ScheduleView, ScheduleError> {
        if BUILTIN_NAMES.contains(&spec.name.as_str()) {
            return Err(ScheduleError::Builtin(spec.name));
        }
        self.check_limit_fits(&spec)?;
        let mut state = self.lock();
        let entry = self.entry(&mut state, spec, false, Utc::now())?;
        let name = entry.spec.name.clone();
        if state.custom.contains_key(&name) {
            return Err(ScheduleError::Exists(name));
        }
        let mut specs = state.custom_specs();
        specs.push(entry.spec.clone());
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        store::save(&self.store_path, &specs).map_err(ScheduleError::Storage)?;
        let view = entry.view(self.tz);
        state.custom.insert(name, entry);
        drop(state);
        self.changed.notify_one();
        Ok(view)
    }

    /// Deletes a custom schedule and persists the change.
    pub fn remove(&self, name: &str) -> Result<(), ScheduleError> {
        let mut state = self.lock();
        if !state.custom.contains_key(name) {
            if BUILTIN_NAMES.contains(&name) && state.builtins.iter().any(|e| e.spec.name == name) {
                return Err(ScheduleError::Builtin(name.to_string()));
            }
            return Err(ScheduleError::NotFound(name.to_string()));
        }
        let specs: Vec<ScheduleSpec> = state
            .custom
            .values()
            .filter(|e| e.spec.name != name)
            .map(|e| e.spec.clone())
            .collect();
        store::save(&self.store_path, &specs).map_err(ScheduleError::Storage)?;
        state.custom.remove(name);
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// The custom schedules, sorted by name (what is persisted and shared).
    pub fn custom_specs(&self) -> Vec<ScheduleSpec> {
        let mut specs = self.lock().custom_specs();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    /// Makes the custom schedules exactly `specs` (another instance changed
    /// them): unchanged schedules keep their run history, invalid entries are
    /// skipped with a warning, and the result is persisted locally.
    pub fn replace_custom(&self, specs: Vec<ScheduleSpec>) -> Result<(), ScheduleError> {
        let mut state = self.lock();
        let now = Utc::now();
        let mut next = std::collections::BTreeMap::new();
        for spec in specs {
            if BUILTIN_NAMES.contains(&spec.name.as_str()) || next.contains_key(&spec.name) {
                tracing::warn!(schedule = %spec.name, "ignoring a shared schedule with a reserved or repeated name");
                continue;
            }
            match state.custom.remove(&spec.name) {
                Some(existing) if existing.spec == spec => {
                    next.insert(spec.name.clone(), existing);
                }
                _ => match self.entry(&mut state, spec.clone(), false, now) {
                    Ok(entry) => {
                        self.warn_if_limit_too_large(&entry.spec);
                        next.insert(spec.name.clone(), entry);
                    }
                    Err(e) => {
                        tracing::warn!(schedule = %spec.name, error = %e, "ignoring an invalid shared schedule")
                    }
                },
            }
        }
        state.custom = next.into_iter().collect();
        let specs = state.custom_specs();
        store::save(&self.store_path, &specs).map_err(ScheduleError::Storage)?;
        drop(state);
        self.changed.notify_one();
        Ok(())
    }

    /// Keys named by `keys` schedules (known keys for pattern matching),
    /// sorted and without duplicates.
    pub fn registered_keys(&self) -> Vec<String> {
        let state = self.lock();
        let mut keys: Vec<String> = state
            .builtins
            .iter()
            .chain(state.custom.values())
            .flat_map(|e| match &e.spec.action {
                ScheduleAction::Keys { keys } => keys.clone(),
                _ => Vec::new(),
            })
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Takes the schedules due at `now` (marking them running and arming
    /// their next firing strictly after `now`), and the earliest next firing.
    #[allow(clippy::type_complexity)]
    fn take_due(
        &self,
        now: DateTime<Utc>,
    ) -> (
        Vec<(u64, ScheduleSpec, DateTime<Utc>)>,
        Option<DateTime<Utc>>,
    ) {
        let mut state = self.lock();
        let mut due = Vec::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        for e in state.entries_mut() {
            if let Some(firing) = e.next_run.filter(|next| *next <= now) {
                // However many slots were missed, the schedule runs once.
                e.next_run = next_after(&e.cron, e.tz, now);
                if e.running {
                    tracing::warn!(schedule = %e.spec.name, "previous run still in progress; skipping this firing");
                } else {
                    e.running = true;
                    due.push((e.id, e.spec.clone(), firing));
                }
            }
            if let Some(next) = e.next_run {
                earliest = Some(earliest.map_or(next, |t| t.min(next)));
            }
        }
        (due, earliest)
    }

    /// Records the outcome of a run of the entry `id`, if it still exists.
    fn record(&self, id: u64, started: DateTime<Utc>, outcome: Result<Option<String>, String>) {
        let mut state = self.lock();
        let Some(e) = state.entries_mut().find(|e| e.id == id) else {
            return;
        };
        e.running = false;
        e.runs += 1;
        e.last_run = Some(started);
        match outcome {
            Ok(job_id) => {
                if job_id.is_some() {
                    e.last_job_id = job_id;
                }
                e.last_error = None;
            }
            Err(err) => {
                tracing::warn!(schedule = %e.spec.name, error = %err, "scheduled warming failed");
                e.last_error = Some(err);
            }
        }
    }

    /// Fires schedules until `cancel`, then waits (a few seconds at most) for
    /// the runs in flight.
    pub async fn run(self: Arc<Self>, runner: Arc<dyn ScheduleRunner>, cancel: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            // Registered before reading the schedules, so a change made
            // between the read and the sleep still wakes the loop.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let now = Utc::now();
            let (due, earliest) = self.take_due(now);
            for (id, spec, firing) in due {
                let me = self.clone();
                let runner = runner.clone();
                tracker.spawn(async move {
                    let started = Utc::now();
                    tracing::info!(schedule = %spec.name, "schedule fired");
                    let outcome = runner.run_schedule(&spec, firing).await;
                    me.record(id, started, outcome);
                });
            }
            let sleep = earliest
                .map(|t| (t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = &mut changed => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("scheduled runs still in progress at shutdown; abandoning them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(name: &str, cron: &str, action: ScheduleAction) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            cron: cron.into(),
            timezone: None,
            action,
            priority: None,
            strategy: None,
        }
    }

    fn scheduler(dir: &tempfile::TempDir, builtin: bool) -> Scheduler {
        Scheduler::new(
            "UTC",
            builtin,
            dir.path().join("schedules.json"),
            64,
            10_000,
        )
        .unwrap()
    }

    fn field_of(err: ScheduleError) -> (String, String) {
        match err {
            ScheduleError::Invalid { field, message } => (field, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn builtins_are_listed_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(&dir, true);
        s.add(spec(
            "b",
            "0 3 * * *",
            ScheduleAction::Predictive { limit: 5 },
        ))
        .unwrap();
        s.add(spec(
            "a",
            "0 4 * * *",
            ScheduleAction::Predictive { limit: 5 },
        ))
        .unwrap();
        let names: Vec<String> = s.list().into_iter().map(|v| v.spec.name).collect();
        assert_eq!(
            names,
            [
                "daily-warmup",
                "hourly-refresh",
                "peak-hours-warmup",
                "expiry-refresh",
                "a",
                "b"
            ]
        );
        let peak = s.get("peak-hours-warmup").unwrap();
        assert!(peak.builtin);
        assert_eq!(peak.spec.priority, Some(90));
        assert_eq!(peak.spec.action, ScheduleAction::Predictive { limit: 100 });
        assert_eq!(peak.timezone_effective, "UTC");
        assert!(peak.next_run.is_some() && peak.runs == 0);

        let none = scheduler(&tempfile::tempdir().unwrap(), false);
        assert!(none.list().is_empty());
    }

    #[test]
    fn builtin_names_are_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(&dir, true);
        let e = s
            .add(spec(
                "daily-warmup",
                "0 3 * * *",
                ScheduleAction::Predictive { limit: 5 },
            ))
            .unwrap_err();
        assert_eq!(e, ScheduleError::Builtin("daily-warmup".into()));
        assert_eq!(
            s.remove("hourly-refresh"),
            Err(ScheduleError::Builtin("hourly-refresh".into()))
        );
        assert_eq!(
            s.remove("nope"),
            Err(ScheduleError::NotFound("nope".into()))
        );
    }

    #[test]
    fn validation_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(&dir, false);
        let p = ScheduleAction::Predictive { limit: 10 };
        let cases: Vec<(ScheduleSpec, &str, &str)> = vec![
            (spec("", "* * * * *", p.clone()), "name", "1 to 64"),
            (
                spec(&"x".repeat(65), "* * * * *", p.clone()),
                "name",
                "1 to 64",
            ),
            (spec("a b", "* * * * *", p.clone()), "name", "' '"),
            (spec("ok", "* * * *", p.clone()), "cron", "4 fields"),
            (spec("ok", "0 0 0 * * * *", p.clone()), "cron", "7 fields"),
            (
                spec("ok", "0 25 * * *", p.clone()),
                "cron",
                "hour field \"25\"",
            ),
            (
                spec("ok", "61 * * * * *", p.clone()),
                "cron",
                "second field \"61\"",
            ),
            (spec("ok", "* * * 13 *", p.clone()), "cron", "month field"),
            (spec("ok", "x * * * *", p.clone()), "cron", "minute field"),
            (spec("ok", "0 0 31 2 *", p.clone()), "cron", "never fires"),
            (
                spec("ok", "* * * * *", ScheduleAction::Predictive { limit: 0 }),
                "action.limit",
                "allowed 1..=10000",
            ),
            (
                spec(
                    "ok",
                    "* * * * *",
                    ScheduleAction::Refresh { limit: Some(0) },
                ),
                "action.limit",
                "allowed 1..=10000",
            ),
            (
                spec(
                    "ok",
                    "* * * * *",
                    ScheduleAction::Predictive { limit: 10_001 },
                ),
                "action.limit",
                "allowed 1..=10000",
            ),
            (
                spec("ok", "* * * * *", ScheduleAction::Keys { keys: vec![] }),
                "action.keys",
                "1 to 10000",
            ),
            (
                spec(
                    "ok",
                    "* * * * *",
                    ScheduleAction::Keys {
                        keys: vec!["a".into(), "b\n".into()],
                    },
                ),
                "action.keys[1]",
                "control",
            ),
            (
                spec(
                    "ok",
                    "* * * * *",
                    ScheduleAction::Keys {
                        keys: vec!["k".repeat(65)],
                    },
                ),
                "action.keys[0]",
                "limit is 64",
            ),
        ];
        for (spec, field, needle) in cases {
            let (f, m) = field_of(s.add(spec.clone()).unwrap_err());
            assert_eq!(f, field, "{spec:?}: {m}");
            assert!(m.contains(needle), "{spec:?}: {m:?} lacks {needle:?}");
        }
        let pattern = |pattern: &str, limit| ScheduleAction::Pattern {
            pattern: pattern.into(),
            limit,
        };
        let (f, m) = field_of(
            s.add(spec("ok", "* * * * *", pattern("user:{a,b}", 10)))
                .unwrap_err(),
        );
        assert_eq!(f, "action.pattern", "{m}");
        let (f, _) = field_of(
            s.add(spec("ok", "* * * * *", pattern("user:*", 0)))
                .unwrap_err(),
        );
        assert_eq!(f, "action.limit");
        s.add(spec("pat", "* * * * *", pattern("user:*:profile", 100)))
            .unwrap();
        s.remove("pat").unwrap();

        let mut bad_tz = spec("ok", "* * * * *", p.clone());
        bad_tz.timezone = Some("Mars/Olympus".into());
        assert_eq!(field_of(s.add(bad_tz).unwrap_err()).0, "timezone");
        let mut bad_prio = spec("ok", "* * * * *", p.clone());
        bad_prio.priority = Some(101);
        assert_eq!(field_of(s.add(bad_prio).unwrap_err()).0, "priority");
        assert!(s.list().is_empty());

        s.add(spec("ok", "* * * * *", p.clone())).unwrap();
        assert_eq!(
            s.add(spec("ok", "0 * * * *", p)).unwrap_err(),
            ScheduleError::Exists("ok".into())
        );
    }

    #[test]
    fn persistence_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/schedules.json");
        let s = Scheduler::new("UTC", true, path.clone(), 64, 10_000).unwrap();
        let mut a = spec(
            "keys.one",
            "*/5 * * * * *",
            ScheduleAction::Keys {
                keys: vec!["k2".into(), "k1".into()],
            },
        );
        a.timezone = Some("Europe/Paris".into());
        a.priority = Some(70);
        a.strategy = Some(Strategy::Breadth);
        let b = spec("pred", "0 3 * * *", ScheduleAction::Predictive { limit: 7 });
        s.add(a.clone()).unwrap();
        s.add(b.clone()).unwrap();
        s.add(spec(
            "gone",
            "0 3 * * *",
            ScheduleAction::Predictive { limit: 7 },
        ))
        .unwrap();
        s.remove("gone").unwrap();
        drop(s);

        let again = Scheduler::new("UTC", false, path.clone(), 64, 10_000).unwrap();
        let listed: Vec<ScheduleSpec> = again.list().into_iter().map(|v| v.spec).collect();
        assert_eq!(listed, vec![a, b]);
        assert_eq!(again.registered_keys(), ["k1", "k2"]);
        assert_eq!(
            again.get("keys.one").unwrap().timezone_effective,
            "Europe/Paris"
        );

        std::fs::write(&path, "[1, 2").unwrap();
        assert!(matches!(
            Scheduler::new("UTC", false, path, 64, 10_000),
            Err(ScheduleError::Storage(_))
        ));
    }

    #[test]
    fn a_stored_limit_above_a_lowered_maximum_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let big = spec(
            "big",
            "0 3 * * *",
            ScheduleAction::Predictive { limit: 5_000 },
        );
        Scheduler::new("UTC", false, path.clone(), 64, 10_000)
            .unwrap()
            .add(big.clone())
            .unwrap();
        // max_keys_per_request lowered to 100 since: the service still starts.
        let s = Scheduler::new("UTC", false, path, 64, 100).unwrap();
        assert_eq!(s.custom_specs(), vec![big.clone()]);
        s.remove("big").unwrap();
        let (f, m) = field_of(s.add(big).unwrap_err());
        assert_eq!(f, "action.limit");
        assert!(m.contains("allowed 1..=100 "), "{m}");
    }

    #[test]
    fn unknown_service_timezone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = Scheduler::new("Nowhere/City", true, dir.path().join("s.json"), 64, 10_000)
            .err()
            .unwrap();
        assert_eq!(field_of(e).0, "timezone");
    }

    #[test]
    fn next_run_in_a_non_utc_zone() {
        let cron = parse_cron("0 2 * * *").unwrap();
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // Winter (UTC+1): 02:00 in Paris is 01:00 UTC.
        let t = Utc.with_ymd_and_hms(2025, 1, 15, 12, 0, 0).unwrap();
        assert_eq!(
            next_after(&cron, paris, t),
            Some(Utc.with_ymd_and_hms(2025, 1, 16, 1, 0, 0).unwrap())
        );
        // Summer (UTC+2): 00:00 UTC.
        let t = Utc.with_ymd_and_hms(2025, 7, 15, 12, 0, 0).unwrap();
        assert_eq!(
            next_after(&cron, paris, t),
            Some(Utc.with_ymd_and_hms(2025, 7, 16, 0, 0, 0).unwrap())
        );
        // Strictly after: a firing exactly now is not the next one.
        let at = Utc.with_ymd_and_hms(2025, 1, 16, 1, 0, 0).unwrap();
        assert_eq!(
            next_after(&cron, paris, at),
            Some(Utc.with_ymd_and_hms(2025, 1, 17, 1, 0, 0).unwrap())
        );
        // Seconds field.
        let secs = parse_cron("*/10 * * * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 3).unwrap();
        assert_eq!(
            next_after(&secs, Tz::UTC, t),
            Some(Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 10).unwrap())
        );
    }

    #[test]
    fn missed_firings_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = scheduler(&dir, false);
        s.add(spec(
            "every",
            "* * * * * *",
            ScheduleAction::Predictive { limit: 1 },
        ))
        .unwrap();
        // Ten seconds late: due once, re-armed after `now`.
        let now = Utc::now() + chrono::Duration::seconds(10);
        let (due, earliest) = s.take_due(now);
        assert_eq!(due.len(), 1);
        assert!(earliest.unwrap() > now);
        // Still running at the next slot: skipped, not queued twice.
        let later = earliest.unwrap();
        assert!(s.take_due(later).0.is_empty());
        s.record(due[0].0, now, Ok(Some("job-1".into())));
        let v = s.get("every").unwrap();
        assert_eq!(
            (v.runs, v.last_job_id.as_deref(), v.last_run),
            (1, Some("job-1"), Some(now))
        );
        s.record(due[0].0, now, Err("boom".into()));
        assert_eq!(s.get("every").unwrap().last_error.as_deref(), Some("boom"));
        // A firing that started no job counts as a run, clears the error
        // and keeps the last job id.
        s.record(due[0].0, now, Ok(None));
        let v = s.get("every").unwrap();
        assert_eq!(
            (v.runs, v.last_job_id.as_deref(), v.last_error),
            (3, Some("job-1"), None)
        );
    }
}
