//! Errors the HTTP API returns: a status and a message saying what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short machine-readable cause, used as the metrics label.
    pub cause: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            cause,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            cause: "too_large",
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            cause: "internal",
            message: message.into(),
        }
    }
}

impl From<kiln_plugin_api::StorageError> for ApiError {
    fn from(e: kiln_plugin_api::StorageError) -> Self {
        match e {
            kiln_plugin_api::StorageError::Invalid(m) => Self::bad_request("invalid", m),
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.cause, "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}
