//! The spec's integration examples with the typed client.
//!
//! Start the service (`cargo run -- serve`), then `cargo run --example client`.
//! `WARMING_URL` names the service (default `http://localhost:4000`) and
//! `WARMING_API_TOKEN`, when set, is sent as a bearer token. The example warms
//! a profile "after updating" it, warms a pattern "before launching a new
//! feature", prints the status and the configuration, then prints the first
//! few warm-completed events and stops after a few seconds.

use std::time::Duration;

use futures::StreamExt;
use warming::client::WarmingClient;
use warming::config::Strategy;
use warming::protocol::{WarmKeyRequest, WarmPatternRequest};

/// Events printed before stopping.
const MAX_EVENTS: usize = 5;
/// How long to wait for them.
const LISTEN_FOR: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("WARMING_URL").unwrap_or_else(|_| "http://localhost:4000".into());
    let mut client = WarmingClient::new(&url)?;
    if let Ok(token) = std::env::var("WARMING_API_TOKEN") {
        client = client.with_token(token);
    }

    // Subscribe first: the task connects in the background while the keys
    // are queued, so the events of the warming below are seen.
    let listener = tokio::spawn(
        client
            .subscribe()
            .take(MAX_EVENTS)
            .for_each(|event| async move {
                match event {
                    Ok(e) => println!(
                        "Warmed {} in {}ms (status: {})",
                        e.key,
                        e.duration_ms,
                        e.status.as_str()
                    ),
                    Err(e) => eprintln!("event stream: {e}"),
                }
            }),
    );

    // After updating user profile.
    let user_id = 123;
    let warmed = client
        .warm_key(&WarmKeyRequest {
            keys: vec![format!("user:{user_id}:profile")],
            priority: Some(90),
            ..Default::default()
        })
        .await?;
    println!(
        "warm key: queued {} as job {} (~{} ms)",
        warmed.queued, warmed.job_id, warmed.estimated_time_ms
    );

    // Before launching a new feature.
    let pattern = client
        .warm_pattern(&WarmPatternRequest {
            pattern: "new-feature:*".into(),
            limit: Some(1000),
            priority: Some(100),
            strategy: Some(Strategy::Priority),
            ..Default::default()
        })
        .await?;
    println!(
        "warm pattern {}: {} matched, {} queued as job {}",
        pattern.pattern,
        pattern.matched_keys.len(),
        pattern.queued,
        pattern.job_id
    );

    let status = client.status().await?;
    println!(
        "status: {} active jobs, {} queued tasks, {} workers, emergency stop: {}, \
         success rate {:.3}",
        status.active_jobs,
        status.queued_tasks,
        status.worker_status.len(),
        status.emergency_stop,
        status.metrics.success_rate
    );

    // The configuration is typed: durations arrive as `Duration`s.
    let config = client.config().await?;
    println!(
        "config: {} origin requests/s, {} workers, origin timeout {:?}, default TTL {:?}, \
         strategy {}, cache {}",
        config.config.max_origin_rps,
        config.config.concurrent_warmers,
        config.config.origin_timeout,
        config.config.default_ttl,
        config.config.default_strategy,
        config.service.cache_backend
    );

    if tokio::time::timeout(LISTEN_FOR, listener).await.is_err() {
        println!("no more events within {LISTEN_FOR:?}; done");
    }
    Ok(())
}
