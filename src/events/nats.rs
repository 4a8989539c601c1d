//! Publishes warm-completed events to NATS JetStream. (stub: being written)

use std::sync::Arc;

use super::WarmCompleted;

/// Background publisher fed through a bounded queue.
pub struct NatsPublisher {}

impl NatsPublisher {
    /// Connects, makes sure the stream `stream` exists with subject `subject`,
    /// and starts the publishing task; it stops when `cancel` fires, after
    /// flushing what is queued.
    pub async fn connect(
        _url: &str,
        _stream: &str,
        _subject: &str,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        todo!()
    }

    /// Queues `event`; never blocks. A full queue drops it and counts it.
    pub fn publish(&self, _event: Arc<WarmCompleted>) {
        todo!()
    }

    /// Events dropped because the queue was full or NATS refused them.
    pub fn dropped(&self) -> u64 {
        todo!()
    }

    /// Waits until everything queued so far was published (or failed).
    pub async fn flush(&self) {
        todo!()
    }
}
