//! Speedscope's file format (`https://www.speedscope.app/file-format-schema.json`).

use kiln_plugin_api::{RenderContext, Tree};
use serde_json::{json, Value};

/// One sampled profile: a sample per tree node with a self value, frames root first.
pub fn speedscope(tree: &Tree, ctx: &RenderContext) -> Value {
    // Tree names index 0 is the root `total`; frames are the rest, shifted by one.
    let frames: Vec<Value> = tree
        .names
        .iter()
        .skip(1)
        .map(|n| json!({ "name": n }))
        .collect();
    let mut samples = Vec::new();
    let mut weights = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate().skip(1) {
        if node.self_value == 0 {
            continue;
        }
        let mut stack = Vec::new();
        let mut n = i;
        while n != 0 {
            stack.push(tree.nodes[n].name - 1);
            n = tree.nodes[n].parent as usize;
        }
        stack.reverse();
        samples.push(stack);
        weights.push(node.self_value);
    }
    let unit = match ctx.profile_type.sample_unit.as_str() {
        "nanoseconds" => "nanoseconds",
        "bytes" => "bytes",
        _ => "none",
    };
    json!({
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "name": ctx.title,
        "exporter": "kiln",
        "activeProfileIndex": 0,
        "shared": { "frames": frames },
        "profiles": [{
            "type": "sampled",
            "name": ctx.title,
            "unit": unit,
            "startValue": 0,
            "endValue": tree.total(),
            "samples": samples,
            "weights": weights,
        }],
    })
}
