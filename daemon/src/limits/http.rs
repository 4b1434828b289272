//! The per-daemon limits as middleware: query slots and timeout, body read timeout.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{LimitError, Limits};
use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::server::AppState;

fn tenant_of(req: &Request) -> String {
    req.extensions()
        .get::<Principal>()
        .map(|p| p.tenant.to_string())
        .unwrap_or_default()
}

/// In front of the query routes: a free slot of `limits.max_concurrent_queries` (429 +
/// `Retry-After` when none) and an answer within `limits.query_timeout` (503).
pub async fn queries(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let tenant = tenant_of(&req);
    let config = limits.config();
    let Ok(_slot) = limits.queries.clone().try_acquire_owned() else {
        let e = LimitError {
            retry_after: Some(1),
            ..LimitError::new(
                "limits.max_concurrent_queries",
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{} queries are running, limits.max_concurrent_queries; retry shortly",
                    config.max_concurrent_queries
                ),
            )
        };
        return ApiError::from(limits.refused(e, &tenant)).into_response();
    };
    // Dropping the handler stops the query at its next await; work already handed to a
    // blocking thread finishes there, but holds no slot once answered.
    match tokio::time::timeout(config.query_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let e = LimitError {
                retry_after: Some(1),
                ..LimitError::new(
                    "limits.query_timeout",
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the query took longer than limits.query_timeout = {}; narrow the time range or the selector",
                        humantime::format_duration(config.query_timeout)
                    ),
                )
            };
            ApiError::from(limits.refused(e, &tenant)).into_response()
        }
    }
}

/// Reads a request's body within `limits.body_read_timeout` (408 and the connection closed
/// past it) and `server.max_body_bytes` (413), so a client trickling a body ties up no
/// handler.
pub async fn body(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let tenant = tenant_of(&req);
    let timeout = state.limits.config().body_read_timeout;
    let max = state.config.server.max_body_bytes as usize;
    let connect = req.uri().path().starts_with("/push.v1.");
    let (parts, body) = req.into_parts();
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, max)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let e = if too_large {
                ApiError::too_large(format!("the body exceeds server.max_body_bytes = {max}"))
            } else {
                ApiError::bad_request("bad_body", format!("reading the body: {e}"))
            };
            return answer(connect, e);
        }
        Err(_) => {
            let e = LimitError::new(
                "limits.body_read_timeout",
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within limits.body_read_timeout = {}",
                    humantime::format_duration(timeout)
                ),
            );
            let mut response = answer(connect, state.limits.refused(e, &tenant).into());
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The HTTP API's JSON error, or on the Connect API a Connect error.
fn answer(connect: bool, e: ApiError) -> Response {
    if !connect {
        return e.into_response();
    }
    let code = match e.status {
        StatusCode::REQUEST_TIMEOUT => "deadline_exceeded",
        StatusCode::PAYLOAD_TOO_LARGE => "resource_exhausted",
        _ => "invalid_argument",
    };
    let body = serde_json::json!({ "code": code, "message": e.message });
    (e.status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;
    use crate::limits::LimitsConfig;

    #[tokio::test]
    async fn past_max_concurrent_queries_a_query_gets_429_until_a_slot_frees() {
        let limits = Arc::new(Limits::new(
            &LimitsConfig {
                max_concurrent_queries: 1,
                ..LimitsConfig::default()
            },
            crate::metrics::Metrics::default(),
        ));
        let release = Arc::new(tokio::sync::Notify::new());
        let held = release.clone();
        let app = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    held.notified().await;
                    "done"
                }),
            )
            .route("/fast", get(|| async { "fast" }))
            .route_layer(axum::middleware::from_fn_with_state(
                limits.clone(),
                queries,
            ));
        let get = |path: &str| axum::http::Request::get(path).body(Body::empty()).unwrap();
        let first = tokio::spawn(app.clone().oneshot(get("/slow")));
        while limits.queries.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = app.clone().oneshot(get("/fast")).await.unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(refused.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("limits.max_concurrent_queries"));
        release.notify_one();
        assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
        let served = app.oneshot(get("/fast")).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
    }
}
