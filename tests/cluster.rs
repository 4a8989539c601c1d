//! Several `warming serve` processes as one service, coordinated through a
//! real Redis (`WARMING_COORDINATION=redis`): a big job spread over the
//! instances with each key fetched once, one origin rate limit for all,
//! an instance killed with SIGKILL mid-job without losing work, schedules
//! fired once per firing, configuration shared, a Redis restart survived,
//! and completed warms shared with every instance's predictor.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::server::free_port;

/// One `warming serve` process of the cluster.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{n}", std::process::id())
}

/// Settings shared by every instance of one test cluster.
struct ClusterEnv {
    origin: String,
    redis: String,
    ns: String,
    extra: Vec<(&'static str, String)>,
    state: tempfile::TempDir,
}

impl ClusterEnv {
    fn new(origin: &TestOrigin, redis: &str) -> Self {
        let ns = unique("ct");
        ClusterEnv {
            origin: origin.url_template(),
            redis: redis.to_string(),
            extra: vec![("WARMING_CACHE_PREFIX", format!("{ns}:"))],
            ns,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn set(&mut self, name: &'static str, value: impl Into<String>) {
        self.extra.push((name, value.into()));
    }

    fn spawn(&self, n: usize) -> Instance {
        let port = free_port();
        let state = self.state.path().join(format!("i{n}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warming"));
        cmd.arg("serve")
            .env("WARMING_LISTEN", format!("127.0.0.1:{port}"))
            .env("WARMING_ORIGIN_URL", &self.origin)
            .env("WARMING_CACHE_URL", &self.redis)
            .env("WARMING_COORDINATION", "redis")
            .env("WARMING_CLUSTER_NAMESPACE", &self.ns)
            .env("WARMING_INSTANCE_ID", format!("instance-{n}"))
            .env("WARMING_STATE_DIR", state)
            .env("WARMING_BUILTIN_SCHEDULES", "false")
            .env("WARMING_MAX_ORIGIN_RPS", "0")
            .env("WARMING_LOG", "info")
            .stdout(std::fs::File::create(self.state.path().join(format!("i{n}.log"))).unwrap())
            .stderr(Stdio::null());
        for (k, v) in &self.extra {
            cmd.env(k, v);
        }
        Instance {
            child: cmd.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ClusterEnv {
    /// Deletes what the test's cluster left in Redis (its namespace's
    /// coordination keys and its prefixed cache keys); when a test fails,
    /// shows what each instance logged.
    fn drop(&mut self) {
        if let Ok(mut con) =
            redis::Client::open(self.redis.as_str()).and_then(|c| c.get_connection())
        {
            let pattern = format!("*{}*", self.ns);
            let mut cursor = 0u64;
            loop {
                let Ok((next, keys)) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query::<(u64, Vec<String>)>(&mut con)
                else {
                    break;
                };
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query(&mut con);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(self.state.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- {} (last 40 lines) ---", path.display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
        }
    }
}

async fn ready(http: &reqwest::Client, inst: &Instance) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{}/readyz", inst.base)).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never became ready",
            inst.base
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(env: &ClusterEnv, n: usize, http: &reqwest::Client) -> Vec<Instance> {
    let all: Vec<Instance> = (0..n).map(|i| env.spawn(i)).collect();
    for i in &all {
        ready(http, i).await;
    }
    all
}

async fn get(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http.post(url).json(&body).send().await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{status}: {v}");
    v
}

/// Polls the job through `base` until done.
async fn wait_job(http: &reqwest::Client, base: &str, job: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{base}/warm/jobs/{job}")).send().await {
            if let Ok(v) = r.json::<Value>().await {
                if v["done"] == true {
                    return v;
                }
                if Instant::now() >= deadline {
                    let none = Vec::new();
                    let odd: Vec<&Value> = v["keys"]
                        .as_array()
                        .unwrap_or(&none)
                        .iter()
                        .filter(|k| k["status"] != "success")
                        .take(10)
                        .collect();
                    panic!(
                        "job not done in {within:?}: queued {} in_flight {} succeeded {}; not succeeded: {odd:?}; body {}",
                        v["queued"],
                        v["in_flight"],
                        v["succeeded"],
                        v.to_string().chars().take(300).collect::<String>()
                    );
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "job {job} not done in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

const REDIS: &str = "redis://127.0.0.1:6379/13";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_job_is_spread_over_instances_and_each_key_fetched_once() {
    let origin = TestOrigin::start().await;
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_CONCURRENT_WARMERS", "8");
    let http = reqwest::Client::new();
    let nodes = start(&env, 3, &http).await;

    // Every instance sees every other one.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = get(&http, format!("{}/warm/status", nodes[2].base)).await;
        if st["instances"].as_array().unwrap().len() == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "not every instance listed: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let keys: Vec<String> = (0..10_000).map(|i| format!("big:{i}")).collect();
    let r = post(
        &http,
        format!("{}/warm/key", nodes[0].base),
        json!({"keys": keys}),
    )
    .await;
    assert_eq!(r["queued"], 10_000);
    let job = r["job_id"].as_str().unwrap().to_string();
    // Any instance reports the job.
    let done = wait_job(&http, &nodes[1].base, &job, Duration::from_secs(180)).await;
    assert_eq!(
        done["succeeded"], 10_000,
        "queued {} failed {}",
        done["queued"], done["failed"]
    );
    assert_eq!(origin.requests(), 10_000, "each key fetched exactly once");
    for i in (0..10_000).step_by(997) {
        assert_eq!(origin.requests_for(&format!("big:{i}")), 1);
    }
    let mut per_instance = Vec::new();
    for n in &nodes {
        let text = support::server::get_text(&http, &format!("{}/metrics", n.base)).await;
        per_instance.push(metric(&text, "warming_success_total"));
    }
    assert_eq!(
        per_instance.iter().sum::<f64>(),
        10_000.0,
        "{per_instance:?}"
    );
    assert!(
        per_instance.iter().all(|n| *n > 500.0),
        "work spread over instances: {per_instance:?}"
    );
    eprintln!("keys warmed per instance: {per_instance:?}");

    // Keys warmed anywhere are skipped everywhere within min_rewarm_interval.
    let again = post(
        &http,
        format!("{}/warm/key", nodes[2].base),
        json!({"keys": ["big:1", "big:2"]}),
    )
    .await;
    assert_eq!(again["skipped_recent"], 2, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_rate_limit_holds_for_the_whole_cluster() {
    let origin = TestOrigin::start().await;
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_MAX_ORIGIN_RPS", "40");
    env.set("WARMING_CONCURRENT_WARMERS", "10");
    let http = reqwest::Client::new();
    let nodes = start(&env, 3, &http).await;
    let keys: Vec<String> = (0..160).map(|i| format!("rate:{i}")).collect();
    // The origin stamps requests in this process: its wake-up lateness
    // (a proxy for the machine's, which the instances share) bunches them.
    let probe = support::lateness::LatenessProbe::start();
    let r = post(
        &http,
        format!("{}/warm/key", nodes[0].base),
        json!({"keys": keys}),
    )
    .await;
    wait_job(
        &http,
        &nodes[0].base,
        r["job_id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    let lateness = probe.stop().await;
    let times = origin.request_times();
    assert_eq!(times.len(), 160);
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let rate = (times.len() - 1) as f64 / span;
    eprintln!("origin saw {rate:.1} req/s from 3 instances (limit 40)");
    assert!(
        rate <= 40.0 * 1.05,
        "origin saw {rate:.1} req/s with a cluster limit of 40"
    );
    let busiest = origin.busiest_second();
    let slack = support::lateness::slack(40, lateness);
    assert!(
        busiest <= 42 + slack,
        "{busiest} requests within one second (slack {slack} for wake-ups up to {lateness:?} late)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_loses_no_accepted_work() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(40));
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_CONCURRENT_WARMERS", "4");
    env.set("WARMING_VISIBILITY_TIMEOUT", "2");
    let http = reqwest::Client::new();
    let mut nodes = start(&env, 3, &http).await;
    let keys: Vec<String> = (0..600).map(|i| format!("kill:{i}")).collect();
    let r = post(
        &http,
        format!("{}/warm/key", nodes[1].base),
        json!({"keys": keys}),
    )
    .await;
    let job = r["job_id"].as_str().unwrap().to_string();
    // Let some work happen everywhere, then kill instance 0 without warning.
    let deadline = Instant::now() + Duration::from_secs(30);
    while origin.requests() < 120 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed_at = Instant::now();
    let mut victim = nodes.remove(0);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let done = wait_job(&http, &nodes[0].base, &job, Duration::from_secs(120)).await;
    eprintln!("job finished {:?} after the kill", killed_at.elapsed());
    assert_eq!(
        done["succeeded"], 600,
        "every accepted key warmed: {}",
        done["queued"]
    );
    for i in 0..600 {
        assert!(
            origin.requests_for(&format!("kill:{i}")) >= 1,
            "kill:{i} never fetched"
        );
    }
    // The dead instance disappears from the status.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = get(&http, format!("{}/warm/status", nodes[0].base)).await;
        if st["instances"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dead instance still listed: {st}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_firing_and_config_is_shared() {
    let origin = TestOrigin::start().await;
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_MIN_REWARM_INTERVAL", "0");
    let http = reqwest::Client::new();
    let nodes = start(&env, 3, &http).await;

    // A configuration change on one instance reaches the others within a second or so.
    post(
        &http,
        format!("{}/warm/config", nodes[0].base),
        json!({"max_batch_size": 77, "concurrent_warmers": 3}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    for n in &nodes[1..] {
        loop {
            let c = get(&http, format!("{}/warm/config", n.base)).await;
            if c["config"]["max_batch_size"] == 77 {
                break;
            }
            assert!(Instant::now() < deadline, "config not shared: {c}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A schedule registered on one instance runs on the cluster once per firing.
    post(
        &http,
        format!("{}/warm/schedules", nodes[1].base),
        json!({"name": "tick", "cron": "* * * * * *", "action": {"type": "keys", "keys": ["sched:once"]}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    for n in &nodes {
        loop {
            let r = http
                .get(format!("{}/warm/schedules/tick", n.base))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "schedule not shared to {}",
                n.base
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let r = http
        .delete(format!("{}/warm/schedules/tick", nodes[2].base))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let window = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fetched = origin.requests_for("sched:once");
    eprintln!("{fetched} firings in {window:.1} s across 3 instances");
    assert!(
        fetched >= 3,
        "the schedule fired {fetched} times in {window:.1} s"
    );
    assert!(
        (fetched as f64) <= window + 2.0,
        "fired {fetched} times in {window:.1} s: more than once per firing"
    );
    // Removal is shared too: nothing fires any more.
    let after = origin.requests_for("sched:once");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(origin.requests_for("sched:once"), after);

    // Emergency stop on one instance stops them all; resume on another resumes all.
    post(
        &http,
        format!("{}/warm/emergency-stop", nodes[0].base),
        json!({"reason": "maintenance"}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    for n in &nodes {
        loop {
            let st = get(&http, format!("{}/warm/status", n.base)).await;
            if st["emergency_stop"] == true {
                break;
            }
            assert!(Instant::now() < deadline, "stop not shared to {}", n.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    post(&http, format!("{}/warm/resume", nodes[2].base), json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    for n in &nodes {
        loop {
            let st = get(&http, format!("{}/warm/status", n.base)).await;
            if st["emergency_stop"] == false {
                break;
            }
            assert!(Instant::now() < deadline, "resume not shared to {}", n.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // Accesses recorded on one instance feed predictions on another.
    post(
        &http,
        format!("{}/warm/access", nodes[0].base),
        json!({"keys": ["shared:hot", "shared:hot", "shared:hot"]}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = post(
            &http,
            format!("{}/warm/trigger-predictive", nodes[2].base),
            json!({"limit": 5, "force": true}),
        )
        .await;
        if p["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "shared:hot")
        {
            break;
        }
        assert!(Instant::now() < deadline, "accesses not shared: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Redis of the test's own, with an append-only file, that can be restarted.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--appendfsync", "always", "--dir"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "own redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_survive_a_redis_restart_without_losing_accepted_work() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(10));
    let mut redis = OwnRedis::start();
    let mut env = ClusterEnv::new(&origin, &redis.url());
    env.set("WARMING_MAX_ORIGIN_RPS", "100");
    env.set("WARMING_VISIBILITY_TIMEOUT", "3");
    let http = reqwest::Client::new();
    let nodes = start(&env, 2, &http).await;
    let keys: Vec<String> = (0..400).map(|i| format!("restart:{i}")).collect();
    let r = post(
        &http,
        format!("{}/warm/key", nodes[0].base),
        json!({"keys": keys}),
    )
    .await;
    let job = r["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while origin.requests() < 80 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during = origin.requests();
    redis.launch();
    let done = wait_job(&http, &nodes[1].base, &job, Duration::from_secs(120)).await;
    eprintln!("{during} fetched before the restart; job done afterwards");
    let odd: Vec<&Value> = done["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["status"] != "success")
        .collect();
    assert_eq!(done["succeeded"], 400, "not succeeded: {odd:?}");
    for i in 0..400 {
        assert!(
            origin.requests_for(&format!("restart:{i}")) >= 1,
            "restart:{i} lost"
        );
    }
}

/// A completed warm is shared like an access: the learned predictor of
/// every instance hears of it, whichever instance did the warm, so none of
/// them names the key again while its new value is fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_hears_of_a_warm_done_by_another() {
    let origin = TestOrigin::start().await;
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_PREDICTOR", "learned");
    // Only the predictors may keep the key from being named again.
    env.set("WARMING_MIN_REWARM_INTERVAL", "0");
    let http = reqwest::Client::new();
    let nodes = start(&env, 2, &http).await;

    // Value written 3,590 s ago (TTL 3,600 s), read again 10 s ago: it
    // expires in 10 s, so the learned predictor names the key now.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let events = json!({"events": [
        {"key": "busy", "at": t - 3590.0},
        {"key": "busy", "at": t - 10.0},
    ]});
    for n in &nodes {
        post(&http, format!("{}/warm/access", n.base), events.clone()).await;
    }
    let job = post(
        &http,
        format!("{}/warm/key", nodes[0].base),
        json!({"keys": ["busy"]}),
    )
    .await;
    let job = wait_job(
        &http,
        &nodes[0].base,
        job["job_id"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["succeeded"], 1, "{job}");

    // The instance that did not warm it hears of it through Redis (shared
    // every 250 ms). One look each: a look that named the key would warm it.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    for n in &nodes {
        let r = post(
            &http,
            format!("{}/warm/trigger-predictive", n.base),
            json!({"limit": 10}),
        )
        .await;
        assert_eq!(
            r["keys"],
            json!([]),
            "{} names a key warmed elsewhere",
            n.base
        );
    }
}

/// With coordination in the cache's own database and no cache prefix (the
/// README's cluster example), a pattern such as `*` matches the users'
/// cached keys, never the coordination's queue, leases or shared state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_never_names_the_coordinations_own_keys() {
    // A database of its own: without a prefix, `*` sees the whole database.
    const OWN_DB: &str = "redis://127.0.0.1:6379/15";
    let mut conn = support::redis::connect(OWN_DB).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let origin = TestOrigin::start().await;
    let mut env = ClusterEnv::new(&origin, OWN_DB);
    env.extra.retain(|(k, _)| *k != "WARMING_CACHE_PREFIX");
    let http = reqwest::Client::new();
    let nodes = start(&env, 1, &http).await;
    let base = &nodes[0].base;

    let r = post(
        &http,
        format!("{base}/warm/key"),
        json!({"keys": ["user:1", "user:2"]}),
    )
    .await;
    let job = wait_job(
        &http,
        base,
        r["job_id"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["succeeded"], 2, "{job}");
    let own: Vec<String> = redis::cmd("KEYS")
        .arg("*warming:{*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!own.is_empty(), "coordination keys live in this database");

    let r = post(
        &http,
        format!("{base}/warm/pattern"),
        json!({"pattern": "*", "limit": 1000, "force": true}),
    )
    .await;
    let mut matched: Vec<String> = serde_json::from_value(r["matched_keys"].clone()).unwrap();
    matched.sort();
    assert_eq!(matched, ["user:1", "user:2"], "{r}");
    drop(nodes);
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
}

/// A 404 answered at one instance quiets the key for every instance: a
/// refresh schedule run by another instance does not ask the origin again
/// within one default TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_at_one_instance_quiets_the_key_for_all() {
    let origin = TestOrigin::start().await;
    origin.set_status("gone", 404);
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_MIN_REWARM_INTERVAL", "0");
    let http = reqwest::Client::new();

    // The first instance asks for the key and gets the 404, then leaves.
    let first = env.spawn(0);
    ready(&http, &first).await;
    let r = post(
        &http,
        format!("{}/warm/key", first.base),
        json!({"keys": ["gone"]}),
    )
    .await;
    let job = wait_job(
        &http,
        &first.base,
        r["job_id"].as_str().unwrap(),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(job["not_found"], 1, "{job}");
    drop(first);

    // The second never saw that answer; its refresh runs every second.
    let second = env.spawn(1);
    ready(&http, &second).await;
    post(
        &http,
        format!("{}/warm/access", second.base),
        json!({"keys": ["gone", "gone", "here"]}),
    )
    .await;
    let r = http
        .post(format!("{}/warm/schedules", second.base))
        .json(&json!({"name": "refresh", "cron": "* * * * * *", "action": {"type": "refresh", "limit": 10}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while origin.requests_for("here") == 0 {
        assert!(Instant::now() < deadline, "refresh never fired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two more firings.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        origin.requests_for("gone"),
        1,
        "the 404 was asked once, by the first instance"
    );
}

/// A rolling deploy: an instance told to stop (SIGTERM) while it holds
/// claimed work finishes its current keys, gives the rest back to the
/// shared queue and exits 0; the next instance takes every key at once,
/// well inside the visibility timeout (a minute here), after which a
/// leaked claim would only come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_instance_hands_its_claims_to_the_next_at_once() {
    let origin = TestOrigin::start().await;
    origin.set_latency(Duration::from_millis(200));
    let mut env = ClusterEnv::new(&origin, REDIS);
    env.set("WARMING_CONCURRENT_WARMERS", "4");
    env.set("WARMING_VISIBILITY_TIMEOUT", "60");
    let http = reqwest::Client::new();
    let mut leaving = start(&env, 1, &http).await.remove(0);
    let keys: Vec<String> = (0..80).map(|i| format!("roll:{i}")).collect();
    let r = post(
        &http,
        format!("{}/warm/key", leaving.base),
        json!({"keys": keys}),
    )
    .await;
    let job = r["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while origin.requests() < 8 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(leaving.child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    let stopped_at = Instant::now();
    let status = loop {
        if let Some(s) = leaving.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopped_at.elapsed() < Duration::from_secs(20),
            "still running 20 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let warmed_before = origin.requests();
    assert!(warmed_before < 80, "all keys done before the stop");
    // Nothing is left claimed by the instance that left.
    let mut conn = support::redis::connect(REDIS).await;
    for band in ["high", "mid", "low"] {
        let stream = format!("warming:{{{}}}:queue:{band}", env.ns);
        let pending = support::redis::claimed_by(&mut conn, &stream, "instance-0").await;
        assert!(pending.is_empty(), "{band}: still claimed {pending:?}");
    }

    let next = env.spawn(1);
    ready(&http, &next).await;
    let done = wait_job(&http, &next.base, &job, Duration::from_secs(30)).await;
    assert_eq!(done["succeeded"], 80, "{done}");
    for i in 0..80 {
        assert!(
            origin.requests_for(&format!("roll:{i}")) >= 1,
            "roll:{i} never fetched"
        );
    }
    eprintln!(
        "{warmed_before} keys fetched before SIGTERM + shutdown; the rest done by the next instance {:?} after the stop",
        stopped_at.elapsed()
    );
}
