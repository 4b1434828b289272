//! `POST /ingest`: Pyroscope's push endpoint, every format its agents send.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use kiln_collapsed::{CollapsedDecoder, TextFormat};
use kiln_plugin_api::{
    labels::{PROFILE_TYPE, SERVICE_NAME},
    Aggregation, DecodeError, Decoder, IngestMeta, PyroscopeName,
};
use kiln_pprof::PprofDecoder;

use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::durable::Unit;
use crate::server::AppState;
use crate::time;

/// Decoders by format name.
pub struct Decoders {
    by_format: HashMap<String, Arc<dyn Decoder>>,
}

impl Decoders {
    pub fn builtin(max_decompressed_bytes: u64) -> Self {
        let mut by_format: HashMap<String, Arc<dyn Decoder>> = HashMap::new();
        by_format.insert(
            "pprof".into(),
            Arc::new(PprofDecoder {
                max_decompressed_bytes,
            }),
        );
        by_format.insert(
            "jfr".into(),
            Arc::new(kiln_jfr::JfrDecoder {
                max_decompressed_bytes,
            }),
        );
        by_format.insert("otlp".into(), Arc::new(kiln_otlp::OtlpDecoder));
        by_format.insert("folded".into(), Arc::new(CollapsedDecoder::folded()));
        by_format.insert("lines".into(), Arc::new(CollapsedDecoder::lines()));
        for (name, format) in [
            ("trie", TextFormat::Trie),
            ("tree", TextFormat::Tree),
            ("speedscope", TextFormat::Speedscope),
        ] {
            by_format.insert(name.into(), Arc::new(CollapsedDecoder::new(format)));
        }
        Self { by_format }
    }

    pub fn get(&self, format: &str) -> Option<Arc<dyn Decoder>> {
        self.by_format.get(format).cloned()
    }

    /// Adds a decoder (a plugin's) under its format name.
    pub fn insert(&mut self, format: &str, decoder: Arc<dyn Decoder>) {
        self.by_format.insert(format.to_string(), decoder);
    }

    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_format.keys().map(String::as_str).collect();
        v.sort();
        v
    }
}

/// Picks the decoder the way Pyroscope does (reference §2.3), refusing unknown formats.
fn choose_format(
    format: Option<&str>,
    content_type: Option<&str>,
    plugin_format: impl Fn(&str) -> bool,
) -> Result<String, ApiError> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let format = format.map(str::to_ascii_lowercase);
    Ok(match format.as_deref() {
        Some("trie") => "trie".into(),
        Some("tree") => "tree".into(),
        _ if ct.starts_with("binary/octet-stream+trie") => "trie".into(),
        _ if ct.starts_with("binary/octet-stream+tree") => "tree".into(),
        Some("lines") => "lines".into(),
        Some("jfr") => "jfr".into(),
        Some("pprof") => "pprof".into(),
        Some("speedscope") => "speedscope".into(),
        _ if ct.starts_with("multipart/form-data") => "pprof".into(),
        None | Some("" | "folded" | "groups" | "collapsed") => "folded".into(),
        Some(other) if plugin_format(other) => other.into(),
        Some(other) => {
            return Err(ApiError::bad_request(
                "unknown_format",
                format!(
                "unknown format {other:?}; use pprof, jfr, folded, lines, trie, tree or speedscope"
            ),
            ))
        }
    })
}

/// Turns the query string into what decoders are told about the request.
fn ingest_meta(
    params: &HashMap<String, String>,
    content_type: Option<&str>,
) -> Result<IngestMeta, ApiError> {
    let non_empty = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let name = non_empty("name").ok_or_else(|| {
        ApiError::bad_request(
            "bad_name",
            "the `name` parameter is required, e.g. name=myapp.cpu{env=prod}",
        )
    })?;
    let name = PyroscopeName::parse(name)
        .map_err(|e| ApiError::bad_request("bad_name", format!("invalid `name`: {e}")))?;
    let (app, suffix) = name.split_profile_type();
    let now = time::now_ns();
    let parse_time = |p: &'static str| -> Result<i64, ApiError> {
        match non_empty(p) {
            Some(v) => {
                time::parse(p, v, now).map_err(|e| ApiError::bad_request("bad_time", e.to_string()))
            }
            None => Ok(now),
        }
    };
    let start_ns = parse_time("from")?;
    let end_ns = parse_time("until")?;
    if start_ns > end_ns {
        return Err(ApiError::bad_request(
            "bad_time",
            format!("`from` ({start_ns} ns) is after `until` ({end_ns} ns)"),
        ));
    }
    let sample_rate = non_empty("sampleRate").map(|v| {
        v.parse::<u32>().unwrap_or_else(|_| {
            tracing::debug!(value = v, "sampleRate is not an integer, using 100");
            100
        })
    });
    let aggregation = match non_empty("aggregationType") {
        Some(v) => Some(Aggregation::parse(v).ok_or_else(|| {
            ApiError::bad_request(
                "bad_param",
                format!("aggregationType={v:?}: use sum or average"),
            )
        })?),
        None => None,
    };
    let mut labels = name.labels.clone();
    // Reserved labels are the server's to set.
    labels.retain(|k, _| !k.starts_with("__"));
    labels.remove(PROFILE_TYPE);
    labels.insert(SERVICE_NAME, app);
    Ok(IngestMeta {
        format: non_empty("format").map(String::from),
        content_type: content_type.map(String::from),
        app: app.to_string(),
        type_suffix: suffix.map(String::from),
        labels,
        start_ns,
        end_ns,
        sample_rate,
        spy_name: non_empty("spyName").unwrap_or("unknown").to_string(),
        units: non_empty("units").map(String::from),
        aggregation,
    })
}

/// Inflates a `Content-Encoding: gzip` body, refusing more than `limit` bytes.
pub(crate) fn content_decode(
    headers: &HeaderMap,
    body: Bytes,
    limit: u64,
) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(body),
        "gzip" | "x-gzip" if body.starts_with(&[0x1f, 0x8b]) => {
            match kiln_pprof::gunzip_if_needed(&body, limit) {
                Ok(out) => Ok(out.into_owned().into()),
                Err(DecodeError::TooLarge { .. }) => Err(ApiError::too_large(format!(
                    "body exceeds {limit} bytes once decompressed"
                ))),
                Err(e) => Err(ApiError::bad_request(
                    "bad_encoding",
                    format!("Content-Encoding gzip: {e}"),
                )),
            }
        }
        "gzip" | "x-gzip" => {
            // Not gzip at all: the streaming reader says why.
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::bad_request("bad_encoding", format!("Content-Encoding gzip: {e}"))
                })?;
            if out.len() as u64 > limit {
                return Err(ApiError::too_large(format!(
                    "body exceeds {limit} bytes once decompressed"
                )));
            }
            Ok(out.into())
        }
        other => Err(ApiError::bad_request(
            "bad_encoding",
            format!("Content-Encoding {other:?} is not supported; use gzip or none"),
        )),
    }
}

pub async fn ingest(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let result = ingest_inner(&state, &principal, &params, &headers, body).await;
    if let Err(e) = &result {
        state.metrics.ingest_error(e.cause);
        tracing::debug!(status = %e.status, message = %e.message, "ingest refused");
    }
    result
}

async fn ingest_inner(
    state: &Arc<AppState>,
    principal: &Principal,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let wire_bytes = body.len();
    state.limits.admit_ingest(&principal.tenant, wire_bytes)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let meta = ingest_meta(params, content_type)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "empty_body",
            "the request body is empty",
        ));
    }
    let body = content_decode(headers, body, state.config.server.max_decompressed_bytes)?;
    let ingestion = state.ingestion.load_full();
    let format = choose_format(meta.format.as_deref(), content_type, |f| {
        ingestion.decoders.get(f).is_some()
    })?;
    ingestion.decoders.get(&format).ok_or_else(|| {
        ApiError::bad_request(
            "unsupported_format",
            format!(
                "format {format:?} has no decoder in this daemon (available: {})",
                ingestion.decoders.names().join(", ")
            ),
        )
    })?;
    let pipeline = ingestion.pipelines.route(&meta.app, &meta.labels);
    if !pipeline.accepts(&format) {
        return Err(ApiError::bad_request(
            "unsupported_format",
            format!(
                "pipeline {:?} does not accept format {format:?}",
                pipeline.name
            ),
        ));
    }
    let unit = Unit {
        decoder: format,
        meta,
        body,
        route_by_profile: false,
    };
    let accepted = state
        .durable
        .accept(ingestion, &principal.tenant, vec![unit])
        .await?;
    state.metrics.ingested(accepted.profiles, wire_bytes);
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn format_follows_pyroscope_dispatch_order() {
        assert_eq!(
            choose_format(None, Some("multipart/form-data; boundary=x"), |_| false).unwrap(),
            "pprof"
        );
        assert_eq!(
            choose_format(Some("jfr"), Some("multipart/form-data; boundary=x"), |_| {
                false
            })
            .unwrap(),
            "jfr"
        );
        assert_eq!(choose_format(None, None, |_| false).unwrap(), "folded");
        assert_eq!(
            choose_format(Some("groups"), None, |_| false).unwrap(),
            "folded"
        );
        assert_eq!(
            choose_format(None, Some("binary/octet-stream+trie"), |_| false).unwrap(),
            "trie"
        );
        assert!(choose_format(Some("bogus"), None, |_| false).is_err());
        assert_eq!(
            choose_format(Some("perf-script"), None, |f| f == "perf-script").unwrap(),
            "perf-script"
        );
    }

    #[test]
    fn meta_from_query_string() {
        let m = ingest_meta(
            &params(&[
                ("name", "my.app.cpu{env=prod,__name__=x}"),
                ("from", "1700000000"),
                ("until", "1700000010"),
                ("spyName", "gospy"),
                ("sampleRate", ""),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(m.app, "my.app");
        assert_eq!(m.type_suffix.as_deref(), Some("cpu"));
        assert_eq!(m.labels.get("service_name"), Some("my.app"));
        assert_eq!(m.labels.get("__name__"), None);
        assert_eq!(m.start_ns, 1_700_000_000_000_000_000);
        assert_eq!(m.sample_rate, None);
        assert!(ingest_meta(&params(&[]), None).is_err());
        assert!(ingest_meta(&params(&[("name", "a{b}")]), None).is_err());
        assert!(ingest_meta(
            &params(&[
                ("name", "a"),
                ("from", "1700000010"),
                ("until", "1700000000")
            ]),
            None
        )
        .is_err());
    }
}
