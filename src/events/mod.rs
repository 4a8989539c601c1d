//! Warm-completed events: one [`WarmCompleted`] per finished key, fanned out by
//! [`EventBus`] to in-process subscribers (the SSE endpoint) and, when
//! configured, to NATS JetStream ([`nats::NatsPublisher`]).
//!
//! Emitting never blocks a worker: subscribers that fall behind miss events
//! (SSE reports the gap), and the NATS queue counts what it had to drop.

pub mod nats;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Outcome of warming one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmStatus {
    /// Fetched from the origin and written to the cache.
    Success,
    /// The origin has no such key (404); not retried.
    NotFound,
    /// Every attempt failed, or a final origin error.
    Failed,
    /// The value was fetched but the cache write failed.
    CacheError,
}

impl WarmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmStatus::Success => "success",
            WarmStatus::NotFound => "not_found",
            WarmStatus::Failed => "failed",
            WarmStatus::CacheError => "cache_error",
        }
    }
}

/// Published once per finished key (SSE event `warm-completed`, NATS subject
/// `nats_subject`). Field names are part of the public contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WarmCompleted {
    pub key: String,
    pub job_id: String,
    pub status: WarmStatus,
    pub duration_ms: u64,
    pub attempts: u32,
    pub bytes: u64,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub completed_at: DateTime<Utc>,
}

use std::sync::Arc;
use tokio::sync::broadcast;

/// Fans every event out to in-process subscribers and to NATS.
pub struct EventBus {
    tx: broadcast::Sender<Arc<WarmCompleted>>,
    nats: Option<nats::NatsPublisher>,
}

impl EventBus {
    /// `capacity` events are buffered per in-process subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(16));
        EventBus { tx, nats: None }
    }

    /// Also publish every event to NATS JetStream.
    pub fn with_nats(mut self, publisher: nats::NatsPublisher) -> Self {
        self.nats = Some(publisher);
        self
    }

    /// Never blocks.
    pub fn emit(&self, event: WarmCompleted) {
        let event = Arc::new(event);
        if let Some(n) = &self.nats {
            n.publish(event.clone());
        }
        let _ = self.tx.send(event);
    }

    /// A new in-process subscription (used by `GET /warm/events`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WarmCompleted>> {
        self.tx.subscribe()
    }

    /// In-process subscribers right now (open SSE streams).
    pub fn subscriber_count(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The NATS publisher, when configured.
    pub fn nats(&self) -> Option<&nats::NatsPublisher> {
        self.nats.as_ref()
    }
}
