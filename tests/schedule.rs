//! The scheduler's loop against a real clock: a seconds-level schedule fires
//! through a recording [`ScheduleRunner`], and stops firing once removed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use warming::schedule::{ScheduleAction, ScheduleRunner, ScheduleSpec, Scheduler, builtin_specs};

/// Records every schedule it is asked to run, and answers with a job id.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
}

impl Recorder {
    fn count(&self, name: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }
}

#[async_trait]
impl ScheduleRunner for Recorder {
    async fn run_schedule(
        &self,
        spec: &ScheduleSpec,
        _firing: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<String>, String> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(spec.name.clone());
        if spec.name == "failing" {
            return Err("origin down".into());
        }
        Ok(Some(format!("job-{}", calls.len())))
    }
}

fn every_second(name: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: name.into(),
        cron: "*/1 * * * * *".into(),
        timezone: Some("Europe/Paris".into()),
        action: ScheduleAction::Keys {
            keys: vec!["user:1:profile".into()],
        },
        priority: Some(60),
        strategy: None,
    }
}

#[tokio::test]
async fn seconds_schedule_fires_and_stops_when_removed() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = Arc::new(
        Scheduler::new("UTC", true, dir.path().join("schedules.json"), 256, 10_000).unwrap(),
    );
    let recorder = Arc::new(Recorder::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(scheduler.clone().run(recorder.clone(), cancel.clone()));

    // Added while the loop sleeps until a built-in's far-away firing: the
    // loop must be woken to arm it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    scheduler.add(every_second("tick")).unwrap();
    scheduler.add(every_second("failing")).unwrap();

    tokio::time::sleep(Duration::from_millis(3200)).await;
    let fired = recorder.count("tick");
    assert!(fired >= 2, "fired {fired} times in 3.2 s");
    assert!(fired <= 4, "fired {fired} times in 3.2 s");

    let view = scheduler.get("tick").unwrap();
    assert!(view.runs >= 2, "{view:?}");
    assert!(view.last_run.is_some());
    assert!(view.last_job_id.as_deref().unwrap().starts_with("job-"));
    assert_eq!(view.last_error, None);
    assert!(view.next_run.unwrap() > view.last_run.unwrap());
    let failing = scheduler.get("failing").unwrap();
    assert_eq!(failing.last_error.as_deref(), Some("origin down"));
    assert_eq!(failing.last_job_id, None);

    scheduler.remove("tick").unwrap();
    scheduler.remove("failing").unwrap();
    // A run already spawned may still land; then nothing more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_remove = recorder.count("tick");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(recorder.count("tick"), after_remove, "fired after removal");
    // Nothing else ran but the built-ins (`expiry-refresh` fires every
    // minute, so it may have when the test crossed a minute).
    let builtins: Vec<String> = builtin_specs().into_iter().map(|s| s.name).collect();
    let calls = recorder.calls.lock().unwrap().clone();
    assert!(
        calls
            .iter()
            .all(|n| n == "tick" || n == "failing" || builtins.contains(n)),
        "{calls:?}"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run ends on cancel")
        .unwrap();
}

#[tokio::test]
async fn schedules_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/schedules.json");
    let first = Scheduler::new("Europe/Paris", true, path.clone(), 256, 10_000).unwrap();
    first.add(every_second("kept")).unwrap();
    drop(first);

    let second = Scheduler::new("Europe/Paris", true, path, 256, 10_000).unwrap();
    let names: Vec<String> = second.list().into_iter().map(|v| v.spec.name).collect();
    assert_eq!(
        names,
        [
            "daily-warmup",
            "hourly-refresh",
            "peak-hours-warmup",
            "expiry-refresh",
            "kept"
        ]
    );
    assert_eq!(
        second.get("daily-warmup").unwrap().timezone_effective,
        "Europe/Paris"
    );
    assert_eq!(second.registered_keys(), ["user:1:profile"]);
}
