//! The service against the real Redis and NATS of this machine: warmed values
//! land in Redis with a TTL, pattern warming finds keys with SCAN, and every
//! finished key is published over SSE and NATS JetStream.
//!
//! Redis must listen on 127.0.0.1:6379 and NATS (with JetStream) on
//! 127.0.0.1:4222; `.ci/run` starts them. These tests fail, not skip, without them.

mod support;

use std::time::Duration;

use futures::StreamExt;
use redis::AsyncCommands;
use serde_json::json;
use support::origin::TestOrigin;
use support::server::{TestServer, settings};
use warming::client::WarmingClient;
use warming::events::{WarmCompleted, WarmStatus};

const WAIT: Duration = Duration::from_secs(15);
const REDIS: &str = "redis://127.0.0.1:6379/10";
const NATS: &str = "nats://127.0.0.1:4222";

fn unique(tag: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{}{n}", std::process::id())
}

#[tokio::test]
async fn warmed_values_land_in_redis_with_a_ttl() {
    let origin = TestOrigin::start().await;
    let prefix = format!("{}:", unique("wtest"));
    let mut s = settings(&origin.url_template());
    s.service.cache_url = REDIS.into();
    s.service.cache_prefix = prefix.clone();
    s.tunables.default_ttl = Duration::from_secs(120);
    s.tunables.ttl_jitter = 0.1;
    s.tunables.max_batch_size = 7;
    let srv = TestServer::start(s).await;
    let keys: Vec<String> = (0..40).map(|i| format!("item:{i}")).collect();
    let (_, body) = srv.post("/warm/key", json!({"keys": keys})).await;
    let job = srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(job["succeeded"], 40, "{job}");
    let mut conn = support::redis::connect(REDIS).await;
    for i in [0, 17, 39] {
        let k = format!("{prefix}item:{i}");
        let v: Option<String> = conn.get(&k).await.unwrap();
        assert_eq!(v.as_deref(), Some(format!("value-of:item:{i}").as_str()));
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            (110_000..=132_000).contains(&pttl),
            "TTL 120 s + up to 10% jitter, got {pttl} ms"
        );
    }
    // Origin max-age wins over the default TTL.
    origin.set_max_age(Some(30));
    let (_, body) = srv.post("/warm/key", json!({"keys": ["short:1"]})).await;
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}short:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((25_000..=33_000).contains(&pttl), "{pttl}");
    let _: () = redis::cmd("DEL")
        .arg(
            (0..40)
                .map(|i| format!("{prefix}item:{i}"))
                .chain([format!("{prefix}short:1")])
                .collect::<Vec<_>>(),
        )
        .query_async(&mut conn)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn pattern_warming_finds_cached_keys_with_scan() {
    let origin = TestOrigin::start().await;
    let prefix = format!("{}:", unique("wscan"));
    let mut conn = support::redis::connect(REDIS).await;
    // Keys that exist only in Redis (say, written by the application).
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.set_ex(format!("{prefix}product:{i}"), "stale", 600);
    }
    pipe.set_ex(format!("{prefix}other:1"), "x", 600);
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let mut s = settings(&origin.url_template());
    s.service.cache_url = REDIS.into();
    s.service.cache_prefix = prefix.clone();
    let srv = TestServer::start(s).await;
    let (_, body) = srv
        .post(
            "/warm/pattern",
            json!({"pattern": "product:1?", "limit": 100}),
        )
        .await;
    let mut matched: Vec<String> = body["matched_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    matched.sort();
    let mut want: Vec<String> = (10..20).map(|i| format!("product:{i}")).collect();
    want.sort();
    assert_eq!(matched, want);
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let v: String = conn.get(format!("{prefix}product:15")).await.unwrap();
    assert_eq!(v, "value-of:product:15", "refreshed from the origin");
    let (_, body) = srv
        .post(
            "/warm/pattern",
            json!({"pattern": "product:*", "limit": 50}),
        )
        .await;
    assert_eq!(
        body["matched_keys"].as_array().unwrap().len(),
        50,
        "limit caps the match"
    );
    srv.wait_job(body["job_id"].as_str().unwrap(), WAIT).await;
    let keys: Vec<String> = (0..300)
        .map(|i| format!("{prefix}product:{i}"))
        .chain([format!("{prefix}other:1")])
        .collect();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn events_arrive_over_sse_and_nats() {
    let origin = TestOrigin::start().await;
    origin.set_status("ev:missing", 404);
    let subject = format!("warming.test.{}", unique("s"));
    let stream_name = unique("WTEST");
    let mut s = settings(&origin.url_template());
    s.service.nats_url = Some(NATS.into());
    s.service.nats_subject = subject.clone();
    s.service.nats_stream = stream_name.clone();
    let srv = TestServer::start(s).await;

    // SSE, through the typed client; wait until the subscription is live.
    let client = WarmingClient::new(&srv.url).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = Box::pin(client.subscribe());
        while let Some(ev) = events.next().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + WAIT;
    while srv.engine().events().subscriber_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "SSE subscription never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, body) = srv
        .post("/warm/key", json!({"keys": ["ev:1", "ev:2", "ev:missing"]}))
        .await;
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let mut got: Vec<WarmCompleted> = Vec::new();
    while got.len() < 3 {
        let ev = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event decodes");
        got.push(ev);
    }
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got[0].key, "ev:1");
    assert_eq!(got[0].status, WarmStatus::Success);
    assert_eq!(got[0].job_id, job_id);
    assert_eq!(got[0].attempts, 1);
    assert_eq!(got[0].bytes, "value-of:ev:1".len() as u64);
    assert_eq!(got[2].key, "ev:missing");
    assert_eq!(got[2].status, WarmStatus::NotFound);

    // NATS JetStream holds the same three events.
    let nc = async_nats::connect(NATS).await.expect("NATS is not reachable at 127.0.0.1:4222; start it with: nats-server -js -a 127.0.0.1 -p 4222");
    let js = async_nats::jetstream::new(nc);
    srv.engine().events().nats().unwrap().flush().await;
    let mut stream = js.get_stream(&stream_name).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 3, "{info:?}");
    let mut seen = Vec::new();
    for seq in 1..=3 {
        let msg = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(msg.subject.as_str(), subject);
        let ev: WarmCompleted = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(ev.job_id, job_id);
        seen.push(ev.key);
    }
    seen.sort();
    assert_eq!(seen, ["ev:1", "ev:2", "ev:missing"]);
    srv.shutdown().await;
    js.delete_stream(&stream_name).await.unwrap();
}
