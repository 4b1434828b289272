//! # kiln-pprof
//!
//! The pprof decoder and encoder.
//!
//! Decoding accepts a raw or gzip'd `perftools.profiles.Profile`, or the `multipart/form-data`
//! body Pyroscope's Go and Node agents send (`profile`, optional `prev_profile` and
//! `sample_type_config`). Every sample type becomes its own profile, named as Pyroscope names
//! Go's types (`samples` → `cpu`, `alloc_space`, `goroutine` → `goroutines`, `contentions` →
//! `mutex_count`, …); string sample labels become series labels, so samples with different
//! labels land in different series.

mod config;
mod decode;
mod encode;
mod gunzip;
pub mod proto;
pub mod push;
mod view;

use async_trait::async_trait;
use kiln_plugin_api::{
    multipart, DecodeError, Decoder, ExportError, IngestMeta, Profile, RenderContext,
    RenderExporter, Rendered, Tree,
};

pub use config::{SampleTypeConfig, SampleTypeEntry};
pub use decode::{decode_pprof, profile_type, short_name};
pub use encode::encode_tree;

/// Default cap on a decompressed profile (guards against gzip bombs).
pub const DEFAULT_MAX_DECOMPRESSED: u64 = 64 << 20;

/// The pprof decoder, for raw and multipart bodies.
#[derive(Debug, Clone)]
pub struct PprofDecoder {
    pub max_decompressed_bytes: u64,
}

impl Default for PprofDecoder {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED,
        }
    }
}

impl Decoder for PprofDecoder {
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError> {
        let limit = self.max_decompressed_bytes;
        let boundary = meta.content_type.as_deref().and_then(multipart::boundary);
        let Some(boundary) = boundary else {
            let data = gunzip_if_needed(body, limit)?;
            return decode_pprof(&data, meta, None, None);
        };
        let boundary = boundary.map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let parts =
            multipart::parse(body, &boundary).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        let part = |name: &str| parts.iter().find(|p| p.name == name);
        let profile = part("profile")
            .ok_or_else(|| DecodeError::Malformed("multipart body has no 'profile' part".into()))?;
        let config = match part("sample_type_config") {
            Some(p) => Some(SampleTypeConfig::parse(p.data)?),
            None => None,
        };
        let prev = match part("prev_profile") {
            Some(p) if !p.data.is_empty() => Some(gunzip_if_needed(p.data, limit)?),
            _ => None,
        };
        if profile.data.is_empty() {
            return Ok(Vec::new());
        }
        let data = gunzip_if_needed(profile.data, limit)?;
        decode_pprof(&data, meta, config.as_ref(), prev.as_deref())
    }
}

pub use gunzip::gunzip_if_needed;

/// Renders a merged tree as a gzip'd pprof (`/render?format=pprof`).
#[derive(Debug, Default, Clone)]
pub struct PprofRenderer;

#[async_trait]
impl RenderExporter for PprofRenderer {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        Ok(Rendered {
            content_type: "application/octet-stream".into(),
            extension: "pb.gz".into(),
            body: encode_tree(tree, ctx).into(),
        })
    }
}
