//! The `warming` binary as an operator runs it: configured by environment,
//! refusing a bad configuration, and on SIGTERM saving unfinished work and
//! exiting 0, then picking that work up at the next start.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::redis::PrivateRedis;
use support::server::free_port;

/// `warming serve` on `port` against `origin`, with `state` as its state
/// directory, no built-in schedules and no rate limit, plus `args` and
/// `env`.
fn spawn_with(
    origin: &str,
    port: u16,
    state: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_warming"))
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .env("WARMING_LISTEN", format!("127.0.0.1:{port}"))
        .env("WARMING_ORIGIN_URL", origin)
        .env("WARMING_STATE_DIR", state)
        .env("WARMING_BUILTIN_SCHEDULES", "false")
        .env("WARMING_MAX_ORIGIN_RPS", "0")
        .env("WARMING_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts `warming serve` on a free port ([`spawn_with`]) and waits until
/// it is ready; returns the process and its base URL.
async fn start(
    http: &reqwest::Client,
    origin: &TestOrigin,
    state: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, String) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = spawn_with(&origin.url_template(), port, state, args, env);
    wait_ready(http, &base).await;
    (child, base)
}

/// `POST /warm/key` with `keys`; the response body.
async fn warm_keys(http: &reqwest::Client, base: &str, keys: &[String]) -> Value {
    http.post(format!("{base}/warm/key"))
        .json(&json!({ "keys": keys }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "service never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn sigterm_saves_queued_work_and_the_next_start_finishes_it() {
    let origin = TestOrigin::start().await;
    let state = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (mut child, base) = start(&http, &origin, state.path(), &[], &[]).await;
    http.post(format!("{base}/warm/emergency-stop"))
        .send()
        .await
        .unwrap();
    let keys: Vec<String> = (0..10).map(|i| format!("p:{i}")).collect();
    let r = warm_keys(&http, &base, &keys).await;
    assert_eq!(r["queued"], 10);
    let job_id = r["job_id"].as_str().unwrap().to_string();

    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");
    let saved: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(state.path().join("pending.json")).unwrap())
            .unwrap();
    assert_eq!(saved.len(), 10);
    assert_eq!(origin.requests(), 0);

    let (mut child, base) = start(&http, &origin, state.path(), &[], &[]).await;
    let job = wait_job(&http, &base, &job_id).await;
    assert_eq!(job["succeeded"], 10, "restored job: {job}");
    assert_eq!(origin.requests(), 10);
    assert!(terminate(&mut child).success());
    assert!(
        !state.path().join("pending.json").exists(),
        "nothing left to save"
    );
}

/// Waits until the origin has received a request for `key`.
async fn wait_fetching(origin: &TestOrigin, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.requests_for(key) == 0 {
        assert!(Instant::now() < deadline, "{key} never reached the origin");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET /warm/jobs/{id}` until done; returns the job.
async fn wait_job(http: &reqwest::Client, base: &str, job_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let job: Value = http
            .get(format!("{base}/warm/jobs/{job_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if job["done"] == true {
            return job;
        }
        assert!(Instant::now() < deadline, "job never finished: {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The keys saved in `pending.json`, if the file exists.
fn saved_keys(state: &std::path::Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(state.join("pending.json")).ok()?;
    let tasks: Vec<Value> = serde_json::from_str(&text).unwrap();
    Some(
        tasks
            .iter()
            .map(|t| t["key"].as_str().unwrap().to_string())
            .collect(),
    )
}

/// SIGTERM while a worker fetches a key from a slow origin and a
/// read-through request waits for it too: draining HTTP and the workers
/// share one `--grace` deadline, so the process exits 0 within grace plus a
/// small margin (they used to run one after the other, about twice the
/// grace). A key that finishes within the grace period is written and not
/// saved; a key still in flight at the deadline is saved to `pending.json`
/// and warmed by the next start: never lost.
///
/// Multi-threaded: `terminate` blocks its thread while the test origin
/// answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shares_one_grace_deadline_and_loses_no_in_flight_key() {
    const GRACE: Duration = Duration::from_secs(2);
    const MARGIN: Duration = Duration::from_millis(900);
    let grace = GRACE.as_secs().to_string();
    let cache_server = PrivateRedis::start().await;
    let mut cache = support::redis::connect(&cache_server.url()).await;
    let cache_url = cache_server.url();
    let env = [("WARMING_CACHE_URL", cache_url.as_str())];
    let origin = TestOrigin::start().await;
    let http = reqwest::Client::new();
    let state = tempfile::tempdir().unwrap();
    let warm = |base: String, key: &'static str| {
        let http = http.clone();
        async move {
            let r = warm_keys(&http, &base, &[key.to_string()]).await;
            assert_eq!(r["queued"], 1, "{r}");
            r["job_id"].as_str().unwrap().to_string()
        }
    };

    // 1. The key finishes within the grace period: written, nothing saved,
    //    and the exit does not wait for the rest of the grace period.
    origin.set_latency(Duration::from_millis(500));
    let (mut child, base) = start(&http, &origin, state.path(), &["--grace", &grace], &env).await;
    warm(base.clone(), "quick:1").await;
    wait_fetching(&origin, "quick:1").await;
    let started = Instant::now();
    let status = terminate(&mut child);
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < GRACE, "exit took {took:?}");
    let value: Option<String> = redis::cmd("GET")
        .arg("quick:1")
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("value-of:quick:1"));
    assert_eq!(saved_keys(state.path()), None, "nothing left to save");

    // 2. The key is still in flight at the deadline, and a read-through
    //    request is running as well.
    origin.set_latency(Duration::from_secs(4));
    let (mut child, base) = start(&http, &origin, state.path(), &["--grace", &grace], &env).await;
    let job_id = warm(base.clone(), "slow:1").await;
    wait_fetching(&origin, "slow:1").await;
    let read = tokio::spawn(http.get(format!("{base}/cache/slow:read")).send());
    wait_fetching(&origin, "slow:read").await;
    let started = Instant::now();
    let status = terminate(&mut child);
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < GRACE + MARGIN,
        "exit took {took:?}, more than --grace {GRACE:?} + {MARGIN:?}"
    );
    let _ = read.await;
    assert_eq!(saved_keys(state.path()), Some(vec!["slow:1".to_string()]));
    let value: Option<String> = redis::cmd("GET")
        .arg("slow:1")
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!(value, None, "cut off before the origin answered");

    // The next start warms it under its old job id.
    origin.set_latency(Duration::ZERO);
    let (mut child, base) = start(&http, &origin, state.path(), &[], &env).await;
    let job = wait_job(&http, &base, &job_id).await;
    assert_eq!(job["source"], "restored", "{job}");
    assert_eq!(job["succeeded"], 1, "{job}");
    let value: Option<String> = redis::cmd("GET")
        .arg("slow:1")
        .query_async(&mut cache)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("value-of:slow:1"));
    assert_eq!(origin.requests_for("slow:1"), 2);
    assert!(terminate(&mut child).success());
    assert_eq!(saved_keys(state.path()), None, "restored, then removed");
}

#[test]
fn a_bad_configuration_is_reported_whole_and_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_warming"))
        .arg("serve")
        .env("WARMING_LISTEN", "127.0.0.1:0")
        .env("WARMING_CONCURRENT_WARMERS", "0")
        .env("WARMING_DEFAULT_STRATEGY", "random")
        .env("WARMING_ORIGIN_URL", "http://127.0.0.1:1/no-placeholder")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["concurrent_warmers", "default_strategy", "origin_url"] {
        assert!(err.contains(field), "{field} not reported in:\n{err}");
    }
}

/// `warming replay` as a user runs it: a small CSV with per-key TTLs, the
/// table on stdout, the JSON file with the fields for every mode,
/// the PNG chart; a bad flag is refused with a message and nothing written.
#[test]
fn replay_command_writes_table_json_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("small.csv");
    let mut csv = String::from("timestamp,key,size,ttl\n");
    for i in 0..600u32 {
        // Ten keys read every 10 s in turn; values live 45 s.
        csv.push_str(&format!("{},k{},100,45\n", i, i % 10));
    }
    std::fs::write(&trace, csv).unwrap();
    let (json, png) = (dir.path().join("out.json"), dir.path().join("out.png"));
    let out = Command::new(env!("CARGO_BIN_EXE_warming"))
        .arg("replay")
        .arg("--trace")
        .arg(&trace)
        .args([
            "--modes",
            "none,refresh-ahead,heuristic,learned,oracle-seen",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&png)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in [
        "none",
        "refresh-ahead",
        "heuristic",
        "learned",
        "oracle-seen",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(mode)),
            "{mode} row: {stdout}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["trace"], "small.csv");
    for mode in [
        "none",
        "refresh-ahead",
        "heuristic",
        "learned",
        "oracle-seen",
    ] {
        let m = &report["modes"][mode];
        for field in support::REPLAY_FIELDS {
            assert!(m[field].is_number(), "{mode}.{field}: {m}");
        }
        assert_eq!(m["requests"], 600, "{mode}");
    }
    // Without warming each key misses once per 45 s value (every 50 s).
    assert_eq!(report["modes"]["none"]["misses_cold"], 10);
    assert!(report["modes"]["none"]["misses_expired"].as_u64().unwrap() >= 100);
    let chart = std::fs::read(&png).unwrap();
    assert_eq!(&chart[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");

    let bad = dir.path().join("bad.json");
    let out = Command::new(env!("CARGO_BIN_EXE_warming"))
        .arg("replay")
        .arg("--trace")
        .arg(&trace)
        .args(["--strategy", "fastest", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--strategy") && err.contains("allowed"),
        "{err}"
    );
    assert!(!bad.exists(), "nothing written on a refused run");
}
