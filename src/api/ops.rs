//! Handlers of the read-through cache, the SSE event stream, metrics and health.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use super::error::ApiError;
use crate::keys::validate_key;

/// `GET /cache/{key}`: the value, with `X-Cache: hit | miss | coalesced`.
pub async fn read_cache(
    State(s): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    validate_key(&key, s.engine.max_key_len())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string()))?;
    let (value, source) = s.engine.read(&key).await?;
    let mut resp = value.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("x-cache", HeaderValue::from_static(source.as_str()));
    Ok(resp)
}

/// `GET /warm/events`: Server-Sent Events, one `warm-completed` event per
/// finished key; a subscriber that falls behind gets a `lagged` event with
/// the number of events it missed.
pub async fn events(
    State(s): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.engine.events().subscribe();
    let stopping = s.stopping.clone();
    let stream = BroadcastStream::new(rx)
        .map(|item| {
            Ok(match item {
                Ok(ev) => Event::default()
                    .event("warm-completed")
                    .json_data(&*ev)
                    .unwrap_or_else(|_| Event::default().event("error")),
                Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\":{n}}}")),
            })
        })
        .take_until(async move { stopping.cancelled().await });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.engine.metrics_text(),
    )
        .into_response()
}

/// `GET /healthz`: the process runs.
pub async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: ready only when the cache answers and work is accepted.
pub async fn readyz(State(s): State<AppState>) -> Response {
    match s.engine.ready().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(reason) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason).into_response()
        }
    }
}
