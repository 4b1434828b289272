//! `POST /v1development/profiles`: OpenTelemetry OTLP profiles over HTTP (protobuf or JSON).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use kiln_otlp::OtlpDecoder;
use kiln_plugin_api::{DecodeError, Decoder, IngestMeta};

use crate::api_error::ApiError;
use crate::ingest::content_decode;
use crate::server::AppState;

pub async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match export_inner(&state, &headers, body).await {
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
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(), ApiError> {
    let wire_bytes = body.len();
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
    let content_type = content_type.to_string();
    let profiles = tokio::task::spawn_blocking(move || {
        let meta = IngestMeta {
            format: Some("otlp".into()),
            content_type: Some(content_type),
            spy_name: "otlp".into(),
            ..IngestMeta::default()
        };
        OtlpDecoder.decode(&body, &meta).map_err(|e| match e {
            DecodeError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            other => ApiError::bad_request("malformed", format!("otlp: {other}")),
        })
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    let count = profiles.len();
    // Profiles of different services may take different pipelines.
    let ingestion = state.ingestion.load_full();
    let pipelines = &ingestion.pipelines;
    let mut by_pipeline: Vec<(
        Arc<crate::pipeline::Pipeline>,
        Vec<kiln_plugin_api::Profile>,
    )> = Vec::new();
    for p in profiles {
        let pipeline = pipelines.route(p.labels.service_name().unwrap_or(""), &p.labels);
        match by_pipeline
            .iter_mut()
            .find(|(q, _)| Arc::ptr_eq(q, &pipeline))
        {
            Some((_, batch)) => batch.push(p),
            None => by_pipeline.push((pipeline, vec![p])),
        }
    }
    for (pipeline, batch) in by_pipeline {
        let task_pipeline = pipeline.clone();
        let batch = tokio::task::spawn_blocking(move || task_pipeline.transform(batch))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::internal(format!("transform failed: {e}")))?;
        pipeline.store(state.storage.as_ref(), batch).await?;
    }
    state.metrics.ingested(count, wire_bytes);
    Ok(())
}
