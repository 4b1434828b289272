//! Grafana Pyroscope's Connect push API, `POST /push.v1.PusherService/Push`, as today's Rust and
//! Python agents and Grafana Alloy speak it: binary protobuf (`application/proto`) or JSON,
//! optionally gzip'd, with or without `Connect-Protocol-Version`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_plugin_api::{labels::SERVICE_NAME, IngestMeta, Labels};
use kiln_pprof::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
use prost::Message;
use serde::Deserialize;

use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::durable::{AcceptError, Unit, UnitError};
use crate::ingest::content_decode;
use crate::server::AppState;

/// The proto3 JSON form; field names are accepted in camelCase and as in the .proto.
#[derive(Deserialize)]
struct JsonPush {
    #[serde(default)]
    series: Vec<JsonSeries>,
}

#[derive(Deserialize)]
struct JsonSeries {
    #[serde(default)]
    labels: Vec<JsonLabel>,
    #[serde(default)]
    samples: Vec<JsonSample>,
}

#[derive(Deserialize)]
struct JsonLabel {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct JsonSample {
    #[serde(default, alias = "raw_profile")]
    #[serde(rename = "rawProfile")]
    raw_profile: String,
}

/// A Connect error: `{"code": …, "message": …}` with the matching HTTP status.
pub(crate) struct ConnectError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ConnectError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn unimplemented(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_IMPLEMENTED,
            code: "unimplemented",
            message: message.into(),
            retry_after: None,
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
            retry_after: None,
        }
    }
}

/// The Connect code of each status the ingest path answers with.
impl From<ApiError> for ConnectError {
    fn from(e: ApiError) -> Self {
        Self {
            code: match e.status {
                StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::INSUFFICIENT_STORAGE => "resource_exhausted",
                StatusCode::REQUEST_TIMEOUT => "deadline_exceeded",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                s if s.is_client_error() => "invalid_argument",
                _ => "internal",
            },
            status: e.status,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "code": self.code, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.into());
        }
        response
    }
}

fn parse(content_type: &str, body: &[u8]) -> Result<PushRequest, ConnectError> {
    if content_type.starts_with("application/json") {
        let req: JsonPush = serde_json::from_slice(body)
            .map_err(|e| ConnectError::invalid(format!("PushRequest JSON: {e}")))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let series = req
            .series
            .into_iter()
            .map(|s| {
                Ok(RawProfileSeries {
                    labels: s
                        .labels
                        .into_iter()
                        .map(|l| LabelPair {
                            name: l.name,
                            value: l.value,
                        })
                        .collect(),
                    samples: s
                        .samples
                        .into_iter()
                        .map(|x| {
                            b64.decode(x.raw_profile.as_bytes())
                                .map(|raw_profile| RawSample {
                                    raw_profile,
                                    id: String::new(),
                                })
                                .map_err(|e| {
                                    ConnectError::invalid(format!("rawProfile is not base64: {e}"))
                                })
                        })
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, ConnectError>>()?;
        Ok(PushRequest { series })
    } else {
        PushRequest::decode(body)
            .map_err(|e| ConnectError::invalid(format!("PushRequest protobuf: {e}")))
    }
}

/// Series labels without the reserved `__…__` ones, with `service_name` defaulted.
fn series_labels(pairs: &[LabelPair]) -> Labels {
    let mut labels = Labels::new();
    for l in pairs {
        if !l.name.starts_with("__") && !l.name.is_empty() {
            labels.insert(l.name.clone(), l.value.clone());
        }
    }
    if labels.service_name().is_none_or(str::is_empty) {
        labels.insert(SERVICE_NAME, "unknown_service");
    }
    labels
}

pub async fn push(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match push_inner(&state, &principal, &headers, body).await {
        Ok(json) => {
            if json {
                ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
            } else {
                (
                    [(header::CONTENT_TYPE, "application/proto")],
                    Vec::<u8>::new(),
                )
                    .into_response()
            }
        }
        Err(e) => {
            state.metrics.ingest_error(e.code);
            e.into_response()
        }
    }
}

async fn push_inner(
    state: &Arc<AppState>,
    principal: &Principal,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<bool, ConnectError> {
    let wire_bytes = body.len();
    state
        .limits
        .admit_ingest(&principal.tenant, wire_bytes)
        .map_err(ApiError::from)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/proto")
        .to_ascii_lowercase();
    let body = content_decode(headers, body, state.config.server.max_decompressed_bytes)?;
    let json = content_type.starts_with("application/json");
    let request = parse(&content_type, &body)?;
    let mut units = Vec::new();
    for series in request.series {
        let labels = series_labels(&series.labels);
        let app = labels.service_name().unwrap_or_default().to_string();
        for sample in series.samples {
            units.push(Unit {
                decoder: "pprof".into(),
                meta: IngestMeta {
                    format: Some("pprof".into()),
                    app: app.clone(),
                    labels: labels.clone(),
                    spy_name: labels.get("pyroscope_spy").unwrap_or("connect").to_string(),
                    ..IngestMeta::default()
                },
                body: sample.raw_profile.into(),
                route_by_profile: false,
            });
        }
    }
    let ingestion = state.ingestion.load_full();
    let stored = state
        .durable
        .accept(ingestion, &principal.tenant, units)
        .await
        .map_err(|e| {
            let decoding = matches!(e, AcceptError::Unit(UnitError::Decode { .. }));
            let mut e = ApiError::from(e);
            if decoding {
                e.message = format!("raw_profile: {}", e.message);
            }
            e
        })?
        .profiles;
    state.metrics.ingested(stored, wire_bytes);
    Ok(json)
}
