//! Warming behaviour end to end: origin protection (rate limit, retries,
//! 404s, emergency stop), deduplication, strategy order, pattern warming,
//! schedules, coalesced reads, and no lost work across a restart.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::server::{TestServer, settings};

const WAIT: Duration = Duration::from_secs(15);

fn keys_of(body: &Value, field: &str) -> Vec<String> {
    body[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rate_limit_holds_including_retries() {
    let origin = TestOrigin::start().await;
    // Every fifth key fails once, so retries are part of the load.
    for i in (0..40).step_by(5) {
        origin.fail_next(&format!("rl:{i}"), &[503]);
    }
    let mut s = settings(&origin.url_template());
    s.tunables.max_origin_rps = 15;
    s.tunables.concurrent_warmers = 20;
    let srv = TestServer::start(s).await;
    let probe = support::lateness::LatenessProbe::start();
    let keys: Vec<String> = (0..40).map(|i| format!("rl:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    let job = srv
        .wait_job(body["job_id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    let lateness = probe.stop().await;
    assert_eq!(job["succeeded"], 40, "{job}");
    let times = origin.request_times();
    assert_eq!(times.len(), 48);
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let rate = (times.len() - 1) as f64 / span;
    assert!(
        rate <= 15.0 * 1.05,
        "origin saw {rate:.2} req/s with a limit of 15"
    );
    // Over every 1 s window, at most limit + 1 requests (plus those this
    // process stamped late, if its scheduler was starved).
    let busiest = origin.busiest_second();
    let slack = support::lateness::slack(15, lateness);
    assert!(
        busiest <= 16 + slack,
        "{busiest} requests within 1 s (slack {slack} for wake-ups up to {lateness:?} late)"
    );
    let (_, st) = srv.get("/warm/status").await;
    assert!(
        st["metrics"]["rate_limit_hits"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(st["metrics"]["origin_requests"], 48);
    srv.shutdown().await;
}

#[tokio::test]
async fn flaky_origin_is_retried_with_backoff_and_404_is_not() {
    let origin = TestOrigin::start().await;
    origin.fail_next("flaky", &[503, 502]);
    origin.fail_next("doomed", &[500, 500, 500, 500, 500]);
    origin.set_status("gone", 404);
    origin.set_status("bad", 400);
    let mut s = settings(&origin.url_template());
    s.tunables.retry_attempts = 3;
    s.tunables.backoff_base = Duration::from_millis(50);
    let srv = TestServer::start(s).await;
    let started = Instant::now();
    let (_, body) = srv
        .post(
            "/warm/key",
            json!({"keys": ["flaky", "doomed", "gone", "bad"]}),
        )
        .await;
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let outcome = |k: &str| {
        job["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == k)
            .unwrap()
            .clone()
    };
    assert_eq!(outcome("flaky")["status"], "success", "{job}");
    assert_eq!(outcome("flaky")["attempts"], 3);
    assert_eq!(outcome("doomed")["status"], "failed");
    assert_eq!(outcome("doomed")["attempts"], 4, "1 + retry_attempts");
    assert!(
        outcome("doomed")["error"].as_str().unwrap().contains("500"),
        "{job}"
    );
    assert_eq!(outcome("gone")["status"], "not_found");
    assert_eq!(outcome("gone")["attempts"], 1);
    assert_eq!(outcome("bad")["status"], "failed");
    assert_eq!(outcome("bad")["attempts"], 1, "4xx is final");
    assert_eq!(origin.requests_for("flaky"), 3);
    assert_eq!(origin.requests_for("doomed"), 4);
    assert_eq!(origin.requests_for("gone"), 1);
    assert_eq!(origin.requests_for("bad"), 1);
    // Backoff 50 + 100 + 200 ms (jitter only adds) before the last attempt of "doomed".
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["metrics"]["failure_total"], 3);
    assert_eq!(st["metrics"]["success_total"], 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn emergency_stop_trips_on_a_slow_origin_and_recovers_by_itself() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(300));
    let mut s = settings(&origin.url_template());
    s.tunables.emergency_threshold = Duration::from_millis(100);
    s.tunables.emergency_window = 5;
    s.tunables.emergency_cooldown = Duration::from_millis(300);
    s.tunables.concurrent_warmers = 2;
    s.tunables.retry_attempts = 0;
    let srv = TestServer::start(s).await;
    let keys: Vec<String> = (0..60).map(|i| format!("slow:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let st = srv
        .wait_status(WAIT, "emergency stop", |s| s["emergency_stop"] == true)
        .await;
    assert!(
        st["emergency_reason"].as_str().unwrap().contains("p95"),
        "{st}"
    );
    assert_eq!(st["metrics"]["emergency_stops"], 1);
    // Dispatch has stopped; queued work is kept, not dropped.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = origin.requests();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = origin.requests() - before;
    assert!(
        during <= 3,
        "only probes reach the origin while stopped, got {during}"
    );
    let (_, st) = srv.get("/warm/status").await;
    assert!(st["queued_tasks"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(st["emergency_stop"], true);
    // The origin recovers; the probe sees it and dispatch resumes by itself.
    origin.set_latency(Duration::ZERO);
    srv.wait_status(WAIT, "resumed", |s| s["emergency_stop"] == false)
        .await;
    let job = srv.wait_job(&job_id, WAIT).await;
    assert_eq!(
        job["succeeded"], 60,
        "every queued key warmed after recovery: {job}"
    );
    let metrics = srv.metrics().await;
    assert!(
        metrics.contains("warming_emergency_stops_total 1"),
        "{metrics}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn manual_emergency_stop_holds_until_resume() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, _) = srv
        .post(
            "/warm/emergency-stop",
            json!({"reason": "origin maintenance"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = srv.post("/warm/key", json!({"keys": ["m:1", "m:2"]})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(origin.requests(), 0);
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["emergency_reason"], "origin maintenance");
    assert_eq!(st["queued_tasks"], 2);
    assert_eq!(st["worker_status"][0]["state"], "paused");
    assert_eq!(
        st["metrics"]["emergency_stops"], 0,
        "only automatic stops are counted"
    );
    let (status, _) = srv.post("/warm/resume", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 2);
    srv.shutdown().await;
}

#[tokio::test]
async fn deduplication_and_min_rewarm_interval() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(200));
    let mut s = settings(&origin.url_template());
    s.tunables.concurrent_warmers = 1;
    let srv = TestServer::start(s).await;
    let (_, first) = srv
        .post("/warm/key", json!({"keys": ["d:1", "d:2", "d:3"]}))
        .await;
    // Same keys while queued or in flight: not queued again.
    let (_, second) = srv
        .post("/warm/key", json!({"keys": ["d:1", "d:2", "d:3", "d:4"]}))
        .await;
    assert_eq!(second["queued"], 1, "{second}");
    assert_eq!(second["deduplicated"], 3, "{second}");
    srv.wait_job(first["job_id"].as_str().unwrap(), WAIT).await;
    let j2 = srv.wait_job(second["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(j2["deduplicated"], 3);
    assert_eq!(origin.requests_for("d:1"), 1);
    // Warmed a moment ago: skipped unless forced.
    let (_, third) = srv.post("/warm/key", json!({"keys": ["d:1", "d:2"]})).await;
    assert_eq!(third["queued"], 0, "{third}");
    assert_eq!(third["skipped_recent"], 2, "{third}");
    let (_, forced) = srv
        .post("/warm/key", json!({"keys": ["d:1"], "force": true}))
        .await;
    assert_eq!(forced["queued"], 1, "{forced}");
    srv.wait_job(forced["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(origin.requests_for("d:1"), 2);
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["metrics"]["deduplicated_total"], 3);
    srv.shutdown().await;
}

#[tokio::test]
async fn strategies_order_the_queue() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    // Access history: c is hottest, then a, b unseen.
    let mut keys = Vec::new();
    keys.extend(std::iter::repeat_n("s:c", 20));
    keys.extend(std::iter::repeat_n("s:a", 5));
    srv.post("/warm/access", json!({"keys": keys})).await;
    srv.post("/warm/emergency-stop", json!({})).await;

    let (_, sel) = srv
        .post(
            "/warm/key",
            json!({"keys": ["s:b", "s:a", "s:c"], "strategy": "selective", "priority": 90}),
        )
        .await;
    assert_eq!(
        keys_of(&sel, "keys"),
        ["s:c", "s:a", "s:b"],
        "hottest first"
    );
    let (_, br) = srv
        .post("/warm/key", json!({"keys": ["u:1:posts:9", "u:1", "u:1:posts", "u:2"], "strategy": "breadth", "priority": 90}))
        .await;
    assert_eq!(
        keys_of(&br, "keys"),
        ["u:1", "u:2", "u:1:posts", "u:1:posts:9"],
        "parents before children"
    );
    srv.shutdown().await;
}

/// The response's key order is only a promise: with one worker, the origin
/// must be asked for the keys in that order, for every strategy. A slow
/// "blocker" key keeps the only worker busy while the whole request is
/// queued, so the order the origin sees is the queue's, not the intake's.
#[tokio::test]
async fn one_worker_fetches_in_the_strategy_order() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.concurrent_warmers = 1;
    let srv = TestServer::start(s).await;
    // Hotness: x hottest, then y; z never read.
    let mut accesses = Vec::new();
    for prefix in ["sel", "pri"] {
        accesses.extend(std::iter::repeat_n(format!("{prefix}:x"), 20));
        accesses.extend(std::iter::repeat_n(format!("{prefix}:y"), 5));
    }
    let (status, _) = srv.post("/warm/access", json!({"keys": accesses})).await;
    assert_eq!(status, StatusCode::OK);
    origin.set_latency(Duration::from_millis(150));

    let cases: [(&str, Vec<&str>, Vec<&str>); 3] = [
        (
            "selective",
            vec!["sel:z", "sel:y", "sel:x"],
            vec!["sel:x", "sel:y", "sel:z"],
        ),
        (
            "breadth",
            vec!["b:1:posts:9", "b:1", "b:1:posts", "b:2"],
            vec!["b:1", "b:2", "b:1:posts", "b:1:posts:9"],
        ),
        (
            "priority",
            vec!["pri:z", "pri:y", "pri:x"],
            vec!["pri:x", "pri:y", "pri:z"],
        ),
    ];
    for (strategy, keys, expected) in cases {
        origin.reset_counts();
        let blocker = format!("blocker:{strategy}");
        let (_, b) = srv
            .post("/warm/key", json!({"keys": [blocker], "priority": 100}))
            .await;
        let deadline = Instant::now() + WAIT;
        while origin.requests_for(&blocker) == 0 {
            assert!(Instant::now() < deadline, "blocker never fetched");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, r) = srv
            .post(
                "/warm/key",
                json!({"keys": keys, "strategy": strategy, "priority": 90}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{r}");
        assert_eq!(keys_of(&r, "keys"), expected, "{strategy} answer: {r}");
        srv.wait_job(b["job_id"].as_str().unwrap(), WAIT).await;
        let job = srv.wait_job(r["job_id"].as_str().unwrap(), WAIT).await;
        assert_eq!(job["succeeded"], expected.len(), "{job}");
        let mut fetched = vec![blocker.as_str()];
        fetched.extend(&expected);
        assert_eq!(
            origin.request_keys(),
            fetched,
            "{strategy}: the origin's order"
        );
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn priority_strategy_prefers_cheap_hot_keys() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    // Teach the cost model: "slow:" keys take 150 ms at the origin, "fast:" ones ~0.
    origin.set_latency(Duration::from_millis(150));
    let (_, b) = srv.post("/warm/key", json!({"keys": ["slow:seed"]})).await;
    srv.wait_job(b["job_id"].as_str().unwrap(), WAIT).await;
    origin.set_latency(Duration::ZERO);
    let (_, b) = srv.post("/warm/key", json!({"keys": ["fast:seed"]})).await;
    srv.wait_job(b["job_id"].as_str().unwrap(), WAIT).await;
    // Equal hotness: the cheaper key scores higher.
    srv.post("/warm/access", json!({"keys": ["slow:x", "fast:x"]}))
        .await;
    let (_, p) = srv
        .post(
            "/warm/key",
            json!({"keys": ["slow:x", "fast:x"], "strategy": "priority"}),
        )
        .await;
    assert_eq!(keys_of(&p, "keys"), ["fast:x", "slow:x"], "{p}");
    srv.shutdown().await;
}

#[tokio::test]
async fn pattern_warming_matches_known_keys() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    srv.post("/warm/access", json!({"keys": ["user:123:profile", "user:123:settings", "user:124:profile", "user:123:posts:1"]})).await;
    let (status, body) = srv
        .post(
            "/warm/pattern",
            json!({"pattern": "user:123:*", "limit": 50, "priority": 70, "strategy": "breadth"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pattern"], "user:123:*");
    assert_eq!(body["queued"], 3);
    let matched = keys_of(&body, "matched_keys");
    assert_eq!(
        matched.last().unwrap(),
        "user:123:posts:1",
        "breadth: deepest last: {matched:?}"
    );
    assert!(!matched.contains(&"user:124:profile".to_string()));
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let (_, limited) = srv
        .post(
            "/warm/pattern",
            json!({"pattern": "user:12?:*", "limit": 2, "force": true}),
        )
        .await;
    assert_eq!(keys_of(&limited, "matched_keys").len(), 2, "{limited}");
    let (_, none) = srv
        .post("/warm/pattern", json!({"pattern": "nothing:*"}))
        .await;
    assert_eq!(none["queued"], 0);
    assert_eq!(none["matched_keys"], json!([]));
    srv.shutdown().await;
}

/// Registers `refresh`, a `refresh` schedule (limit 10) firing every second.
async fn register_refresh_every_second(srv: &TestServer) {
    let (status, body) = srv
        .post(
            "/warm/schedules",
            json!({"name": "refresh", "cron": "* * * * * *", "action": {"type": "refresh", "limit": 10}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// A `refresh` schedule warms, of the predicted keys, those whose cached
/// value is missing or expires before its next firing (+ the origin
/// timeout), and leaves keys with plenty of TTL alone.
#[tokio::test]
async fn a_refresh_schedule_warms_only_keys_about_to_expire() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.min_rewarm_interval = Duration::ZERO;
    s.tunables.origin_timeout = Duration::from_secs(2);
    let srv = TestServer::start(s).await;
    let keys = ["rf:fresh", "rf:expiring", "rf:missing"];
    let accesses = [keys, keys, keys].concat();
    let (status, _) = srv.post("/warm/access", json!({ "keys": accesses })).await;
    assert_eq!(status, StatusCode::OK);
    for (key, max_age) in [("rf:fresh", 600), ("rf:expiring", 3)] {
        origin.set_max_age(Some(max_age));
        let (_, body) = srv.post("/warm/key", json!({"keys": [key]})).await;
        let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
        assert_eq!(job["succeeded"], 1, "{job}");
    }
    origin.set_max_age(None);
    origin.reset_counts();

    // Every second: horizon = 1 s to the next firing + 2 s origin timeout,
    // so the 3 s value is due within a second or two, the 600 s one never.
    register_refresh_every_second(&srv).await;
    let deadline = Instant::now() + WAIT;
    while origin.requests_for("rf:missing") == 0 || origin.requests_for("rf:expiring") == 0 {
        assert!(
            Instant::now() < deadline,
            "refresh never warmed the due keys: missing {}, expiring {}",
            origin.requests_for("rf:missing"),
            origin.requests_for("rf:expiring")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few more firings: the fresh key is looked up, never fetched.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    srv.delete("/warm/schedules/refresh").await;
    assert_eq!(origin.requests_for("rf:fresh"), 0);
    let (_, view) = srv.get("/warm/schedules").await;
    let builtin = view["schedules"]
        .as_array()
        .map(|a| a.iter().any(|s| s["name"] == "expiry-refresh"))
        .unwrap_or(false);
    assert!(!builtin, "built-in schedules are off in tests: {view}");
    srv.shutdown().await;
}

/// A predicted key the origin does not have (404) is not asked for again
/// at every `refresh` firing: the answer counts as a value of
/// `default_ttl`, while a missing key the origin has is warmed at once.
#[tokio::test]
async fn a_refresh_schedule_does_not_ask_again_for_a_key_the_origin_lacks() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.min_rewarm_interval = Duration::ZERO;
    s.tunables.origin_timeout = Duration::from_secs(2);
    let srv = TestServer::start(s).await;
    origin.set_status("rf:gone", 404);
    let (status, _) = srv
        .post(
            "/warm/access",
            json!({ "keys": ["rf:gone", "rf:gone", "rf:here"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    register_refresh_every_second(&srv).await;
    let deadline = Instant::now() + WAIT;
    while origin.requests_for("rf:gone") == 0 || origin.requests_for("rf:here") == 0 {
        assert!(Instant::now() < deadline, "refresh never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Three more firings.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (_, view) = srv.get("/warm/schedules/refresh").await;
    srv.delete("/warm/schedules/refresh").await;
    assert!(view["runs"].as_u64().unwrap() >= 3, "{view}");
    assert_eq!(
        origin.requests_for("rf:gone"),
        1,
        "404 asked once, not at every firing"
    );
    assert_eq!(origin.requests_for("rf:here"), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn a_seconds_level_schedule_fires() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, body) = srv
        .post(
            "/warm/schedules",
            json!({"name": "every-second", "cron": "* * * * * *", "action": {"type": "keys", "keys": ["sched:a", "sched:b"]}, "strategy": "breadth"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let deadline = Instant::now() + WAIT;
    let view = loop {
        let (_, v) = srv.get("/warm/schedules/every-second").await;
        if v["runs"].as_u64().unwrap_or(0) >= 1 && v["last_job_id"].is_string() {
            break v;
        }
        assert!(Instant::now() < deadline, "schedule never fired: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let job = srv
        .wait_job(view["last_job_id"].as_str().unwrap(), WAIT)
        .await;
    assert_eq!(job["source"], "schedule:every-second");
    assert!(origin.requests_for("sched:a") >= 1);
    // Keys registered by a schedule are known to pattern warming.
    let (_, p) = srv
        .post(
            "/warm/pattern",
            json!({"pattern": "sched:*", "force": true}),
        )
        .await;
    assert_eq!(p["matched_keys"].as_array().unwrap().len(), 2, "{p}");
    srv.delete("/warm/schedules/every-second").await;
    srv.shutdown().await;
}

#[tokio::test]
async fn concurrent_cold_reads_fetch_once() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(300));
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let http = srv.http.clone();
        let url = format!("{}/cache/cold:key", srv.url);
        tasks.push(tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            (
                r.status(),
                r.headers()["x-cache"].to_str().unwrap().to_string(),
                r.text().await.unwrap(),
            )
        }));
    }
    let mut sources = std::collections::HashMap::new();
    for t in tasks {
        let (status, source, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "value-of:cold:key");
        *sources.entry(source).or_insert(0) += 1;
    }
    assert_eq!(
        origin.requests_for("cold:key"),
        1,
        "exactly one origin request: {sources:?}"
    );
    assert_eq!(sources.get("miss"), Some(&1), "{sources:?}");
    // A caller that gives up does not cancel the shared fetch for the others.
    let slow = srv
        .http
        .get(format!("{}/cache/cold:other", srv.url))
        .timeout(Duration::from_millis(50))
        .send()
        .await;
    assert!(slow.is_err());
    let r = srv
        .http
        .get(format!("{}/cache/cold:other", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "value-of:cold:other");
    assert_eq!(origin.requests_for("cold:other"), 1);
    srv.shutdown().await;
}

#[tokio::test]
async fn accepted_work_survives_a_restart() {
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(&origin.url_template());
    s.service.state_dir = dir.path().to_path_buf();
    let srv = TestServer::start_in(s.clone()).await;
    srv.post("/warm/emergency-stop", json!({})).await;
    let keys: Vec<String> = (0..25).map(|i| format!("r:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    assert_eq!(body["queued"], 25);
    let job_id = body["job_id"].as_str().unwrap().to_string();
    srv.shutdown().await;
    assert!(
        dir.path().join("pending.json").exists(),
        "unfinished work saved"
    );
    assert_eq!(origin.requests(), 0);

    let srv = TestServer::start_in(s).await;
    let job = srv.wait_job(&job_id, WAIT).await;
    assert_eq!(job["succeeded"], 25, "{job}");
    assert_eq!(job["source"], "restored");
    assert_eq!(origin.requests(), 25);
    assert!(!dir.path().join("pending.json").exists());
    srv.shutdown().await;
}

#[tokio::test]
async fn rate_limit_changes_at_run_time() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, _) = srv
        .post("/warm/config", json!({"max_origin_rps": 10}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<String> = (0..21).map(|i| format!("rt:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let times = origin.request_times();
    let span = times.last().unwrap().duration_since(times[0]);
    assert!(
        span >= Duration::from_millis(1900),
        "21 requests at 10/s need ~2 s, took {span:?}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn workers_waiting_for_the_rate_limiter_say_so() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.max_origin_rps = 2;
    s.tunables.concurrent_warmers = 4;
    let srv = TestServer::start(s).await;
    let keys: Vec<String> = (0..6).map(|i| format!("slow-lane:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    let waiting = |st: &Value| -> Vec<Value> {
        st["worker_status"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "waiting_rate_limit")
            .cloned()
            .collect()
    };
    let st = srv
        .wait_status(WAIT, "a worker waiting for the rate limiter", |st| {
            !waiting(st).is_empty()
        })
        .await;
    for w in waiting(&st) {
        // The worker keeps its key while it waits.
        assert!(
            w["current_key"].as_str().unwrap().starts_with("slow-lane:"),
            "{st}"
        );
        assert!(w["started_at"].is_string(), "{st}");
    }
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 6, "{job}");
    let st = srv
        .wait_status(WAIT, "every worker idle again", |st| {
            st["worker_status"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["state"] == "idle")
        })
        .await;
    assert!(
        st["metrics"]["rate_limit_hits"].as_u64().unwrap() > 0,
        "{st}"
    );
    srv.shutdown().await;
}
