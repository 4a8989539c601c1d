//! Built-in demo origin used when `WARMING_ORIGIN_URL` is not set. (stub)

use std::time::Duration;

use async_trait::async_trait;

use super::{Fetched, Origin, OriginError};

/// Answers every key with a small JSON document after a short simulated latency.
#[derive(Default)]
pub struct DemoOrigin {}

#[async_trait]
impl Origin for DemoOrigin {
    async fn fetch(&self, _key: &str, _timeout: Duration) -> Result<Fetched, OriginError> { todo!() }
    fn describe(&self) -> String { "demo (built-in)".into() }
}
