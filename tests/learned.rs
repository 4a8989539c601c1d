//! The `learned` predictor in the live service: selected at run time with
//! `POST /warm/config`, fed by `POST /warm/access`, and asked by
//! `POST /warm/trigger-predictive`, whose keys are then warmed.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::origin::TestOrigin;
use support::server::{TestServer, settings};

const WAIT: Duration = Duration::from_secs(10);

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn learned_is_selected_by_configuration_and_warms_expiring_keys() {
    let origin = TestOrigin::start().await;
    let srv = TestServer::start(settings(&origin.url_template())).await;
    let (status, body) = srv
        .post("/warm/config", json!({"predictor": "learned"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["config"]["predictor"], "learned", "{body}");
    let (_, cfg) = srv.get("/warm/config").await;
    assert_eq!(cfg["config"]["predictor"], "learned");

    // "returning:*" were read a few times just over an hour minus a few
    // seconds ago: with the default TTL (1 h) their values expire within
    // the next minute, which is when the learned predictor names them.
    // "fresh" was just read: still cached, not worth warming.
    let t = now();
    let mut events: Vec<Value> = Vec::new();
    for k in 0..3 {
        for i in 0..3 {
            events.push(json!({"key": format!("returning:{k}"), "at": t - 3640.0 - f64::from(i)}));
        }
    }
    events.extend((0..5).map(|_| json!({"key": "fresh", "at": t - 1.0})));
    let (status, body) = srv.post("/warm/access", json!({"events": events})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["recorded"], 14);
    // Status and metrics say which predictor runs and how far it trained.
    let (_, st) = srv.get("/warm/status").await;
    let p = &st["predictor"];
    assert_eq!(
        (
            &p["name"],
            &p["tracked_keys"],
            &p["examples"],
            &p["trained"]
        ),
        (&json!("learned"), &json!(4), &json!(0), &json!(false)),
        "{st}"
    );
    assert!(
        p.get("log_loss").is_none(),
        "no loss before an example: {st}"
    );
    let text = srv.metrics().await;
    assert!(text.contains("warming_predictor_tracked_keys 4"), "{text}");
    assert!(text.contains("warming_predictor_trained 0"), "{text}");

    let (status, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut keys: Vec<String> = body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["returning:0", "returning:1", "returning:2"],
        "{body}"
    );
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 3, "{job}");
    assert_eq!(origin.requests_for("returning:0"), 1);
    assert_eq!(origin.requests_for("fresh"), 0);

    // Switching back works too, and an unknown name is still refused.
    let (status, _) = srv
        .post("/warm/config", json!({"predictor": "heuristic"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, st) = srv.get("/warm/status").await;
    assert_eq!(st["predictor"], json!({"name": "heuristic"}), "{st}");
    assert!(
        srv.metrics()
            .await
            .contains("warming_predictor_tracked_keys 0")
    );
    let (status, _) = srv
        .post("/warm/config", json!({"predictor": "learned-v2"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    srv.shutdown().await;
}

/// A key read all along is named when the value written at its first read
/// (a miss) expires, however recent its last read; once the service has
/// warmed it, the predictor hears of the warm and leaves the key alone until
/// the new value nears expiry.
#[tokio::test]
async fn learned_names_read_keys_whose_value_expires_and_hears_of_warms() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.predictor = "learned".into();
    // Only the predictor may keep the second round from warming "busy".
    s.tunables.min_rewarm_interval = Duration::ZERO;
    let srv = TestServer::start(s).await;

    // First read (the miss that wrote the value) 3,590 s ago, TTL 3,600 s:
    // the value expires in 10 s, though the key was read 10 s ago.
    let t = now();
    let events: Vec<Value> = [3590.0, 1800.0, 600.0, 10.0]
        .iter()
        .map(|ago| json!({"key": "busy", "at": t - ago}))
        .chain([json!({"key": "recent", "at": t - 600.0})])
        .collect();
    let (status, body) = srv.post("/warm/access", json!({"events": events})).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!(["busy"]), "{body}");
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 1, "{job}");

    // Warmed just now: its value is fresh for another TTL.
    let (status, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!([]), "{body}");
    assert_eq!(origin.requests_for("busy"), 1);
    srv.shutdown().await;
}

/// Values carry their own TTL to the predictor: `GET /cache/{key}` writes
/// with the origin's `max-age`, and a key whose value lives 3 s is named
/// (its expiry is within the band), while one written with the default TTL
/// (1 h) is not; a warm with a `max-age` likewise. A warm nobody has read
/// is not followed by another.
#[tokio::test]
async fn learned_hears_the_ttl_each_value_was_written_with() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.tunables.predictor = "learned".into();
    s.tunables.min_rewarm_interval = Duration::ZERO;
    let srv = TestServer::start(s).await;

    let (status, _) = srv.get("/cache/default-ttl").await;
    assert_eq!(status, StatusCode::OK);
    origin.set_max_age(Some(3));
    let (status, _) = srv.get("/cache/short-ttl").await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"], json!(["short-ttl"]), "{body}");
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 1, "{job}");

    // Nobody has read the warmed value yet: not named again.
    let (_, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(body["keys"], json!([]), "an unread warm: {body}");
    // Read from the cache, it is: the warm wrote with max-age 3 too, so it
    // expires within the band; with the default TTL it would not for an hour.
    origin.set_max_age(None);
    let requests = origin.requests();
    let (status, _) = srv.get("/cache/short-ttl").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(origin.requests(), requests, "a hit on the warmed value");
    let (_, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(body["keys"], json!(["short-ttl"]), "{body}");
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 1, "{job}");
    let (status, _) = srv.get("/cache/short-ttl").await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = srv
        .post("/warm/trigger-predictive", json!({"limit": 10}))
        .await;
    assert_eq!(
        body["keys"],
        json!([]),
        "the last warm wrote a 1 h value: {body}"
    );
    srv.shutdown().await;
}
