//! The error shape every Mender service answers with (`{"error", "request_id"}`), the
//! request id it echoes, and the mapping of model errors to HTTP statuses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::OpError;

tokio::task_local! {
    /// The id of the request being handled, echoed in JSON error bodies and in
    /// `X-MEN-RequestID`.
    pub(crate) static REQUEST_ID: String;
}

/// The current request's id (empty outside a request).
pub(crate) fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An API error answered as `{"error": …, "request_id": …}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match &e {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            OpError::DeviceExists(_) => StatusCode::CONFLICT,
            OpError::TooManyDeployments(code, _) => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST)
            }
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

/// Builds the JSON error body real Mender services answer with.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": message, "request_id": request_id() })),
    )
        .into_response()
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;
