//! The typed Rust client against the real server: every method, and API
//! errors decoded into `ClientError::Api`.

mod support;

use std::time::Duration;

use support::origin::TestOrigin;
use support::server::{TestServer, settings};
use warming::client::{ClientError, WarmingClient};
use warming::config::{Strategy, TunablesUpdate};
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

    // The configuration comes back typed, durations decoded from nanoseconds.
    let cfg = client.config().await.unwrap();
    assert_eq!(cfg.config.max_origin_rps, 0);
    assert_eq!(cfg.config.backoff_base, Duration::from_millis(10));
    assert_eq!(cfg.config.default_ttl, Duration::from_secs(3600));
    assert_eq!(cfg.config.default_strategy, Strategy::Priority);
    assert_eq!(cfg.service.cache_backend, "memory");
    assert!(cfg.service.auth);
    // An update is the server's own update type: durations as a `Duration`
    // (sent as nanoseconds) or as text with a unit.
    let cfg = client
        .update_config(&TunablesUpdate {
            max_origin_rps: Some(50),
            backoff_base: Some(Duration::from_millis(250).into()),
            default_ttl: Some("2h".into()),
            default_strategy: Some("selective".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cfg.config.max_origin_rps, 50);
    assert_eq!(cfg.config.backoff_base, Duration::from_millis(250));
    assert_eq!(cfg.config.default_ttl, Duration::from_secs(7200));
    assert_eq!(cfg.config.default_strategy, Strategy::Selective);
    assert_eq!(
        cfg.config.concurrent_warmers, 10,
        "fields not sent are kept"
    );
    assert_eq!(client.config().await.unwrap(), cfg);
    // A refused update is a typed error and changes nothing.
    let err = client
        .update_config(&TunablesUpdate {
            max_origin_rps: Some(7),
            concurrent_warmers: Some(0),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("invalid_config"), "{err}");
    assert!(err.to_string().contains("concurrent_warmers"), "{err}");
    assert_eq!(client.config().await.unwrap(), cfg);

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

    // An emergency stop carries its reason to the status.
    let stop = client
        .emergency_stop(Some("origin maintenance"))
        .await
        .unwrap();
    assert!(stop.emergency_stop && stop.changed, "{stop:?}");
    let again = client
        .emergency_stop(Some("origin maintenance"))
        .await
        .unwrap();
    assert!(
        again.emergency_stop && !again.changed,
        "already stopped: {again:?}"
    );
    let status = client.status().await.unwrap();
    assert!(status.emergency_stop);
    assert_eq!(
        status.emergency_reason.as_deref(),
        Some("origin maintenance")
    );
    let resumed = client.resume().await.unwrap();
    assert!(!resumed.emergency_stop && resumed.changed, "{resumed:?}");
    assert!(!client.resume().await.unwrap().changed, "nothing to resume");
    let status = client.status().await.unwrap();
    assert!(!status.emergency_stop);
    assert_eq!(status.emergency_reason, None);
    client.emergency_stop(None).await.unwrap();
    let status = client.status().await.unwrap();
    assert!(status.emergency_stop);
    assert_eq!(
        status.emergency_reason.as_deref(),
        Some("stopped by an operator")
    );
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
