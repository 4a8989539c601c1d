//! Handlers of the read-through cache, the SSE event stream, the access-log
//! export, metrics and health.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::AppState;
use super::error::{ApiError, ApiPath};
use crate::keys::validate_key;

/// `GET /warm/access/log`: the access log (`WARMING_ACCESS_LOG`) as JSON
/// lines, the rotated file first, up to date to this request (what was
/// buffered is written first). Needs the API token when one is set: it lists
/// the keys clients read.
pub async fn access_log(State(s): State<AppState>) -> Result<Response, ApiError> {
    use tokio::io::AsyncReadExt;
    let log = s.engine.access_log().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "access_log_off",
            "the access log is off; set WARMING_ACCESS_LOG to a file path",
        )
    })?;
    let unavailable = |e: std::io::Error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "access_log_unavailable",
            format!("cannot read the access log: {e}"),
        )
    };
    log.flush().await.map_err(unavailable)?;
    let open = |path: std::path::PathBuf| async move {
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let rotated = open(log.rotated_path()).await.map_err(unavailable)?;
    let current = open(log.path().to_path_buf()).await.map_err(unavailable)?;
    let empty = || tokio::io::empty();
    let reader = match (rotated, current) {
        (Some(a), Some(b)) => {
            Box::pin(a.chain(b)) as std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>
        }
        (Some(a), None) => Box::pin(a),
        (None, Some(b)) => Box::pin(b),
        (None, None) => Box::pin(empty()),
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        )],
        body,
    )
        .into_response())
}

/// `GET /cache/{key}`: the value, with `X-Cache: hit | miss | coalesced`.
pub async fn read_cache(
    State(s): State<AppState>,
    ApiPath(key): ApiPath<String>,
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
