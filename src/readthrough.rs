//! Read-through for `GET /cache/{key}`: a hit is served from the cache; a miss
//! is fetched from the origin once, however many callers ask at the same
//! moment (request coalescing).
//!
//! # Concurrent misses on the same key
//!
//! The first caller to miss registers a fetch in the in-flight map and gets
//! [`ReadSource::Origin`] (the fetch task looks in the cache once more
//! first: a fetch that finished between the caller's miss and its
//! registration has stored the value there); callers that miss while it runs join the same fetch
//! and get [`ReadSource::Coalesced`]. The fetch runs in its own tokio task
//! (observed through a [`Shared`] future), so it completes, and fills the
//! cache, even if every caller times out or disconnects. The task goes
//! through [`GuardedOrigin`] (rate limiter and retries), writes the value with
//! the origin's `max-age` or the default TTL plus jitter, tells the write
//! hook (the engine: the predictor models when values expire), and only then
//! leaves the in-flight map, so a caller arriving afterwards finds the value
//! cached.
//!
//! A failed cache write after a successful fetch is logged and the value is
//! still returned: the caller asked for the value, not for the write.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use parking_lot::Mutex;

use crate::cache::{Cache, CacheEntry, CacheError, effective_ttl};
use crate::config::SharedTunables;
use crate::origin::OriginError;
use crate::origin::retry::{FetchObserver, GuardedOrigin, RetryPolicy};

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    /// The cache had it.
    Hit,
    /// This caller's miss started the origin fetch.
    Origin,
    /// Joined a fetch another caller had started.
    Coalesced,
}

impl ReadSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ReadSource::Hit => "hit",
            ReadSource::Origin => "miss",
            ReadSource::Coalesced => "coalesced",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Told of every value a read-through miss wrote: the key and its TTL.
pub type WriteHook = Arc<dyn Fn(&str, std::time::Duration) + Send + Sync>;

/// The outcome of one shared fetch, as every joined caller sees it.
type SharedFetch = Shared<BoxFuture<'static, Result<Bytes, ReadError>>>;

/// Coalescing read-through over one cache and one guarded origin.
/// Cloning shares the cache, origin and in-flight map.
#[derive(Clone)]
pub struct ReadThrough {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Arc<dyn Cache>,
    origin: GuardedOrigin,
    tunables: SharedTunables,
    observer: Arc<dyn FetchObserver>,
    on_write: Option<WriteHook>,
    /// Fetches under way, by key. An entry is inserted by the first caller
    /// that misses and removed by the fetch task itself when it ends, so
    /// while present it is always the one running fetch for that key.
    in_flight: Mutex<HashMap<String, SharedFetch>>,
}

impl ReadThrough {
    pub fn new(
        cache: Arc<dyn Cache>,
        origin: GuardedOrigin,
        tunables: SharedTunables,
        observer: Arc<dyn FetchObserver>,
    ) -> Self {
        ReadThrough {
            inner: Arc::new(Inner {
                cache,
                origin,
                tunables,
                observer,
                on_write: None,
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Calls `hook` with the key and TTL of every value a miss writes (after
    /// the cache write succeeded). Set before the first read.
    pub fn with_write_hook(mut self, hook: WriteHook) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("the write hook is set before the read-through is shared")
            .on_write = Some(hook);
        self
    }

    /// The value of `key`; on a miss the shared fetch runs in its own task, so
    /// a caller that goes away never fails the others.
    ///
    /// A cache read error is returned as [`ReadError::Cache`]; an origin
    /// failure (after retries) as [`ReadError::Origin`], to every caller that
    /// joined that fetch.
    pub async fn get(&self, key: &str) -> Result<(Bytes, ReadSource), ReadError> {
        if let Some(value) = self.inner.cache.get(key).await? {
            return Ok((value, ReadSource::Hit));
        }
        let (fetch, source) = self.join_or_start(key);
        let value = fetch.await?;
        Ok((value, source))
    }

    /// Number of origin fetches currently under way.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.lock().len()
    }

    /// The running fetch for `key`, or a newly started one.
    fn join_or_start(&self, key: &str) -> (SharedFetch, ReadSource) {
        let mut in_flight = self.inner.in_flight.lock();
        if let Some(fetch) = in_flight.get(key) {
            return (fetch.clone(), ReadSource::Coalesced);
        }
        // Spawned while the lock is held: the task's own removal waits for
        // the lock, so it cannot run before the entry is inserted below.
        let task = tokio::spawn(Arc::clone(&self.inner).fetch_and_store(key.to_owned()));
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(ReadError::Origin(OriginError::Other(format!(
                    "origin fetch task failed: {e}"
                ))))
            })
        }
        .boxed()
        .shared();
        in_flight.insert(key.to_owned(), fetch.clone());
        (fetch, ReadSource::Origin)
    }
}

/// Removes the fetch from the in-flight map when the task ends, also if it
/// panics, so a key is never stuck behind a dead fetch.
struct LeaveInFlight<'a> {
    inner: &'a Inner,
    key: &'a str,
}

impl Drop for LeaveInFlight<'_> {
    fn drop(&mut self) {
        self.inner.in_flight.lock().remove(self.key);
    }
}

impl Inner {
    /// Body of the fetch task: origin, then cache, then leave the in-flight map.
    async fn fetch_and_store(self: Arc<Self>, key: String) -> Result<Bytes, ReadError> {
        let _leave = LeaveInFlight {
            inner: &self,
            key: &key,
        };
        self.fetch_and_store_inner(&key).await
    }

    async fn fetch_and_store_inner(&self, key: &str) -> Result<Bytes, ReadError> {
        // The caller's cache check may have missed just before another
        // fetch of this key stored its value and left the in-flight map:
        // look once more, so that value is not fetched a second time.
        if let Some(value) = self.cache.get(key).await? {
            return Ok(value);
        }
        let t = self.tunables.load_full();
        let policy = RetryPolicy {
            retries: t.retry_attempts,
            backoff_base: t.backoff_base,
            timeout: t.origin_timeout,
        };
        let report = self.origin.fetch(key, policy, self.observer.as_ref()).await;
        let fetched = report.result?;
        let ttl = effective_ttl(fetched.max_age, t.default_ttl, t.ttl_jitter);
        let entry = CacheEntry {
            key: key.to_owned(),
            value: fetched.body.clone(),
            ttl,
        };
        match self.cache.set_many(std::slice::from_ref(&entry)).await {
            Ok(()) => {
                if let Some(hook) = &self.on_write {
                    hook(key, ttl);
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "read-through: fetched value not cached"),
        }
        Ok(fetched.body)
    }
}
