//! Errors at the HTTP edge: every failure becomes `{"error": {"code",
//! "message"}}` with the right status, in one place ([`ApiError`]'s
//! `IntoResponse`). Also the JSON body extractors, which read JSON whatever
//! the `Content-Type` (the spec's own curl examples send none) and turn
//! syntax, shape and size problems into such errors, and the path extractor,
//! which does the same for path parameters.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::config::{FieldError, UpdateError};
use crate::protocol::{ErrorBody, ErrorDetail};
use crate::readthrough::ReadError;
use crate::schedule::ScheduleError;
use crate::warm::EngineError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn validation(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_config",
            message,
            fields,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                fields: self.fields,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid {
                code,
                message,
                fields,
            } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code,
                message,
                fields,
            },
            EngineError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                e.to_string(),
            ),
            EngineError::Cache(c) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cache_unavailable",
                c.to_string(),
            ),
            EngineError::Internal(m) => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m),
            EngineError::Coordination(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "coordination_unavailable",
                m,
            ),
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let status = match &e {
            ScheduleError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ScheduleError::Exists(_) | ScheduleError::Builtin(_) => StatusCode::CONFLICT,
            ScheduleError::NotFound(_) => StatusCode::NOT_FOUND,
            ScheduleError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = match &e {
            ScheduleError::Invalid { .. } => "invalid_schedule",
            ScheduleError::Exists(_) => "schedule_exists",
            ScheduleError::Builtin(_) => "builtin_schedule",
            ScheduleError::NotFound(_) => "not_found",
            ScheduleError::Storage(_) => "storage_error",
        };
        let mut err = Self::new(status, code, e.to_string());
        if let ScheduleError::Invalid { field, message } = e {
            err.fields.push(FieldError { field, message });
        }
        err
    }
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::Field(field) => Self::validation(vec![field]),
            UpdateError::Request(m) => Self::new(StatusCode::BAD_REQUEST, "invalid_request", m),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        use crate::origin::OriginError;
        match &e {
            ReadError::Origin(OriginError::NotFound) => {
                Self::not_found("the origin has no such key")
            }
            ReadError::Origin(OriginError::Timeout) => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "origin_timeout", e.to_string())
            }
            ReadError::Origin(OriginError::InvalidKey(_)) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_key", e.to_string())
            }
            ReadError::Origin(_) => {
                Self::new(StatusCode::BAD_GATEWAY, "origin_error", e.to_string())
            }
            ReadError::Cache(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cache_unavailable",
                e.to_string(),
            ),
        }
    }
}

/// Reads a request body. Every body of the API is a JSON object; serde
/// would also fill a struct from an array (`["maintenance"]` as
/// `{"reason": "maintenance"}`), so any other JSON value that happens to
/// decode is refused as `invalid_request`.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("body is not valid JSON: {e}"),
            ),
            Category::Data => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
            }
        }
    })?;
    // It decoded, so it is valid JSON: its first non-blank byte tells its type.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(value),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the request body must be a JSON object",
        )),
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                "request body exceeds the size limit",
            )
        } else {
            ApiError::new(status, "invalid_body", rejection.body_text())
        }
    })
}

/// A required JSON body.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                "request body is empty; a JSON object is required",
            ));
        }
        decode(&bytes).map(ApiJson)
    }
}

/// Path parameters. A value that cannot be extracted (`%FF`, not UTF-8
/// once percent-decoded) is a 400 `invalid_path` JSON error instead of
/// axum's plain-text reply.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                let status = rejection.status();
                // Server errors are a route and handler that do not agree.
                let code = if status.is_server_error() {
                    "internal"
                } else {
                    "invalid_path"
                };
                Err(ApiError::new(status, code, rejection.body_text()))
            }
        }
    }
}

/// A JSON body that may be absent (an empty body means the default).
pub struct OptionalJson<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        decode(&bytes).map(OptionalJson)
    }
}
