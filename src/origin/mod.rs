//! Origin side: the [`Origin`] trait (one request for one key), the HTTP
//! origin ([`http::HttpOrigin`]) and the built-in demo origin
//! ([`demo::DemoOrigin`]), the origin rate limiter ([`limiter::OriginLimiter`],
//! GCRA via governor) and the retry policy ([`retry::GuardedOrigin`]) that puts
//! every attempt through the limiter.
//!
//! The origin never sees the cache; only the warm worker joins the two.

pub mod demo;
pub mod http;
pub mod limiter;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::config::OriginHttp;

/// A successful origin response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub body: Bytes,
    /// `Cache-Control: max-age` of the response, when present.
    pub max_age: Option<Duration>,
}

/// Why one origin request failed. Retryability is a property of the error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("origin has no such key (404)")]
    NotFound,
    #[error("origin answered {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("origin request timed out")]
    Timeout,
    #[error("cannot connect to origin: {0}")]
    Connect(String),
    #[error("origin request failed: {0}")]
    Other(String),
    #[error("key cannot be sent to the origin: {0}")]
    InvalidKey(String),
}

impl OriginError {
    /// Timeouts, connection errors, 429 and 5xx are worth another attempt.
    pub fn is_retryable(&self) -> bool {
        match self {
            OriginError::Timeout | OriginError::Connect(_) => true,
            OriginError::Status { status, .. } => *status == 429 || *status >= 500,
            OriginError::Other(_) => true,
            OriginError::NotFound | OriginError::InvalidKey(_) => false,
        }
    }

    /// The origin's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            OriginError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Short machine-readable status used in events and job outcomes.
    pub fn code(&self) -> &'static str {
        match self {
            OriginError::NotFound => "not_found",
            OriginError::Status { .. } => "origin_error",
            OriginError::Timeout => "timeout",
            OriginError::Connect(_) => "connect_error",
            OriginError::Other(_) => "origin_error",
            OriginError::InvalidKey(_) => "invalid_key",
        }
    }
}

/// Where values come from.
#[async_trait]
pub trait Origin: Send + Sync + 'static {
    /// One request for `key`, bounded by `timeout`. No retries here.
    async fn fetch(&self, key: &str, timeout: Duration) -> Result<Fetched, OriginError>;
    /// Human-readable description for logs and `/readyz` (e.g. the URL template).
    fn describe(&self) -> String;
}

/// The origin named by `origin_url` (spoken to in `version`, trusting the
/// CA certificates of `ca_file` besides the usual roots), or the demo
/// origin when there is none.
pub fn open(
    origin_url: Option<&str>,
    version: OriginHttp,
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<dyn Origin>, OriginError> {
    match origin_url {
        Some(url) => Ok(Arc::new(http::HttpOrigin::with_options(
            url, version, ca_file,
        )?)),
        None => Ok(Arc::new(demo::DemoOrigin::default())),
    }
}
