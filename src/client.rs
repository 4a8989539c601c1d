//! Typed Rust client of the HTTP API, mirroring the spec's integration
//! examples: warm keys after an update, warm a pattern before a launch, and
//! subscribe to warm-completed events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warming::client::ClientError> {
//! use warming::client::WarmingClient;
//! use warming::protocol::WarmKeyRequest;
//!
//! let client = WarmingClient::new("http://localhost:4000")?;
//! let answer = client
//!     .warm_key(&WarmKeyRequest {
//!         keys: vec!["user:123:profile".into()],
//!         priority: Some(90),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("queued {} keys as {}", answer.queued, answer.job_id);
//! # Ok(())
//! # }
//! ```
//!
//! Every 4xx/5xx answer becomes [`ClientError::Api`] with the server's
//! `{"error": {"code", "message"}}`; [`ClientError::is_retryable`] tells
//! whether trying again later may help.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{FutureExt, Stream, StreamExt};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::TunablesUpdate;
use crate::events::WarmCompleted;
use crate::protocol::{
    AccessRequest, AccessResponse, ConfigResponse, ErrorBody, JobView, StatusResponse, StopRequest,
    StopResponse, TriggerPredictiveRequest, WarmKeyRequest, WarmPatternRequest,
    WarmPatternResponse, WarmResponse,
};
use crate::schedule::{ScheduleSpec, ScheduleView};

/// Name of the SSE event carrying a [`WarmCompleted`].
pub const WARM_COMPLETED_EVENT: &str = "warm-completed";

/// Characters escaped in a path segment (job ids, schedule names).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The request did not get an answer (connection, timeout, body read).
    #[error("request to the warming service failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The service answered with an error status.
    #[error("warming service answered {status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("cannot decode the answer of the warming service: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the same call may succeed later: transport failures, 429 and
    /// 5xx answers (except 501).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Http(e) => e.is_timeout() || e.is_connect() || e.is_request(),
            ClientError::Api { status, .. } => *status == 429 || (*status >= 500 && *status != 501),
            ClientError::Decode(_) => false,
        }
    }

    /// The API error code (`invalid_request`, `not_found`...), if the service answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Builds the error of a non-success answer from its status and body.
    pub fn from_response(status: StatusCode, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => ClientError::Api {
                status: status.as_u16(),
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.trim().chars().take(500).collect();
                ClientError::Api {
                    status: status.as_u16(),
                    code: format!("http_{}", status.as_u16()),
                    message: if text.is_empty() {
                        status.canonical_reason().unwrap_or("error").to_string()
                    } else {
                        text
                    },
                }
            }
        }
    }
}

/// A client of one warming service. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct WarmingClient {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

/// `{"schedules": [...]}` of `GET /warm/schedules`.
#[derive(serde::Deserialize)]
struct SchedulesEnvelope {
    schedules: Vec<ScheduleView>,
}

impl WarmingClient {
    /// A client of the service at `base_url` (e.g. `http://localhost:4000`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self::with_http_client(base_url, http))
    }

    /// A client using a preconfigured `reqwest::Client` (timeouts, proxies, TLS).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Self {
        WarmingClient {
            base: base_url.trim_end_matches('/').to_string(),
            http,
            token: None,
        }
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{}", self.base, path));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            return Err(ClientError::from_response(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A call whose answer body, if any, is not needed.
    async fn send_ignore(&self, req: RequestBuilder) -> Result<(), ClientError> {
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await?;
            return Err(ClientError::from_response(status, &body));
        }
        Ok(())
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST /warm/key`: warm exact keys now.
    pub async fn warm_key(&self, req: &WarmKeyRequest) -> Result<WarmResponse, ClientError> {
        self.post("/warm/key", req).await
    }

    /// `POST /warm/pattern`: warm the known keys matching a glob.
    pub async fn warm_pattern(
        &self,
        req: &WarmPatternRequest,
    ) -> Result<WarmPatternResponse, ClientError> {
        self.post("/warm/pattern", req).await
    }

    /// `POST /warm/trigger-predictive`: warm the predicted hot keys.
    pub async fn trigger_predictive(
        &self,
        req: &TriggerPredictiveRequest,
    ) -> Result<WarmResponse, ClientError> {
        self.post("/warm/trigger-predictive", req).await
    }

    /// `GET /warm/status`.
    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get("/warm/status").await
    }

    /// `GET /warm/config`: the runtime settings (`config`, durations
    /// decoded from nanoseconds) and the fixed ones (`service`).
    pub async fn config(&self) -> Result<ConfigResponse, ClientError> {
        self.get("/warm/config").await
    }

    /// `POST /warm/config`: applies `changes` (the fields set in it; the
    /// others keep their value) and returns the configuration after the
    /// update. The update is validated whole by the service: one bad field
    /// is a [`ClientError::Api`] with code `invalid_config`, and nothing
    /// changes.
    ///
    /// ```no_run
    /// # async fn demo(client: warming::client::WarmingClient) -> Result<(), warming::client::ClientError> {
    /// use std::time::Duration;
    /// use warming::config::TunablesUpdate;
    ///
    /// let after = client
    ///     .update_config(&TunablesUpdate {
    ///         max_origin_rps: Some(200),
    ///         backoff_base: Some(Duration::from_millis(250).into()),
    ///         ..Default::default()
    ///     })
    ///     .await?;
    /// assert_eq!(after.config.backoff_base, Duration::from_millis(250));
    /// # Ok(()) }
    /// ```
    pub async fn update_config(
        &self,
        changes: &TunablesUpdate,
    ) -> Result<ConfigResponse, ClientError> {
        self.post("/warm/config", changes).await
    }

    /// `POST /warm/access`: reports key accesses to the predictor.
    pub async fn record_access(&self, req: &AccessRequest) -> Result<AccessResponse, ClientError> {
        self.post("/warm/access", req).await
    }

    /// `GET /warm/jobs/{id}`.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.get(&format!("/warm/jobs/{}", utf8_percent_encode(id, SEGMENT)))
            .await
    }

    /// `GET /warm/schedules`: built-in schedules, then custom ones by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleView>, ClientError> {
        let env: SchedulesEnvelope = self.get("/warm/schedules").await?;
        Ok(env.schedules)
    }

    /// `POST /warm/schedules`: registers a custom schedule.
    pub async fn add_schedule(&self, spec: &ScheduleSpec) -> Result<ScheduleView, ClientError> {
        self.post("/warm/schedules", spec).await
    }

    /// `DELETE /warm/schedules/{name}`.
    pub async fn remove_schedule(&self, name: &str) -> Result<(), ClientError> {
        let path = format!("/warm/schedules/{}", utf8_percent_encode(name, SEGMENT));
        self.send_ignore(self.request(Method::DELETE, &path)).await
    }

    /// `POST /warm/emergency-stop`: pauses every worker (queued work is
    /// kept) until [`resume`](Self::resume). `reason` is shown as
    /// `emergency_reason` in [`status`](Self::status); without one the
    /// service says `stopped by an operator`. `changed` in the answer is
    /// false when the service was stopped already.
    pub async fn emergency_stop(&self, reason: Option<&str>) -> Result<StopResponse, ClientError> {
        let body = StopRequest {
            reason: reason.map(str::to_string),
        };
        self.send(
            self.request(Method::POST, "/warm/emergency-stop")
                .json(&body),
        )
        .await
    }

    /// `POST /warm/resume`: lifts an emergency stop (`changed` false when
    /// there was none).
    pub async fn resume(&self) -> Result<StopResponse, ClientError> {
        self.send(self.request(Method::POST, "/warm/resume")).await
    }

    /// `GET /warm/events`: warm-completed events as they happen (Server-Sent
    /// Events). Other event kinds are skipped; the stream ends when the
    /// server closes the connection. Connection errors are reported as the
    /// stream's first item.
    pub fn subscribe(
        &self,
    ) -> impl Stream<Item = Result<WarmCompleted, ClientError>> + Send + 'static {
        let req = self
            .request(Method::GET, "/warm/events")
            .header(reqwest::header::ACCEPT, "text/event-stream");
        async move {
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => return futures::stream::iter(vec![Err(e.into())]).left_stream(),
            };
            let status = resp.status();
            if !status.is_success() {
                let err = match resp.bytes().await {
                    Ok(body) => ClientError::from_response(status, &body),
                    Err(e) => e.into(),
                };
                return futures::stream::iter(vec![Err(err)]).left_stream();
            }
            resp.bytes_stream()
                .eventsource()
                .filter_map(|item| async move {
                    match item {
                        Ok(ev) if ev.event == WARM_COMPLETED_EVENT => Some(
                            serde_json::from_str::<WarmCompleted>(&ev.data)
                                .map_err(|e| ClientError::Decode(e.to_string())),
                        ),
                        Ok(_) => None,
                        Err(eventsource_stream::EventStreamError::Transport(e)) => {
                            Some(Err(ClientError::Http(e)))
                        }
                        Err(e) => Some(Err(ClientError::Decode(e.to_string()))),
                    }
                })
                .right_stream()
        }
        .flatten_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_decoded() {
        let body = br#"{"error":{"code":"invalid_request","message":"keys: must not be empty"}}"#;
        let e = ClientError::from_response(StatusCode::BAD_REQUEST, body);
        match &e {
            ClientError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(*status, 400);
                assert_eq!(code, "invalid_request");
                assert_eq!(message, "keys: must not be empty");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.code(), Some("invalid_request"));
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "warming service answered 400 invalid_request: keys: must not be empty"
        );
    }

    #[test]
    fn non_json_errors_keep_the_text() {
        let e = ClientError::from_response(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert!(matches!(&e, ClientError::Api { status: 502, code, message }
            if code == "http_502" && message == "upstream down"));
        assert!(e.is_retryable());
        let e = ClientError::from_response(StatusCode::TOO_MANY_REQUESTS, b"");
        assert!(matches!(&e, ClientError::Api { message, .. } if message == "Too Many Requests"));
        assert!(e.is_retryable());
    }

    #[test]
    fn schedule_views_decode() {
        let json = r#"{"schedules":[{"name":"daily-warmup","cron":"0 2 * * *",
            "action":{"type":"predictive","limit":100},"builtin":true,
            "timezone_effective":"UTC","next_run":"2025-01-16T02:00:00Z","last_run":null,
            "last_job_id":null,"last_error":null,"runs":0}]}"#;
        let env: SchedulesEnvelope = serde_json::from_str(json).unwrap();
        assert_eq!(env.schedules[0].spec.name, "daily-warmup");
        assert!(env.schedules[0].builtin);
    }

    /// The README's `GET /warm/config` answer decodes, durations from nanoseconds.
    #[test]
    fn config_answers_decode() {
        let json = r#"{"config": {"max_origin_rps": 100, "max_batch_size": 50, "concurrent_warmers": 10,
          "default_ttl": 3600000000000, "origin_timeout": 5000000000, "retry_attempts": 3,
          "backoff_base": 100000000, "emergency_threshold": 2000000000, "default_strategy": "priority",
          "min_rewarm_interval": 30000000000, "ttl_jitter": 0.05, "emergency_window": 50,
          "emergency_cooldown": 10000000000, "predictor": "heuristic", "predictive_limit": 100,
          "predict_window": 3600000000000},
         "service": {"listen": "0.0.0.0:4000", "origin": "demo (built-in)", "origin_http": "http1",
          "cache_backend": "memory", "cache_prefix": "", "nats_subject": null, "timezone": "UTC",
          "builtin_schedules": true, "tracker_max_keys": 1000000, "max_keys_per_request": 10000,
          "max_key_len": 1024, "auth": false}}"#;
        let c: ConfigResponse = serde_json::from_str(json).unwrap();
        assert_eq!(c.config, crate::config::Tunables::default());
        assert_eq!(c.config.emergency_threshold, Duration::from_secs(2));
        assert_eq!(c.service.origin, "demo (built-in)");
        assert_eq!(c.service.nats_subject, None);
    }

    #[test]
    fn base_url_and_segments() {
        let c = WarmingClient::new("http://localhost:4000/").unwrap();
        assert_eq!(c.base_url(), "http://localhost:4000");
        assert_eq!(
            utf8_percent_encode("warm-1/2 x", SEGMENT).to_string(),
            "warm-1%2F2%20x"
        );
    }

    /// A stand-in server (not the real API): checks the token, answers one
    /// error, and streams SSE with an unrelated event among warm-completed ones.
    #[tokio::test]
    async fn talks_http_and_sse() {
        use axum::http::HeaderMap;
        use axum::response::sse::{Event, Sse};
        use axum::routing::{get, post};

        let sample = |key: &str| WarmCompleted {
            key: key.into(),
            job_id: "warm-1".into(),
            status: crate::events::WarmStatus::Success,
            duration_ms: 12,
            attempts: 1,
            bytes: 5,
            error: None,
            completed_at: chrono::Utc::now(),
        };
        let events = vec![sample("a"), sample("b")];
        let sent = events.clone();
        let app = axum::Router::new()
            .route(
                "/warm/key",
                post(|headers: HeaderMap| async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                    assert_eq!(auth, Some("Bearer secret"));
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        axum::Json(serde_json::json!(
                            {"error": {"code": "busy", "message": "queue full"}}
                        )),
                    )
                }),
            )
            .route(
                "/warm/events",
                get(move || async move {
                    let mut items = vec![Ok::<_, std::convert::Infallible>(
                        Event::default().event("lagged").data("3"),
                    )];
                    for e in &sent {
                        items.push(Ok(Event::default()
                            .event(WARM_COMPLETED_EVENT)
                            .data(serde_json::to_string(e).unwrap())));
                    }
                    Sse::new(futures::stream::iter(items))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let client = WarmingClient::new(&format!("http://{addr}"))
            .unwrap()
            .with_token("secret");
        let err = client
            .warm_key(&WarmKeyRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(&err, ClientError::Api { status: 429, code, .. } if code == "busy"));
        assert!(err.is_retryable());

        let got: Vec<WarmCompleted> = client.subscribe().map(|r| r.unwrap()).collect().await;
        assert_eq!(got, events);

        let missing = client.job("nope").await.unwrap_err();
        assert!(matches!(missing, ClientError::Api { status: 404, .. }));
    }
}
