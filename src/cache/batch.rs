//! Groups cache writes from many workers into pipelines of up to
//! `max_batch_size` entries. (stub: being written)

use std::sync::Arc;

use super::{Cache, CacheEntry, CacheError};
use crate::config::SharedTunables;

/// Handle to the background writer task. Cloning shares the task.
#[derive(Clone)]
pub struct BatchWriter {}

impl BatchWriter {
    /// Starts the writer task; it drains and exits when every handle is dropped.
    pub fn spawn(_cache: Arc<dyn Cache>, _tunables: SharedTunables) -> Self {
        todo!()
    }

    /// Queues `entry` and waits until the batch holding it was written.
    pub async fn write(&self, _entry: CacheEntry) -> Result<(), CacheError> {
        todo!()
    }
}
