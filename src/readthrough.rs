//! Read-through for `GET /cache/{key}`: a hit is served from the cache; a miss
//! is fetched from the origin once, however many callers ask at the same
//! moment (request coalescing). (stub: being written)

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::{Cache, CacheError};
use crate::config::SharedTunables;
use crate::origin::OriginError;
use crate::origin::retry::{FetchObserver, GuardedOrigin};

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

/// Coalescing read-through over one cache and one guarded origin.
pub struct ReadThrough {}

impl ReadThrough {
    pub fn new(
        _cache: Arc<dyn Cache>,
        _origin: GuardedOrigin,
        _tunables: SharedTunables,
        _observer: Arc<dyn FetchObserver>,
    ) -> Self {
        todo!()
    }

    /// The value of `key`; on a miss the shared fetch runs in its own task, so
    /// a caller that goes away never fails the others.
    pub async fn get(&self, _key: &str) -> Result<(Bytes, ReadSource), ReadError> {
        todo!()
    }
}
