//! Test fixture: the `tree-text` native render plugin: the merged tree as indented text, one
//! node per line with its total.

use std::fmt::Write;

use kiln_plugin_api::abi::FromConfig;
use kiln_plugin_api::{ExportError, RenderContext, RenderExporter, Rendered, Tree};

pub struct TreeText;

impl FromConfig for TreeText {
    fn from_config(json: &str) -> Result<Self, String> {
        match json.trim() {
            "" | "{}" => Ok(Self),
            other => Err(format!("tree-text takes no options, got {other}")),
        }
    }
}

#[async_trait::async_trait]
impl RenderExporter for TreeText {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError> {
        let children = tree.children();
        let mut out = format!("{}\n", ctx.title);
        let mut stack = vec![(0u32, 0usize)];
        while let Some((node, depth)) = stack.pop() {
            let _ = writeln!(
                out,
                "{}{} {}",
                "  ".repeat(depth),
                tree.name_of(node),
                tree.nodes[node as usize].total
            );
            stack.extend(
                children[node as usize]
                    .iter()
                    .rev()
                    .map(|&c| (c, depth + 1)),
            );
        }
        Ok(Rendered {
            content_type: "text/plain; charset=utf-8".into(),
            extension: "txt".into(),
            body: out.into(),
        })
    }
}

kiln_plugin_api::export_plugin!(render, "tree-text", "0.1.0", TreeText);
