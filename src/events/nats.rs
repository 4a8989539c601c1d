//! Publishes warm-completed events to NATS JetStream.
//!
//! Workers must never wait for NATS, so [`NatsPublisher::publish`] only pushes
//! the event into a bounded queue ([`QUEUE_CAPACITY`]); when the queue is full
//! the event is dropped and counted ([`NatsPublisher::dropped`]). One task
//! drains the queue: it publishes each event as JSON to the subject and keeps
//! up to [`MAX_PENDING_ACKS`] JetStream acknowledgements in flight at once, so
//! throughput is not bounded by one round trip per event. Every message
//! carries `Nats-Msg-Id: <job_id>:<key>:<completed_at>`, so the stream drops a
//! duplicate published again within its duplicate window.
//!
//! [`NatsPublisher::flush`] waits until everything queued before it was
//! acknowledged (or failed); on cancellation the task publishes what is
//! queued, waits for the acknowledgements, and ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::WarmCompleted;

/// Events waiting to be published; more are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Published events whose acknowledgement is awaited concurrently.
pub const MAX_PENDING_ACKS: usize = 256;
/// How long connecting to NATS may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How to get a NATS server, appended to connection errors.
const HOW_TO_START: &str = "start a NATS server with JetStream enabled, e.g. `nats-server -js` \
     (or `docker run -p 4222:4222 nats -js`), or leave WARMING_NATS_URL unset to disable NATS";

enum Command {
    Event(Arc<WarmCompleted>),
    /// Answered once everything queued before it is acknowledged.
    Flush(oneshot::Sender<()>),
}

/// Background publisher fed through a bounded queue.
pub struct NatsPublisher {
    tx: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    subject: String,
    stream: String,
}

#[derive(Default)]
struct Counters {
    dropped: AtomicU64,
    published: AtomicU64,
}

/// `Nats-Msg-Id` of an event: stable across retries of the same publish.
pub fn message_id(event: &WarmCompleted) -> String {
    format!(
        "{}:{}:{}",
        event.job_id,
        event.key,
        event
            .completed_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

/// Whether the NATS subject filter `filter` (with `*` and `>` wildcards)
/// matches `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl NatsPublisher {
    /// Connects, makes sure the stream `stream` exists with subject `subject`,
    /// and starts the publishing task; it stops when `cancel` fires, after
    /// flushing what is queued.
    ///
    /// An existing stream that does not capture `subject` gets it added.
    pub async fn connect(
        url: &str,
        stream: &str,
        subject: &str,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let client = tokio::time::timeout(
            CONNECT_TIMEOUT + Duration::from_millis(500),
            async_nats::ConnectOptions::new()
                .connection_timeout(CONNECT_TIMEOUT)
                .name("warming")
                .connect(url),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to NATS at {url}; {HOW_TO_START}"))?;

        let js = jetstream::new(client);
        let mut handle = js
            .get_or_create_stream(stream::Config {
                name: stream.to_string(),
                subjects: vec![subject.to_string()],
                ..Default::default()
            })
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| {
                format!(
                    "cannot get or create the JetStream stream {stream:?} at {url} \
                     (is JetStream enabled? {HOW_TO_START})"
                )
            })?;
        let info = handle
            .info()
            .await
            .with_context(|| format!("cannot read JetStream stream {stream:?}"))?;
        if !info
            .config
            .subjects
            .iter()
            .any(|f| subject_matches(f, subject))
        {
            let mut config = info.config.clone();
            config.subjects.push(subject.to_string());
            let existing = info.config.subjects.join(", ");
            js.update_stream(config).await.with_context(|| {
                format!(
                    "JetStream stream {stream:?} exists with subjects [{existing}] and subject \
                     {subject:?} cannot be added to it; choose another WARMING_NATS_STREAM or \
                     WARMING_NATS_SUBJECT"
                )
            })?;
            tracing::info!(
                stream,
                subject,
                "added the subject to the existing JetStream stream"
            );
        }

        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        tokio::spawn(publish_loop(
            js,
            subject.to_string(),
            rx,
            counters.clone(),
            cancel,
        ));
        Ok(NatsPublisher {
            tx,
            counters,
            subject: subject.to_string(),
            stream: stream.to_string(),
        })
    }

    /// Queues `event`; never blocks. A full queue drops it and counts it.
    pub fn publish(&self, event: Arc<WarmCompleted>) {
        if self.tx.try_send(Command::Event(event)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full or NATS refused them.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Events acknowledged by JetStream (a duplicate the stream did not store
    /// included).
    pub fn published(&self) -> u64 {
        self.counters.published.load(Ordering::Relaxed)
    }

    /// The subject events are published to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The JetStream stream capturing the subject.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Waits until everything queued so far was published (or failed).
    /// Returns at once when the publisher has stopped.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

type AckFuture = futures::future::BoxFuture<
    'static,
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
>;

/// Drains the queue until `cancel`, then publishes what is left and ends.
async fn publish_loop(
    js: jetstream::Context,
    subject: String,
    mut rx: mpsc::Receiver<Command>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
) {
    let mut pending: FuturesUnordered<AckFuture> = FuturesUnordered::new();
    let mut failures = 0u64;
    let mut cancelled = false;
    loop {
        tokio::select! {
            biased;
            Some(ack) = pending.next(), if !pending.is_empty() => {
                settle(ack, &counters, &mut failures);
            }
            _ = cancel.cancelled(), if !cancelled => {
                // Refuse new events; what is queued is still published below.
                cancelled = true;
                rx.close();
            }
            command = rx.recv(), if pending.len() < MAX_PENDING_ACKS => match command {
                Some(Command::Event(event)) => {
                    match send(&js, &subject, &event).await {
                        Ok(ack) => pending.push(ack),
                        Err(e) => {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            report(&mut failures, &e);
                        }
                    }
                }
                Some(Command::Flush(done)) => {
                    while let Some(ack) = pending.next().await {
                        settle(ack, &counters, &mut failures);
                    }
                    let _ = done.send(());
                }
                None => break,
            },
        }
    }
    while let Some(ack) = pending.next().await {
        settle(ack, &counters, &mut failures);
    }
    tracing::debug!(
        published = counters.published.load(Ordering::Relaxed),
        dropped = counters.dropped.load(Ordering::Relaxed),
        "NATS publisher stopped"
    );
}

/// Publishes one event; the returned future resolves with its ack.
async fn send(
    js: &jetstream::Context,
    subject: &str,
    event: &WarmCompleted,
) -> anyhow::Result<AckFuture> {
    let payload = serde_json::to_vec(event)?;
    let publish = PublishMessage::build()
        .payload(payload.into())
        .message_id(message_id(event));
    let ack = js.send_publish(subject.to_string(), publish).await?;
    Ok(Box::pin(ack.into_future()))
}

fn settle(
    ack: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    counters: &Counters,
    failures: &mut u64,
) {
    match ack {
        Ok(_) => {
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            report(failures, &e);
        }
    }
}

/// Logs the first failure and then one in a thousand, not one line per event.
fn report(failures: &mut u64, error: &dyn std::fmt::Display) {
    if *failures % 1000 == 0 {
        tracing::warn!(
            error = %error,
            failures = *failures + 1,
            "cannot publish a warm-completed event to NATS"
        );
    }
    *failures += 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::WarmStatus;
    use chrono::TimeZone;

    #[test]
    fn subject_filters() {
        assert!(subject_matches("warming.completed", "warming.completed"));
        assert!(subject_matches("warming.*", "warming.completed"));
        assert!(subject_matches("warming.>", "warming.a.b"));
        assert!(subject_matches(">", "warming.completed"));
        assert!(!subject_matches("warming.*", "warming.a.b"));
        assert!(!subject_matches("warming.completed", "warming"));
        assert!(!subject_matches("warming", "warming.completed"));
        assert!(!subject_matches("other.>", "warming.completed"));
    }

    #[test]
    fn message_id_names_job_key_and_time() {
        let event = WarmCompleted {
            key: "user:1".into(),
            job_id: "warm-1-2".into(),
            status: WarmStatus::Success,
            duration_ms: 3,
            attempts: 1,
            bytes: 10,
            error: None,
            completed_at: chrono::Utc
                .with_ymd_and_hms(2025, 1, 15, 10, 30, 0)
                .unwrap(),
        };
        assert_eq!(message_id(&event), "warm-1-2:user:1:2025-01-15T10:30:00Z");
    }
}
