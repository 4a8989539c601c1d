//! Handlers of status, configuration, emergency stop and schedules.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, OptionalJson};
use crate::config::TunablesUpdate;
use crate::protocol::{ConfigResponse, StatusResponse, StopRequest, StopResponse};
use crate::schedule::{ScheduleSpec, ScheduleView};

/// `GET /warm/status`
pub async fn status(State(s): State<AppState>) -> Result<Json<StatusResponse>, ApiError> {
    Ok(Json(s.engine.status().await?))
}

/// `GET /warm/config`
pub async fn get_config(State(s): State<AppState>) -> Json<ConfigResponse> {
    Json(s.engine.config_view())
}

/// `POST /warm/config`: all or nothing. Read as JSON first, so a value of
/// the wrong type is reported with its field, like a value out of range.
pub async fn update_config(
    State(s): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Json<ConfigResponse>, ApiError> {
    let update = TunablesUpdate::from_json(&body)?;
    let body = s
        .engine
        .update_config(update)
        .await
        .map_err(ApiError::validation)?;
    s.engine.apply_worker_count();
    Ok(Json(body))
}

/// `POST /warm/emergency-stop`
pub async fn emergency_stop(
    State(s): State<AppState>,
    OptionalJson(req): OptionalJson<StopRequest>,
) -> Json<StopResponse> {
    let changed = s.engine.emergency_stop(req.reason).await;
    Json(StopResponse {
        success: true,
        emergency_stop: true,
        changed,
    })
}

/// `POST /warm/resume`
pub async fn resume(State(s): State<AppState>) -> Json<StopResponse> {
    let changed = s.engine.resume().await;
    Json(StopResponse {
        success: true,
        emergency_stop: false,
        changed,
    })
}

/// `GET /warm/schedules`
pub async fn list_schedules(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"schedules": s.engine.scheduler().list()}))
}

/// `GET /warm/schedules/{name}`
pub async fn get_schedule(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<ScheduleView>, ApiError> {
    s.engine
        .scheduler()
        .get(&name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no schedule named {name:?}")))
}

/// `POST /warm/schedules`
pub async fn add_schedule(
    State(s): State<AppState>,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(s.engine.add_schedule(spec).await?),
    ))
}

/// `DELETE /warm/schedules/{name}`
pub async fn remove_schedule(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.engine.remove_schedule(&name).await?;
    Ok(Json(serde_json::json!({"success": true, "deleted": name})))
}
