//! The HTTP layer (axum): routes, handlers, authentication and the server
//! lifecycle. The only module that knows JSON bodies and status codes; it
//! calls the engine and maps its errors once, in [`error`].
//!
//! - [`warm`]: warm requests, access records, jobs.
//! - [`control`]: status, configuration, emergency stop, schedules.
//! - [`ops`]: read-through cache, SSE events, metrics, health.

pub mod control;
pub mod error;
pub mod ops;
pub mod warm;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::warm::{Engine, shutdown_reserve};
use error::ApiError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Required bearer token on mutating requests, when set.
    pub token: Option<Arc<str>>,
    /// Fires when the server stops; ends long-lived responses (SSE).
    pub stopping: CancellationToken,
}

/// Every route of the API.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/warm/key", post(warm::warm_key))
        .route("/warm/pattern", post(warm::warm_pattern))
        .route("/warm/trigger-predictive", post(warm::trigger_predictive))
        .route("/warm/access", post(warm::record_access))
        .route("/warm/access/log", get(ops::access_log))
        .route("/warm/jobs/{job_id}", get(warm::job))
        .route("/warm/status", get(control::status))
        .route(
            "/warm/config",
            get(control::get_config).post(control::update_config),
        )
        .route("/warm/emergency-stop", post(control::emergency_stop))
        .route("/warm/resume", post(control::resume))
        .route(
            "/warm/schedules",
            get(control::list_schedules).post(control::add_schedule),
        )
        .route(
            "/warm/schedules/{name}",
            get(control::get_schedule).delete(control::remove_schedule),
        )
        .route("/warm/events", get(ops::events))
        .route("/cache/{*key}", get(ops::read_cache))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Mutating requests, and the access-log export (it lists the keys clients
/// read), need `Authorization: Bearer <WARMING_API_TOKEN>` when a token is set
/// (the scheme in any case, as RFC 9110 §11.1 has it; the token exactly).
async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(req).await;
    };
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.uri().path() != "/warm/access/log"
    {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid bearer token",
        )
        .into_response(),
        None => {
            let mut r = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint requires Authorization: Bearer <token>",
            )
            .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            r
        }
    }
}

/// The credentials of a `Bearer` authorization value: the scheme is
/// case-insensitive and separated from the token by one or more spaces.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

/// Compares without an early exit, so the time taken does not reveal how
/// much of the token matched (a dependency for 6 lines is not worth it).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A running service: engine plus HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    stopping: CancellationToken,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Starts the engine and serves the API on `listener`.
    pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<Server> {
        let token = settings.service.api_token.clone().map(Arc::from);
        let max_body = settings.service.max_body_bytes;
        let mut settings = settings;
        // Other instances of a cluster see the address actually bound.
        settings.service.listen = listener.local_addr()?.to_string();
        let engine = Engine::start(settings).await?;
        let stopping = CancellationToken::new();
        let state = AppState {
            engine: engine.clone(),
            token,
            stopping: stopping.clone(),
        };
        let app = router(state, max_body);
        let addr = listener.local_addr()?;
        let stop = stopping.clone();
        let http = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        tracing::info!(%addr, "warming listening");
        Ok(Server {
            addr,
            engine,
            stopping,
            http,
        })
    }

    /// Orderly stop, all within one deadline `grace` from now: no new
    /// requests or work; running requests and the workers' in-flight keys
    /// get until the deadline less [`shutdown_reserve`], at the same time;
    /// then unfinished work (still queued, or in flight past that point) is
    /// saved and events are flushed by the deadline.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        let drained = deadline - shutdown_reserve(grace);
        self.stopping.cancel();
        self.engine.begin_shutdown();
        let http = async {
            match tokio::time::timeout_at(drained, self.http).await {
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
                Err(_) => tracing::warn!("HTTP requests still running at the shutdown deadline"),
                _ => {}
            }
        };
        tokio::join!(http, self.engine.wait_workers(drained));
        self.engine.finish_shutdown(deadline).await;
    }

    /// `http://addr` for clients and tests.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
