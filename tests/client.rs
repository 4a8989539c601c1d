//! The typed Rust client against the real server: every method, and API
//! errors decoded into `ClientError::Api`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::origin::TestOrigin;
use support::server::{TestServer, settings};
use warming::client::{ClientError, WarmingClient};
use warming::config::Strategy;
use warming::protocol::{
    AccessRequest, TriggerPredictiveRequest, WarmKeyRequest, WarmPatternRequest,
};
use warming::schedule::{ScheduleAction, ScheduleSpec};

async fn wait_done(client: &WarmingClient, job_id: &str) -> warming::protocol::JobView {
    for _ in 0..500 {
        let job = client.job(job_id).await.unwrap();
        if job.done {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {job_id} never finished");
}

#[tokio::test]
async fn every_client_method_against_the_real_server() {
    let origin = TestOrigin::start().await;
    let mut s = settings(&origin.url_template());
    s.service.api_token = Some("tok".into());
    let srv = TestServer::start(s).await;
    let client = WarmingClient::new(&srv.url).unwrap().with_token("tok");

    let r = client
        .warm_key(&WarmKeyRequest {
            keys: vec!["user:123:profile".into()],
            priority: Some(90),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.queued, 1);
    let job = wait_done(&client, &r.job_id).await;
    assert_eq!(job.succeeded, 1);

    let recorded = client
        .record_access(&AccessRequest {
            keys: vec!["new-feature:a".into(), "new-feature:b".into()],
            events: vec![],
        })
        .await
        .unwrap();
    assert_eq!(recorded.recorded, 2);
    let p = client
        .warm_pattern(&WarmPatternRequest {
            pattern: "new-feature:*".into(),
            limit: Some(1000),
            priority: Some(100),
            strategy: Some(Strategy::Priority),
            force: false,
        })
        .await
        .unwrap();
    assert_eq!(p.matched_keys.len(), 2);
    let pr = client
        .trigger_predictive(&TriggerPredictiveRequest {
            limit: Some(5),
            force: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(pr.keys.contains(&"new-feature:a".to_string()), "{pr:?}");

    let cfg = client.config().await.unwrap();
    assert_eq!(cfg["max_origin_rps"], 0);
    let cfg = client
        .update_config(&json!({"max_origin_rps": 50}))
        .await
        .unwrap();
    assert_eq!(cfg["max_origin_rps"], 50);

    let spec = ScheduleSpec {
        name: "client-test".into(),
        cron: "0 3 * * *".into(),
        timezone: None,
        action: ScheduleAction::Keys {
            keys: vec!["k:1".into()],
        },
        priority: None,
        strategy: None,
    };
    let view = client.add_schedule(&spec).await.unwrap();
    assert_eq!(view.spec.name, "client-test");
    assert!(
        client
            .schedules()
            .await
            .unwrap()
            .iter()
            .any(|s| s.spec.name == "client-test")
    );
    client.remove_schedule("client-test").await.unwrap();

    client.emergency_stop().await.unwrap();
    assert!(client.status().await.unwrap().emergency_stop);
    client.resume().await.unwrap();
    assert!(!client.status().await.unwrap().emergency_stop);

    // API errors come back typed, with the server's code.
    let err = client
        .warm_key(&WarmKeyRequest {
            keys: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, code, .. } => {
            assert_eq!(status, 400);
            assert_eq!(code, "invalid_keys");
        }
        other => panic!("{other:?}"),
    }
    let unauthenticated = WarmingClient::new(&srv.url).unwrap();
    let err = unauthenticated.resume().await.unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"));
    srv.shutdown().await;
}
