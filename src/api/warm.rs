//! Handlers of the warm requests, access records and job progress.

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiPath, OptionalJson};
use crate::protocol::{
    AccessRequest, AccessResponse, JobView, TriggerPredictiveRequest, WarmKeyRequest,
    WarmPatternRequest, WarmPatternResponse, WarmResponse,
};

/// `POST /warm/key`
pub async fn warm_key(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<WarmKeyRequest>,
) -> Result<Json<WarmResponse>, ApiError> {
    Ok(Json(s.engine.warm_keys(req).await?))
}

/// `POST /warm/pattern`
pub async fn warm_pattern(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<WarmPatternRequest>,
) -> Result<Json<WarmPatternResponse>, ApiError> {
    Ok(Json(s.engine.warm_pattern(req).await?))
}

/// `POST /warm/trigger-predictive` (body optional)
pub async fn trigger_predictive(
    State(s): State<AppState>,
    OptionalJson(req): OptionalJson<TriggerPredictiveRequest>,
) -> Result<Json<WarmResponse>, ApiError> {
    Ok(Json(s.engine.trigger_predictive(req, "predictive").await?))
}

/// `POST /warm/access`
pub async fn record_access(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<AccessRequest>,
) -> Result<Json<AccessResponse>, ApiError> {
    Ok(Json(AccessResponse {
        recorded: s.engine.record_access(req)?,
    }))
}

/// `GET /warm/jobs/{job_id}`
pub async fn job(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<JobView>, ApiError> {
    s.engine.job(&id).await?.map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job {id:?} (finished jobs are kept for a while, then dropped)"
        ))
    })
}
