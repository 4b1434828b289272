//! Wire messages of the render kind (the sink kind reuses [`super::wire::Profiles`]).

use crate::tree::{Tree, TreeNode};
use crate::{RenderContext, RenderExporter, Rendered};

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireNode {
    #[prost(uint32, tag = "1")]
    pub parent: u32,
    #[prost(uint32, tag = "2")]
    pub name: u32,
    #[prost(int64, tag = "3")]
    pub self_value: i64,
    #[prost(int64, tag = "4")]
    pub total: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RenderRequest {
    #[prost(string, repeated, tag = "1")]
    pub names: Vec<String>,
    #[prost(message, repeated, tag = "2")]
    pub nodes: Vec<WireNode>,
    /// [`RenderContext`] as JSON.
    #[prost(string, tag = "3")]
    pub context_json: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WireRendered {
    #[prost(string, tag = "1")]
    pub content_type: String,
    #[prost(string, tag = "2")]
    pub extension: String,
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
}

impl RenderRequest {
    pub fn new(tree: &Tree, ctx: &RenderContext) -> Self {
        Self {
            names: tree.names.clone(),
            nodes: tree
                .nodes
                .iter()
                .map(|n| WireNode {
                    parent: n.parent,
                    name: n.name,
                    self_value: n.self_value,
                    total: n.total,
                })
                .collect(),
            context_json: serde_json::to_string(ctx).expect("contexts serialize"),
        }
    }

    /// The tree and context, checked: every index in range and parents before children.
    pub fn into_parts(self) -> Result<(Tree, RenderContext), String> {
        let ctx: RenderContext = serde_json::from_str(&self.context_json)
            .map_err(|e| format!("bad render context: {e}"))?;
        let (names, count) = (self.names.len() as u32, self.nodes.len());
        if count == 0 {
            return Err("render request without a root node".into());
        }
        let mut nodes = Vec::with_capacity(count);
        for (i, n) in self.nodes.into_iter().enumerate() {
            if n.name >= names || (i > 0 && n.parent as usize >= i) {
                return Err(format!("render request node {i} is out of order or range"));
            }
            nodes.push(TreeNode {
                parent: n.parent,
                name: n.name,
                self_value: n.self_value,
                total: n.total,
            });
        }
        Ok((
            Tree {
                names: self.names,
                nodes,
                ..Tree::default()
            },
            ctx,
        ))
    }
}

impl From<WireRendered> for Rendered {
    fn from(r: WireRendered) -> Self {
        Self {
            content_type: r.content_type,
            extension: r.extension,
            body: r.body.into(),
        }
    }
}

/// Plugin side of a render call.
pub fn serve_render<R: RenderExporter>(renderer: &R, input: &[u8]) -> Result<Vec<u8>, String> {
    let req: RenderRequest =
        prost::Message::decode(input).map_err(|e| format!("bad RenderRequest: {e}"))?;
    let (tree, ctx) = req.into_parts()?;
    let r = super::block_on(renderer.render(&tree, &ctx)).map_err(|e| e.to_string())?;
    Ok(prost::Message::encode_to_vec(&WireRendered {
        content_type: r.content_type,
        extension: r.extension,
        body: r.body.to_vec(),
    }))
}
