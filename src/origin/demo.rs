//! Built-in demo origin, used when `WARMING_ORIGIN_URL` is not set, so the
//! service can be tried with no setup.
//!
//! Every key exists: the answer is a small JSON document
//! `{"key": ..., "value": "demo value for <key>", "generated_at": <RFC 3339>}`
//! after a simulated latency (20 ms by default). Only `generated_at` changes
//! between calls. A latency above the request timeout gives
//! [`OriginError::Timeout`] once the timeout has passed, like a slow real
//! origin.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Fetched, Origin, OriginError};

/// Latency of [`DemoOrigin::default`].
pub const DEFAULT_DEMO_LATENCY: Duration = Duration::from_millis(20);

/// Answers every key with a small JSON document after a short simulated latency.
#[derive(Debug, Clone)]
pub struct DemoOrigin {
    latency: Duration,
}

impl Default for DemoOrigin {
    fn default() -> Self {
        DemoOrigin::with_latency(DEFAULT_DEMO_LATENCY)
    }
}

impl DemoOrigin {
    /// A demo origin that takes `latency` to answer.
    pub fn with_latency(latency: Duration) -> Self {
        DemoOrigin { latency }
    }

    pub fn latency(&self) -> Duration {
        self.latency
    }
}

#[async_trait]
impl Origin for DemoOrigin {
    async fn fetch(&self, key: &str, timeout: Duration) -> Result<Fetched, OriginError> {
        if self.latency > timeout {
            tokio::time::sleep(timeout).await;
            return Err(OriginError::Timeout);
        }
        tokio::time::sleep(self.latency).await;
        let doc = serde_json::json!({
            "key": key,
            "value": format!("demo value for {key}"),
            "generated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
        Ok(Fetched {
            body: Bytes::from(doc.to_string()),
            max_age: None,
        })
    }

    fn describe(&self) -> String {
        "demo (built-in)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_every_key_as_json() {
        let demo = DemoOrigin::default();
        let start = tokio::time::Instant::now();
        let fetched = demo
            .fetch("user:1 \"x\"", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(start.elapsed() >= DEFAULT_DEMO_LATENCY);
        let doc: serde_json::Value = serde_json::from_slice(&fetched.body).unwrap();
        assert_eq!(doc["key"], "user:1 \"x\"");
        assert_eq!(doc["value"], "demo value for user:1 \"x\"");
        assert!(
            chrono::DateTime::parse_from_rfc3339(doc["generated_at"].as_str().unwrap()).is_ok()
        );
        assert_eq!(fetched.max_age, None);
        assert_eq!(demo.describe(), "demo (built-in)");
    }

    #[tokio::test(start_paused = true)]
    async fn slower_than_the_timeout_is_a_timeout() {
        let demo = DemoOrigin::with_latency(Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        assert_eq!(
            demo.fetch("k", Duration::from_secs(1)).await,
            Err(OriginError::Timeout)
        );
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert!(demo.fetch("k", Duration::from_secs(3)).await.is_ok());
    }
}
