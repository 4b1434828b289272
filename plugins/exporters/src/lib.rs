//! # kiln-exporters
//!
//! Render exporters built into Kiln (`/render?format=NAME`):
//! * `collapsed`: folded text, one `a;b;c value` line per stack;
//! * `speedscope`: speedscope's JSON file format, one sampled profile;
//! * `svg`: a static icicle flamegraph with tooltips;
//! * `png`: the same flamegraph rasterised.

mod speedscope;
mod svg;

use std::sync::Arc;

use async_trait::async_trait;
use kiln_plugin_api::{ExportError, RenderContext, RenderExporter, Rendered, Tree};

pub use speedscope::speedscope;
pub use svg::{flamegraph_svg, SvgOptions};

/// `format=collapsed`.
pub struct Collapsed;

#[async_trait]
impl RenderExporter for Collapsed {
    async fn render(&self, tree: &Tree, _ctx: &RenderContext) -> Result<Rendered, ExportError> {
        Ok(Rendered {
            content_type: "text/plain; charset=utf-8".into(),
            extension: "txt".into(),
            body: tree.to_folded().into(),
        })
    }
}

/// `format=speedscope`.
pub struct Speedscope;

#[async_trait]
impl RenderExporter for Speedscope {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        Ok(Rendered {
            content_type: "application/json".into(),
            extension: "speedscope.json".into(),
            body: serde_json::to_vec(&speedscope(tree, ctx))
                .expect("JSON values serialize")
                .into(),
        })
    }
}

/// `format=svg`.
pub struct Svg;

#[async_trait]
impl RenderExporter for Svg {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        Ok(Rendered {
            content_type: "image/svg+xml".into(),
            extension: "svg".into(),
            body: flamegraph_svg(tree, ctx, &SvgOptions::default()).into(),
        })
    }
}

/// `format=png`.
pub struct Png;

#[async_trait]
impl RenderExporter for Png {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        let svg = flamegraph_svg(tree, ctx, &SvgOptions::default());
        Ok(Rendered {
            content_type: "image/png".into(),
            extension: "png".into(),
            body: svg::rasterize(&svg)?.into(),
        })
    }
}

/// Every exporter of this crate, by format name.
pub fn builtin() -> Vec<(&'static str, Arc<dyn RenderExporter>)> {
    vec![
        ("collapsed", Arc::new(Collapsed)),
        ("speedscope", Arc::new(Speedscope)),
        ("svg", Arc::new(Svg)),
        ("png", Arc::new(Png)),
    ]
}
