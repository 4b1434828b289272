//! `POST /v1development/profiles`: OpenTelemetry OTLP profiles over HTTP (protobuf or JSON).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use kiln_plugin_api::IngestMeta;

use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::durable::Unit;
use crate::ingest::content_decode;
use crate::server::AppState;

pub async fn export(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match export_inner(&state, &principal, &headers, body).await {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        Err(e) => {
            state.metrics.ingest_error(e.cause);
            e.into_response()
        }
    }
}

async fn export_inner(
    state: &Arc<AppState>,
    principal: &Principal,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(), ApiError> {
    let wire_bytes = body.len();
    state.limits.admit_ingest(&principal.tenant, wire_bytes)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty",
        ));
    }
    let body = content_decode(headers, body, state.config.server.max_decompressed_bytes)?;
    let unit = Unit {
        decoder: "otlp".into(),
        meta: IngestMeta {
            format: Some("otlp".into()),
            content_type: Some(content_type.to_string()),
            spy_name: "otlp".into(),
            ..IngestMeta::default()
        },
        body,
        route_by_profile: true,
    };
    let ingestion = state.ingestion.load_full();
    let count = state
        .durable
        .accept(ingestion, &principal.tenant, vec![unit])
        .await?
        .profiles;
    state.metrics.ingested(count, wire_bytes);
    Ok(())
}
