//! HTTP origin: URL template with `{key}`, key percent-encoded. (stub)

use std::time::Duration;

use async_trait::async_trait;

use super::{Fetched, Origin, OriginError};

/// Fetches `GET <template with {key} replaced>` through a pooled client.
pub struct HttpOrigin {}

impl HttpOrigin {
    pub fn new(_template: &str) -> Result<Self, OriginError> { todo!() }
    /// The URL that would be requested for `key`.
    pub fn url_for(&self, _key: &str) -> Result<String, OriginError> { todo!() }
}

#[async_trait]
impl Origin for HttpOrigin {
    async fn fetch(&self, _key: &str, _timeout: Duration) -> Result<Fetched, OriginError> { todo!() }
    fn describe(&self) -> String { todo!() }
}
