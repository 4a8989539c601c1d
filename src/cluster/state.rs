//! Shared documents with change notification: the tunables, the
//! emergency-stop state and the custom schedules every instance must agree on.
//!
//! # Keys
//! - `warming:{ns}:state` — hash: document name → JSON.
//! - `warming:{ns}:state:versions` — hash: document name → version (a
//!   counter raised by every write).
//! - `warming:{ns}:changes` — pub/sub channel; each message is the name of a
//!   document that changed.
//!
//! [`SharedState::put`] writes the document, raises its version and
//! publishes its name in one script. [`SharedState::watch`] yields the names
//! of changed documents: it listens on the channel on a connection of its
//! own (re-subscribing after a disconnection) and also compares all versions
//! every second, so a change whose message was lost (pub/sub is
//! fire-and-forget) is still seen within about a second. A change made by
//! the watching instance itself is reported too.
//!
//! After Redis lost its data the documents are gone; a watcher reports each
//! vanished name once, and `get` answers `None`: the owner of a document
//! should then write it again from its local copy.

use std::collections::HashMap;
use std::time::Duration;

use futures::{Stream, StreamExt};
use redis::Script;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{ClusterError, Coordinator, Result};

/// How often the watcher compares versions.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A document and its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u64,
    pub value: serde_json::Value,
}

/// KEYS: state, versions. ARGV: name, json, channel. Returns the new version.
const PUT_LUA: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('PUBLISH', ARGV[3], ARGV[1])
return v
";

/// KEYS: state, versions. ARGV: name, channel.
const DELETE_LUA: &str = r"
local n = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return n
";

/// Handle on the shared documents.
#[derive(Clone)]
pub struct SharedState {
    client: redis::Client,
    conn: ConnectionManager,
    docs: String,
    versions: String,
    channel: String,
    put: Script,
    delete: Script,
}

impl SharedState {
    pub fn new(coord: &Coordinator) -> Self {
        let ns = coord.namespace();
        SharedState {
            client: coord.client().clone(),
            conn: coord.conn(),
            docs: ns.key("state"),
            versions: ns.key("state:versions"),
            channel: ns.key("changes"),
            put: Script::new(PUT_LUA),
            delete: Script::new(DELETE_LUA),
        }
    }

    /// Stores `value` under `name` and tells every watcher; returns the new version.
    pub async fn put(&self, name: &str, value: &serde_json::Value) -> Result<u64> {
        let mut conn = self.conn.clone();
        Ok(self
            .put
            .key(&self.docs)
            .key(&self.versions)
            .arg(name)
            .arg(value.to_string())
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await?)
    }

    /// `put` of any serializable value.
    pub async fn put_json<T: Serialize>(&self, name: &str, value: &T) -> Result<u64> {
        let value = serde_json::to_value(value).map_err(|e| ClusterError::Decode(e.to_string()))?;
        self.put(name, &value).await
    }

    /// The document and its version, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<Versioned>> {
        let mut conn = self.conn.clone();
        let (json, version): (Option<String>, Option<u64>) = redis::pipe()
            .atomic()
            .cmd("HGET")
            .arg(&self.docs)
            .arg(name)
            .cmd("HGET")
            .arg(&self.versions)
            .arg(name)
            .query_async(&mut conn)
            .await?;
        let Some(json) = json else { return Ok(None) };
        let value = serde_json::from_str(&json)
            .map_err(|e| ClusterError::Decode(format!("shared document {name:?}: {e}")))?;
        Ok(Some(Versioned {
            version: version.unwrap_or(0),
            value,
        }))
    }

    /// `get`, deserialized.
    pub async fn get_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name).await? {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.value)
                .map(Some)
                .map_err(|e| ClusterError::Decode(format!("shared document {name:?}: {e}"))),
        }
    }

    /// Removes a document (watchers see its name).
    pub async fn delete(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let n: i64 = self
            .delete
            .key(&self.docs)
            .key(&self.versions)
            .arg(name)
            .arg(&self.channel)
            .invoke_async(&mut conn)
            .await?;
        Ok(n == 1)
    }

    /// Every document name and its version.
    pub async fn versions(&self) -> Result<HashMap<String, u64>> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("HGETALL")
            .arg(&self.versions)
            .query_async(&mut conn)
            .await?)
    }

    /// Names of documents changed from now on (by any instance), each
    /// reported once per observed version; ends when dropped. Changes made
    /// before the call are not reported: `get` what you need first.
    pub async fn watch(&self) -> Result<impl Stream<Item = String> + Send + 'static> {
        let known = self.versions().await?;
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move { me.watch_loop(known, tx).await });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn watch_loop(self, mut known: HashMap<String, u64>, tx: mpsc::Sender<String>) {
        let mut messages: Option<redis::aio::PubSubStream> = None;
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if tx.is_closed() {
                return;
            }
            let mut poll = false;
            if messages.is_none() {
                messages = self.subscribe().await;
                // Whatever happened while we were not subscribed.
                poll = messages.is_some();
            }
            if !poll {
                let next = async {
                    match messages.as_mut() {
                        Some(m) => m.next().await.map(|_| ()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    msg = next => {
                        if msg.is_none() {
                            // Disconnected: re-subscribe on the next round.
                            messages = None;
                        }
                    }
                    _ = tick.tick() => {}
                    () = tx.closed() => return,
                }
            }
            // Any message or tick: compare versions (one HGETALL), which also
            // deduplicates the pub/sub and polling paths.
            let Ok(now) = self.versions().await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut changed: Vec<String> = now
                .iter()
                .filter(|(name, v)| known.get(*name) != Some(v))
                .map(|(name, _)| name.clone())
                .collect();
            changed.extend(
                known
                    .keys()
                    .filter(|name| !now.contains_key(*name))
                    .cloned(),
            );
            known = now;
            for name in changed {
                if tx.send(name).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn subscribe(&self) -> Option<redis::aio::PubSubStream> {
        let attempt = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub.into_on_message())
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, attempt).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "shared state: subscribe failed, polling");
                None
            }
            Err(_) => None,
        }
    }
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("docs", &self.docs)
            .field("channel", &self.channel)
            .finish()
    }
}
