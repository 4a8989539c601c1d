//! [`NatsPublisher`] against the real NATS server of the machine
//! (127.0.0.1:4222, JetStream enabled). Each test uses its own stream and
//! subject and deletes the stream at the end. Without a server the tests fail
//! and say how to start one.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use chrono::{TimeZone, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use warming::events::nats::{NatsPublisher, message_id};
use warming::events::{WarmCompleted, WarmStatus};

const URL: &str = "127.0.0.1:4222";

/// A stream and subject name no other test (or run) uses.
fn unique(tag: &str) -> (String, String) {
    let n = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let id = format!("{}_{}_{n}", tag, std::process::id());
    (
        format!("WARMING_TEST_{id}"),
        format!("warming.test.{id}.completed"),
    )
}

async fn jetstream_context() -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(URL)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "NATS is not reachable at {URL} ({e}). Start it with JetStream enabled: \
                 `nats-server -js` (or `docker run -p 4222:4222 nats -js`)"
            )
        });
    jetstream::new(client)
}

fn event(i: usize) -> WarmCompleted {
    WarmCompleted {
        key: format!("user:{i}:profile"),
        job_id: "warm-1736938200000-123".into(),
        status: if i % 10 == 0 {
            WarmStatus::Failed
        } else {
            WarmStatus::Success
        },
        duration_ms: i as u64,
        attempts: 1 + (i % 3) as u32,
        bytes: 100 + i as u64,
        error: (i % 10 == 0).then(|| "origin returned 503".to_string()),
        completed_at: Utc.with_ymd_and_hms(2025, 1, 15, 10, 30, 0).unwrap()
            + chrono::Duration::milliseconds(i as i64),
    }
}

/// Reads `n` messages of `stream` from the start, in order.
async fn read_back(js: &jetstream::Context, stream: &str, n: usize) -> Vec<jetstream::Message> {
    let consumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let messages = consumer.messages().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        messages.take(n).map(|m| m.unwrap()).collect::<Vec<_>>(),
    )
    .await
    .expect("messages arrive")
}

#[tokio::test]
async fn publishes_every_event_in_order() {
    let js = jetstream_context().await;
    let (stream, subject) = unique("order");
    let cancel = CancellationToken::new();
    let publisher = NatsPublisher::connect(URL, &stream, &subject, cancel.clone())
        .await
        .unwrap();

    let sent: Vec<WarmCompleted> = (0..100).map(event).collect();
    for e in &sent {
        publisher.publish(Arc::new(e.clone()));
    }
    tokio::time::timeout(Duration::from_secs(10), publisher.flush())
        .await
        .expect("flush completes");
    assert_eq!(publisher.dropped(), 0);
    assert_eq!(publisher.published(), 100);

    let got = read_back(&js, &stream, 100).await;
    for (msg, want) in got.iter().zip(&sent) {
        assert_eq!(msg.subject.as_str(), subject);
        let decoded: WarmCompleted = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(&decoded, want);
        let raw: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        for field in [
            "key",
            "job_id",
            "status",
            "duration_ms",
            "attempts",
            "bytes",
            "completed_at",
        ] {
            assert!(raw.get(field).is_some(), "{field} missing in {raw}");
        }
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_string());
        assert_eq!(id, Some(message_id(want)));
    }
    assert_eq!(got.len(), 100);
    assert_eq!(
        got.iter()
            .filter(|m| serde_json::from_slice::<WarmCompleted>(&m.payload)
                .unwrap()
                .status
                == WarmStatus::Failed)
            .count(),
        10
    );

    cancel.cancel();
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn duplicates_are_dropped_by_the_stream_and_cancel_drains() {
    let js = jetstream_context().await;
    let (stream, subject) = unique("dedup");
    let cancel = CancellationToken::new();
    let publisher = NatsPublisher::connect(URL, &stream, &subject, cancel.clone())
        .await
        .unwrap();

    let e = Arc::new(event(7));
    publisher.publish(e.clone());
    publisher.publish(e.clone());
    publisher.publish(Arc::new(event(8)));
    // Cancelling right away still publishes what was queued.
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), publisher.flush())
        .await
        .expect("flush after cancel returns");
    // Once cancelled, `flush` may return before the drain ends: poll.
    let mut handle = js.get_stream(&stream).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while (publisher.published() < 3 || handle.info().await.unwrap().state.messages < 2)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The duplicate is acknowledged (flagged as such) but not stored.
    assert_eq!(publisher.published(), 3);
    assert_eq!(handle.info().await.unwrap().state.messages, 2);
    // After cancellation the queue is closed: events are counted as dropped.
    publisher.publish(Arc::new(event(9)));
    assert_eq!(publisher.dropped(), 1);

    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn an_existing_stream_gets_the_subject_added() {
    let js = jetstream_context().await;
    let (stream, subject) = unique("existing");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.other")],
        ..Default::default()
    })
    .await
    .unwrap();

    let cancel = CancellationToken::new();
    let publisher = NatsPublisher::connect(URL, &stream, &subject, cancel.clone())
        .await
        .unwrap();
    let mut handle = js.get_stream(&stream).await.unwrap();
    let subjects = handle.info().await.unwrap().config.subjects.clone();
    assert!(subjects.contains(&subject), "{subjects:?}");
    assert!(subjects.contains(&format!("{subject}.other")));

    publisher.publish(Arc::new(event(1)));
    publisher.flush().await;
    assert_eq!(publisher.published(), 1);

    cancel.cancel();
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn unreachable_server_says_how_to_start_one() {
    let started = std::time::Instant::now();
    let err = NatsPublisher::connect(
        "127.0.0.1:1",
        "WARMING_TEST_NONE",
        "warming.none",
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("no server listens on port 1");
    let message = format!("{err:#}");
    assert!(message.contains("nats-server -js"), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
