//! The HTTP API end to end: every endpoint's happy path and its bad input,
//! configuration validation and bearer-token auth, against the real server
//! and a real HTTP origin on loopback.

mod support;

use std::time::Duration;

use chrono::Timelike;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::redis::PrivateRedis;
use support::server::{TestServer, error_code, settings};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn warm_key_fetches_and_reports_like_the_spec() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, body) = srv
        .post("/warm/key", json!({"keys": ["user:123:profile", "user:123:settings"], "priority": 80, "strategy": "priority"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["queued"], 2);
    assert_eq!(body["keys"].as_array().unwrap().len(), 2);
    let job_id = body["job_id"].as_str().unwrap();
    let parts: Vec<&str> = job_id.split('-').collect();
    assert_eq!(parts[0], "warm", "{job_id}");
    assert!(
        parts[1].parse::<u64>().unwrap() > 1_700_000_000_000,
        "{job_id}"
    );
    assert!(parts[2].parse::<u64>().is_ok(), "{job_id}");
    assert!(body["estimated_time_ms"].is_u64());

    let job = srv.wait_job(job_id, WAIT).await;
    assert_eq!(job["succeeded"], 2, "{job}");
    assert_eq!(job["total"], 2);
    for k in job["keys"].as_array().unwrap() {
        assert_eq!(k["status"], "success", "{job}");
        assert_eq!(k["attempts"], 1);
    }
    assert_eq!(origin.requests_for("user:123:profile"), 1);

    // The value is in the cache: reading it does not touch the origin.
    let r = srv
        .http
        .get(format!("{}/cache/user:123:profile", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), "value-of:user:123:profile");
    assert_eq!(origin.requests_for("user:123:profile"), 1);

    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["metrics"]["success_total"], 2, "{st}");
    assert_eq!(st["metrics"]["jobs_total"], 2);
    assert_eq!(st["metrics"]["cache_writes"], 2);
    assert_eq!(st["metrics"]["origin_requests"], 2);
    assert_eq!(st["metrics"]["success_rate"], 1.0);
    assert_eq!(st["emergency_stop"], false);
    assert_eq!(st["worker_status"].as_array().unwrap().len(), 10);
    srv.shutdown().await;
}

#[tokio::test]
async fn status_agrees_with_metrics() {
    let origin = TestOrigin::start().await;
    origin.set_status("gone", 404);
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (_, body) = srv
        .post(
            "/warm/key",
            json!({"keys": ["a", "b", "gone"], "strategy": "breadth"}),
        )
        .await;
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let (_, st) = srv.get("/warm/status").await;
    let text = srv.metrics().await;
    let metric = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("{line_start} missing in\n{text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let m = &st["metrics"];
    assert_eq!(
        metric("warming_jobs_total{strategy=\"breadth\"}"),
        m["jobs_total"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_success_total "),
        m["success_total"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_failure_total "),
        m["failure_total"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_origin_requests_total "),
        m["origin_requests"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_cache_writes_total "),
        m["cache_writes"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_rate_limit_hits_total "),
        m["rate_limit_hits"].as_f64().unwrap()
    );
    assert_eq!(
        metric("warming_emergency_stops_total "),
        m["emergency_stops"].as_f64().unwrap()
    );
    assert_eq!(m["failure_total"], 1);
    assert!(
        text.contains("warming_duration_seconds{quantile=\"0.95\"}"),
        "{text}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_queues_nothing() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.max_keys_per_request = 100;
    s.service.max_key_len = 64;
    s.service.max_body_bytes = 64 * 1024;
    let srv = TestServer::start(s).await;
    let long_key = "k".repeat(65);
    let many: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    let cases: Vec<(&str, String, StatusCode, &str)> = vec![
        (
            "/warm/key",
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/warm/key",
            "".into(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "/warm/key",
            json!({"keys": ["a"], "colour": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/key",
            json!({"keys": ["a"], "strategy": "random"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/key",
            json!({"keys": ["a"], "priority": 101}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_priority",
        ),
        (
            "/warm/key",
            json!({"keys": ["a"], "priority": -1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/key",
            json!({"keys": []}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_keys",
        ),
        (
            "/warm/key",
            json!({"keys": [""]}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "/warm/key",
            json!({"keys": ["ok", long_key]}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "/warm/key",
            json!({"keys": ["a\nb"]}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "/warm/key",
            json!({"keys": many}).to_string(),
            StatusCode::BAD_REQUEST,
            "too_many_keys",
        ),
        (
            "/warm/key",
            format!("{{\"keys\": [\"{}\"]}}", "x".repeat(70_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "/warm/pattern",
            json!({"pattern": "user:{a,b}"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_pattern",
        ),
        (
            "/warm/pattern",
            json!({"pattern": "user:[ab"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_pattern",
        ),
        (
            "/warm/pattern",
            json!({"pattern": ""}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_pattern",
        ),
        (
            "/warm/pattern",
            json!({"pattern": "*", "limit": 0}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "/warm/pattern",
            json!({"limit": 5}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/trigger-predictive",
            json!({"limit": 1000}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (
            "/warm/trigger-predictive",
            json!({"lmit": 10}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/access",
            json!({}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_keys",
        ),
        (
            "/warm/access",
            json!({"events": [{"key": "a", "at": "yesterday"}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "/warm/access",
            json!({"events": [{"key": "a", "at": 9_999_999_999u64}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_time",
        ),
        (
            "/warm/config",
            json!({"concurrent_warmers": 0}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_config",
        ),
        (
            "/warm/schedules",
            json!({"name": "x", "cron": "61 * * * *", "action": {"type": "keys", "keys": ["a"]}})
                .to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_schedule",
        ),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, resp) = srv.post_raw(path, body).await;
        assert_eq!(status, want_status, "{path} -> {resp}");
        assert_eq!(error_code(&resp), want_code, "{path} -> {resp}");
    }
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["queued_tasks"], 0);
    assert_eq!(st["active_jobs"], 0);
    assert_eq!(origin.requests(), 0, "bad input never reaches the origin");

    // Unknown route and wrong method are JSON errors too.
    let (status, body) = srv.get("/warm/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = srv.get("/warm/key").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
    let (status, body) = srv.get("/warm/jobs/warm-1-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    srv.shutdown().await;
}

#[tokio::test]
async fn spec_curl_examples_without_content_type_work() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    // `curl -d` sends application/x-www-form-urlencoded; the spec's examples rely on it working.
    let r = srv
        .http
        .post(format!("{}/warm/key", srv.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(r#"{"keys":["key1","key2"],"strategy":"priority"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // trigger-predictive takes no body at all.
    let r = srv
        .http
        .post(format!("{}/warm/trigger-predictive", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["success"], true);
    srv.shutdown().await;
}

#[tokio::test]
async fn config_reports_nanoseconds_and_updates_atomically() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, body) = srv.get("/warm/config").await;
    assert_eq!(status, StatusCode::OK);
    let c = &body["config"];
    assert_eq!(c["default_ttl"], 3_600_000_000_000u64);
    assert_eq!(c["origin_timeout"], 5_000_000_000u64);
    assert_eq!(c["backoff_base"], 10_000_000u64);
    assert_eq!(c["emergency_threshold"], 2_000_000_000u64);
    assert_eq!(c["max_batch_size"], 50);
    assert_eq!(c["concurrent_warmers"], 10);
    assert_eq!(c["retry_attempts"], 3);
    assert_eq!(c["default_strategy"], "priority");
    assert_eq!(body["service"]["origin_http"], "http1", "{body}");
    assert!(body["service"].get("origin_ca_file").is_none(), "{body}");

    let (status, body) = srv
        .post("/warm/config", json!({"max_origin_rps": 200, "max_batch_size": 100, "default_strategy": "selective", "concurrent_warmers": 3}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"]["max_origin_rps"], 200);
    assert_eq!(body["config"]["default_strategy"], "selective");
    // The pool follows the new size without a restart.
    srv.wait_status(WAIT, "3 workers", |s| {
        s["worker_status"].as_array().unwrap().len() == 3
    })
    .await;

    // One bad field: 400 naming it and its range, and nothing changes.
    let (status, body) = srv
        .post(
            "/warm/config",
            json!({"max_batch_size": 7, "retry_attempts": 99}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["fields"][0]["field"], "retry_attempts",
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("0..=20"),
        "{body}"
    );
    let (status, body) = srv
        .post("/warm/config", json!({"default_ttl": "soon"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["fields"][0]["field"], "default_ttl", "{body}");
    let (_, after) = srv.get("/warm/config").await;
    assert_eq!(
        after["config"]["max_batch_size"], 100,
        "a rejected update changes nothing"
    );
    let (status, _) = srv
        .post("/warm/config", json!({"listen": "0.0.0.0:1"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "static settings cannot change at run time"
    );
    srv.shutdown().await;

    // A CA file for the origin is named in the service block.
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let mut s = settings(&origin.url_template());
    s.service.origin_ca_file = Some(ca_file.clone());
    let srv = TestServer::start(s).await;
    let (_, body) = srv.get("/warm/config").await;
    assert_eq!(
        body["service"]["origin_ca_file"],
        ca_file.display().to_string(),
        "{body}"
    );
    srv.shutdown().await;
}

#[tokio::test]
async fn bearer_token_guards_every_mutating_endpoint() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.api_token = Some("s3cret".into());
    let srv = TestServer::start(s).await;
    for path in [
        "/warm/key",
        "/warm/pattern",
        "/warm/trigger-predictive",
        "/warm/access",
        "/warm/config",
        "/warm/emergency-stop",
        "/warm/resume",
        "/warm/schedules",
    ] {
        let r = srv
            .http
            .post(format!("{}{path}", srv.url))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "unauthorized");
        let r = srv
            .http
            .post(format!("{}{path}", srv.url))
            .bearer_auth("wrong")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = srv
        .http
        .delete(format!("{}/warm/schedules/x", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = srv
        .http
        .post(format!("{}/warm/key", srv.url))
        .bearer_auth("s3cret")
        .json(&json!({"keys": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Reads stay open.
    assert_eq!(srv.get("/warm/status").await.0, StatusCode::OK);
    assert_eq!(srv.get("/warm/config").await.0, StatusCode::OK);
    srv.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    assert_eq!(
        srv.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        srv.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    let r = srv
        .http
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for name in [
        "warming_jobs_total{strategy=\"selective\"}",
        "warming_jobs_total{strategy=\"breadth\"}",
        "warming_jobs_total{strategy=\"priority\"}",
        "warming_success_total",
        "warming_failure_total",
        "warming_origin_requests_total",
        "warming_rate_limit_hits_total",
        "warming_emergency_stops_total",
        "warming_cache_writes_total",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    srv.shutdown().await;
}

#[tokio::test]
async fn access_records_feed_prediction() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut events = Vec::new();
    for i in 0..30 {
        events.push(json!({"key": "hot:1", "at": now - i as f64}));
    }
    for i in 0..10 {
        events.push(json!({"key": "warm:2", "at": now - 60.0 * i as f64}));
    }
    events.push(json!({"key": "cold:3", "at": chrono::Utc::now().to_rfc3339()}));
    let (status, body) = srv
        .post("/warm/access", json!({"events": events, "keys": ["hot:1"]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 42);
    let (status, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 2}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["keys"],
        json!(["hot:1", "warm:2"]),
        "hottest first, limited to 2"
    );
    assert_eq!(body["queued"], 2);
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["source"], "predictive");
    assert_eq!(job["succeeded"], 2);
    srv.shutdown().await;
}

/// The `next_run` of a schedule view, as an instant.
fn next_run(view: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = view["next_run"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_run in {view}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("next_run {text:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn schedules_endpoints() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.builtin_schedules = true;
    let srv = TestServer::start(s).await;
    let (status, body) = srv.get("/warm/schedules").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"daily-warmup")
            && names.contains(&"hourly-refresh")
            && names.contains(&"peak-hours-warmup")
            && names.contains(&"expiry-refresh"),
        "{body}"
    );
    let refresh = body["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "expiry-refresh")
        .unwrap();
    assert_eq!(refresh["action"], json!({"type": "refresh"}), "{refresh}");
    let crons: Vec<&str> = body["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["cron"].as_str().unwrap())
        .collect();
    assert!(
        crons.contains(&"0 2 * * *")
            && crons.contains(&"0 * * * *")
            && crons.contains(&"0 7,11,17 * * *"),
        "{body}"
    );

    let spec = json!({"name": "nightly-catalog", "cron": "30 1 * * *", "timezone": "Europe/Paris",
        "action": {"type": "pattern", "pattern": "catalog:*", "limit": 500}, "priority": 60, "strategy": "breadth"});
    let before = chrono::Utc::now();
    let (status, body) = srv.post("/warm/schedules", spec.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["name"], "nightly-catalog");
    assert_eq!(body["timezone_effective"], "Europe/Paris", "{body}");
    // The next 01:30 on a Paris wall clock (00:30 UTC in winter, 23:30 UTC
    // the day before in summer), within a day.
    let next = next_run(&body);
    let paris = next.with_timezone(&chrono_tz::Europe::Paris);
    assert_eq!(
        (paris.hour(), paris.minute(), paris.second()),
        (1, 30, 0),
        "{body}"
    );
    assert!(
        next > before && next <= chrono::Utc::now() + chrono::Duration::days(1),
        "{body}"
    );
    // Tokyo has no summer time: 02:00 there is always 17:00 UTC the day before.
    let tokyo = json!({"name": "tokyo-2am", "cron": "0 2 * * *", "timezone": "Asia/Tokyo",
        "action": {"type": "predictive", "limit": 10}});
    let before = chrono::Utc::now();
    let (status, body) = srv.post("/warm/schedules", tokyo).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let next = next_run(&body);
    let after = chrono::Utc::now();
    let mut expected = before.date_naive().and_hms_opt(17, 0, 0).unwrap().and_utc();
    if expected <= before {
        expected += chrono::Duration::days(1);
    }
    // (A 17:00 UTC crossed during the request would move it by a day.)
    assert!(
        next == expected || (expected <= after && next == expected + chrono::Duration::days(1)),
        "next_run {next}, expected {expected}: {body}"
    );
    assert_eq!(
        next.with_timezone(&chrono_tz::Asia::Tokyo)
            .format("%H:%M:%S")
            .to_string(),
        "02:00:00"
    );
    let (_, listed) = srv.get("/warm/schedules/tokyo-2am").await;
    assert_eq!(next_run(&listed), next, "{listed}");
    srv.delete("/warm/schedules/tokyo-2am").await;
    let (status, body) = srv.post("/warm/schedules", spec).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "schedule_exists");
    // A refresh action takes an optional limit, checked like the others.
    let refresh = json!({"name": "refresh-1m", "cron": "* * * * *", "action": {"type": "refresh", "limit": 2000}});
    let (status, body) = srv.post("/warm/schedules", refresh).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["action"], json!({"type": "refresh", "limit": 2000}));
    let bad = json!({"name": "refresh-bad", "cron": "* * * * *", "action": {"type": "refresh", "limit": 0}});
    let (status, body) = srv.post("/warm/schedules", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("action.limit"),
        "{body}"
    );
    srv.delete("/warm/schedules/refresh-1m").await;
    let (status, _) = srv.get("/warm/schedules/nightly-catalog").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = srv.delete("/warm/schedules/daily-warmup").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = srv.delete("/warm/schedules/nightly-catalog").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = srv.get("/warm/schedules/nightly-catalog").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = srv.delete("/warm/schedules/nightly-catalog").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn read_through_errors_map_to_statuses() {
    let origin = TestOrigin::start().await;
    origin.set_status("missing", 404);
    origin.set_status("broken", 500);
    let mut s = settings(&origin.url_template());
    s.tunables.retry_attempts = 1;
    let srv = TestServer::start(s).await;
    let (status, body) = srv.get("/cache/missing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    assert_eq!(origin.requests_for("missing"), 1, "404 is not retried");
    let (status, body) = srv.get("/cache/broken").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&body), "origin_error");
    assert_eq!(origin.requests_for("broken"), 2, "one retry");
    let r = srv
        .http
        .get(format!("{}/cache/new:key", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "miss");
    let r = srv
        .http
        .get(format!("{}/cache/new:key", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "hit");
    srv.shutdown().await;
}

#[tokio::test]
async fn the_predictor_is_chosen_by_configuration() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut events: Vec<Value> = (0..20)
        .map(|_| json!({"key": "old-but-busy", "at": now - 50.0 * 60.0}))
        .collect();
    events.extend((0..2).map(|_| json!({"key": "fresh-but-rare", "at": now - 60.0})));
    srv.post("/warm/access", json!({"events": events})).await;
    srv.post("/warm/emergency-stop", json!({})).await;
    let (_, h) = srv
        .post(
            "/warm/trigger-predictive",
            json!({"limit": 2, "strategy": "selective"}),
        )
        .await;
    assert_eq!(h["keys"][0], "fresh-but-rare", "heuristic: {h}");
    let (status, body) = srv
        .post("/warm/config", json!({"predictor": "frequency"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, f) = srv
        .post(
            "/warm/trigger-predictive",
            json!({"limit": 2, "strategy": "selective"}),
        )
        .await;
    assert_eq!(
        f["keys"],
        json!(["old-but-busy", "fresh-but-rare"]),
        "frequency: {f}"
    );
    let (status, body) = srv.post("/warm/config", json!({"predictor": "lstm"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["fields"][0]["field"], "predictor");
    srv.shutdown().await;
}

/// With `WARMING_ACCESS_LOG`, every recorded access (`POST /warm/access`
/// keys and timed events, `GET /cache` reads) lands in the log, which
/// `GET /warm/access/log` exports (token required) in the format `warming
/// replay` reads back with the same keys and times.
#[tokio::test]
async fn access_log_exports_what_replay_reads() {
    use warming::replay::trace::{self, Clock, Format};
    let origin = TestOrigin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logs/access.jsonl");
    let mut s = settings(&origin.url_template());
    s.service.access_log = Some(path.clone());
    s.service.api_token = Some("s3cret".into());
    let srv = TestServer::start(s).await;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("s3cret");
    let r = auth(srv.http.post(format!("{}/warm/access", srv.url)))
        .json(&json!({"keys": ["user:1"], "events": [
            {"key": "user:2", "at": 1_700_000_000},
            {"key": "user:3", "at": "2023-11-14T22:13:21Z"}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, _) = srv.get("/cache/page:9").await;
    assert_eq!(status, StatusCode::OK);

    // The export lists the keys clients read: it needs the token.
    let (status, body) = srv.get("/warm/access/log").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let r = auth(srv.http.get(format!("{}/warm/access/log", srv.url)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let export = dir.path().join("export.jsonl");
    std::fs::write(&export, &text).unwrap();
    let clock = Clock {
        start: 0.0,
        rate: 1.0,
    };
    let read: Vec<(String, f64)> = trace::open(&export, Format::AccessJsonl, clock)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.key.to_string(), r.at)
        })
        .collect();
    let keys: Vec<&str> = read.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["user:1", "user:2", "user:3", "page:9"], "{text}");
    assert_eq!(read[1].1, 1_700_000_000.0);
    assert_eq!(read[2].1, 1_700_000_001.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((read[0].1 - now).abs() < 60.0 && (read[3].1 - now).abs() < 60.0);
    // The file itself holds the same lines once written.
    srv.shutdown().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[tokio::test]
async fn access_log_export_is_404_when_off() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, body) = srv.get("/warm/access/log").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "access_log_off");
    srv.shutdown().await;
}

#[tokio::test]
async fn schedule_limits_above_max_keys_per_request_are_refused() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.max_keys_per_request = 100;
    let srv = TestServer::start(s).await;
    // Every firing of these would fail the engine's own limit check.
    for action in [
        json!({"type": "predictive", "limit": 101}),
        json!({"type": "pattern", "pattern": "catalog:*", "limit": 101}),
        json!({"type": "refresh", "limit": 101}),
        json!({"type": "predictive", "limit": 100_000}),
    ] {
        let spec = json!({"name": "too-big", "cron": "* * * * *", "action": action});
        let (status, body) = srv.post("/warm/schedules", spec).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action} -> {body}");
        assert_eq!(error_code(&body), "invalid_schedule", "{body}");
        assert_eq!(
            body["error"]["fields"][0]["field"], "action.limit",
            "{body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("allowed 1..=100 (max_keys_per_request)"),
            "{body}"
        );
    }
    let (status, body) = srv.get("/warm/schedules/too-big").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored: {body}");
    let (_, body) = srv.get("/warm/schedules").await;
    assert_eq!(body["schedules"], json!([]), "{body}");
    // The largest allowed limit is accepted.
    let spec = json!({"name": "just-fits", "cron": "* * * * *",
        "action": {"type": "predictive", "limit": 100}});
    let (status, body) = srv.post("/warm/schedules", spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn config_values_of_the_wrong_type_name_the_field_and_change_nothing() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (_, before) = srv.get("/warm/config").await;
    let cases = [
        (
            json!({"max_origin_rps": -1}),
            "max_origin_rps",
            "0..=1000000",
        ),
        (
            json!({"max_origin_rps": "fast"}),
            "max_origin_rps",
            "0..=1000000",
        ),
        (
            json!({"max_origin_rps": 2.5}),
            "max_origin_rps",
            "0..=1000000",
        ),
        // A valid field next to the bad one is not applied either.
        (
            json!({"max_batch_size": 20, "default_ttl": -5}),
            "default_ttl",
            "1s..=",
        ),
        (json!({"ttl_jitter": "some"}), "ttl_jitter", "0.0..=0.5"),
        (
            json!({"default_strategy": 3}),
            "default_strategy",
            "priority",
        ),
    ];
    for (update, field, range) in cases {
        let (status, body) = srv.post("/warm/config", update.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{update} -> {body}");
        assert_eq!(error_code(&body), "invalid_config", "{update} -> {body}");
        assert_eq!(body["error"]["fields"][0]["field"], field, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}: ")) && message.contains(range),
            "{update} -> {body}"
        );
        let detail = body["error"]["fields"][0]["message"].as_str().unwrap();
        assert!(detail.contains(range), "{update} -> {body}");
    }
    let (_, after) = srv.get("/warm/config").await;
    assert_eq!(
        after["config"], before["config"],
        "a rejected update changes nothing"
    );
    // An unknown field is still a request error, not a configuration one.
    let (status, body) = srv
        .post("/warm/config", json!({"listen": "0.0.0.0:1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_request", "{body}");
    srv.shutdown().await;
}

#[tokio::test]
async fn path_parameter_rejections_are_json_errors() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    // `%FF` decodes to a byte that is not UTF-8.
    for path in [
        "/cache/%FF",
        "/cache/a/%FF",
        "/warm/jobs/%FF",
        "/warm/schedules/%FF",
    ] {
        let (status, body) = srv.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} -> {body}");
        assert_eq!(error_code(&body), "invalid_path", "{path} -> {body}");
    }
    let (status, body) = srv.delete("/warm/schedules/%FF").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_path", "{body}");
    assert_eq!(origin.requests(), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.api_token = Some("s3cret".into());
    let srv = TestServer::start(s).await;
    let send = |authorization: &'static str| {
        srv.http
            .post(format!("{}/warm/resume", srv.url))
            .header("authorization", authorization)
            .send()
    };
    for accepted in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "bEaReR s3cret",
    ] {
        let r = send(accepted).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{accepted}");
    }
    for refused in [
        "bearer wrong",
        "Basic s3cret",
        "Bearers3cret",
        "s3cret",
        "bearer S3CRET",
    ] {
        let r = send(refused).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{refused}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "unauthorized");
    }
    srv.shutdown().await;
}

/// The metric samples of `GET /metrics` (comments dropped, sorted: the
/// exporter's order varies), to compare before and after requests that
/// must change nothing.
async fn metric_samples(srv: &TestServer) -> Vec<String> {
    let mut samples: Vec<String> = srv
        .metrics()
        .await
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    samples.sort();
    samples
}

/// Bad input to `GET /cache/{key}` (too long, empty, control characters)
/// and to `POST /warm/emergency-stop` (malformed JSON, unknown or mistyped
/// fields): a 4xx JSON error with a code and a message, and nothing changes
/// (no origin request, no access or read recorded, no cache write, no stop).
#[tokio::test]
async fn bad_cache_reads_and_stop_bodies_are_refused_and_change_nothing() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.max_key_len = 64;
    let srv = TestServer::start(s).await;
    let before = metric_samples(&srv).await;

    let long_key = "k".repeat(65);
    let reads: [(String, StatusCode, &str); 4] = [
        (
            format!("/cache/{long_key}"),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        ("/cache/".into(), StatusCode::NOT_FOUND, "not_found"),
        (
            "/cache/a%0Ab".into(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "/cache/a%09b".into(),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
    ];
    for (path, want, code) in &reads {
        let (status, body) = srv.get(path).await;
        assert_eq!(status, *want, "{path} -> {body}");
        assert_eq!(error_code(&body), *code, "{path} -> {body}");
    }
    assert_eq!(origin.requests(), 0);
    assert_eq!(
        metric_samples(&srv).await,
        before,
        "a refused read is not counted"
    );
    // The longest allowed key is still read through.
    let (status, _) = srv.get(&format!("/cache/{}", "k".repeat(64))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.request_keys(), ["k".repeat(64)]);
    let (status, _) = srv.get(&format!("/cache/{}", "k".repeat(64))).await;
    assert_eq!(status, StatusCode::OK);
    let after_good = metric_samples(&srv).await;
    assert_ne!(before, after_good, "a good read is counted");

    let stops: [(&str, &str); 5] = [
        ("{not json", "malformed_json"),
        (r#"{"reason": "maintenance""#, "malformed_json"),
        (
            r#"{"reason": "maintenance", "colour": 1}"#,
            "invalid_request",
        ),
        (r#"{"reason": 5}"#, "invalid_request"),
        (r#"["maintenance"]"#, "invalid_request"),
    ];
    for (body, code) in stops {
        let (status, answer) = srv.post_raw("/warm/emergency-stop", body.into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {answer}");
        assert_eq!(error_code(&answer), code, "{body} -> {answer}");
    }
    // serde would fill a request struct from an array; every endpoint
    // wants an object.
    let (status, answer) = srv.post_raw("/warm/key", r#"[["arr:1"]]"#.into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(error_code(&answer), "invalid_request", "{answer}");
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["emergency_stop"], false, "{st}");
    assert!(st.get("emergency_reason").is_none(), "{st}");

    assert_eq!(metric_samples(&srv).await, after_good);
    assert_eq!(origin.requests(), 1);
    srv.shutdown().await;
}

/// `/readyz` asks the cache (not the origin): when the Redis it was started
/// with stops answering, it is 503 with a JSON error saying why (while
/// `/healthz` stays 200), and ready again once Redis is back; during
/// shutdown it is 503 too.
#[tokio::test]
async fn readiness_is_lost_with_the_cache_and_comes_back() {
    let mut redis = PrivateRedis::start().await;
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.cache_url = redis.url();
    let srv = TestServer::start(s).await;
    assert_eq!(
        srv.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );

    redis.stop();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = srv.get("/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            std::time::Instant::now() < deadline,
            "still ready without its cache: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(error_code(&body), "not_ready", "{body}");
    // "cache backend unavailable: ..." or "cache command failed: ...".
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cache "),
        "{body}"
    );
    assert_eq!(
        srv.get("/healthz").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );

    redis.restart().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = srv.get("/readyz").await;
        if status == StatusCode::OK {
            assert_eq!(body, json!({"status": "ready"}));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready again with its cache back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Once shutdown has begun it is not ready either, and says so.
    srv.engine().begin_shutdown();
    let (status, body) = srv.get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "not_ready", "{body}");
    assert_eq!(body["error"]["message"], "shutting down", "{body}");
    srv.shutdown().await;
}
