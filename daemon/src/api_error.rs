//! Errors the HTTP API returns: a status and a message saying what was wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Short machine-readable cause, used as the metrics label.
    pub cause: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(cause: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            cause,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            cause: "too_large",
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            cause: "internal",
            message: message.into(),
            retry_after: None,
        }
    }
}

impl From<crate::durable::AcceptError> for ApiError {
    fn from(e: crate::durable::AcceptError) -> Self {
        use crate::durable::{AcceptError, UnitError};
        use kiln_plugin_api::DecodeError;
        match e {
            AcceptError::Unit(UnitError::Decode { decoder, source }) => match source {
                DecodeError::TooLarge { .. } => Self::too_large(source.to_string()),
                DecodeError::Unsupported(m) => Self::bad_request("unsupported", m),
                DecodeError::Malformed(m) => {
                    Self::bad_request("malformed", format!("{decoder}: {m}"))
                }
            },
            AcceptError::Unit(UnitError::UnknownDecoder(d)) => Self::bad_request(
                "unsupported_format",
                format!("format {d:?} has no decoder in this daemon"),
            ),
            AcceptError::Unit(e @ UnitError::Transform(_)) => Self::internal(e.to_string()),
            AcceptError::Behind { why, retry_after } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                cause: "backpressure",
                message: format!("{why}; retry later"),
                retry_after: Some(retry_after.as_secs().max(1)),
            },
            AcceptError::DiskFull(e) => Self {
                status: StatusCode::INSUFFICIENT_STORAGE,
                cause: "disk_full",
                message: e.to_string(),
                retry_after: None,
            },
            AcceptError::Storage(e) => e.into(),
            AcceptError::Limit(e) => e.into(),
            e @ (AcceptError::Log(_) | AcceptError::Task(_)) => Self::internal(e.to_string()),
        }
    }
}

impl From<kiln_plugin_api::StorageError> for ApiError {
    fn from(e: kiln_plugin_api::StorageError) -> Self {
        match e {
            kiln_plugin_api::StorageError::Invalid(m) => Self::bad_request("invalid", m),
            e if e.is_unavailable() => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                cause: "storage_unavailable",
                message: e.to_string(),
                retry_after: Some(5),
            },
            other => Self::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.cause, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}
