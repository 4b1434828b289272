//! `format=html`: the UI's standalone flamegraph page with the data inlined, readable offline.

use async_trait::async_trait;
use kiln_plugin_api::{ExportError, RenderContext, RenderExporter, Rendered, Tree};
use serde_json::{json, Value};

/// Fills `standalone.html` with `flamegraph.js` and `data` (a render response).
pub fn standalone_html(data: &Value) -> Result<Vec<u8>, ExportError> {
    let page = crate::ui::text("standalone.html")
        .ok_or_else(|| ExportError("UI file standalone.html missing".into()))?;
    let script = crate::ui::text("flamegraph.js")
        .ok_or_else(|| ExportError("UI file flamegraph.js missing".into()))?;
    // `<` escaped so no frame name can close the script element holding the data.
    let data = serde_json::to_string(data)
        .expect("JSON values serialize")
        .replace('<', "\\u003c");
    Ok(page
        .replacen("/*KILN_DATA*/", &data, 1)
        .replacen("/*KILN_FLAMEGRAPH_JS*/", &script, 1)
        .into_bytes())
}

pub struct Html {
    pub max_nodes: usize,
}

#[async_trait]
impl RenderExporter for Html {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        let max_nodes = if ctx.max_nodes == 0 {
            self.max_nodes
        } else {
            ctx.max_nodes
        };
        let data = json!({
            "version": 1,
            "flamebearer": crate::flamebearer::flamebearer(tree, max_nodes),
            "metadata": {
                "format": "single",
                "spyName": ctx.spy_name,
                "sampleRate": if ctx.sample_rate > 0 { ctx.sample_rate } else { 100 },
                "units": ctx.profile_type.display_units(),
                "name": ctx.title,
            },
        });
        Ok(Rendered {
            content_type: "text/html; charset=utf-8".into(),
            extension: "html".into(),
            body: standalone_html(&data)?.into(),
        })
    }
}
