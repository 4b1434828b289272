//! `dot`: a Kiln render plugin. `/render?query=…&format=dot` returns the merged profile as a
//! Graphviz call graph — one node per function (self and total value), one edge per caller →
//! callee pair weighted by the value flowing through it — ready for `dot -Tsvg`.
//!
//! Options (`[plugins.dot]`): `node_fraction` (default 0.005): functions whose total is below
//! this share of the whole profile are left out, as `go tool pprof` does.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt::Write;

use serde::Deserialize;

wit_bindgen::generate!({ path: "../../wit", world: "render" });

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Options {
    node_fraction: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            node_fraction: 0.005,
        }
    }
}

thread_local! {
    static NODE_FRACTION: Cell<f64> = const { Cell::new(0.005) };
}

#[derive(Default)]
struct FunctionTotals {
    self_value: i64,
    total: i64,
}

/// Escapes a string for a double-quoted DOT identifier.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Sums per function and per caller/callee pair. A function that recurses is counted once per
/// stack for its total, so totals never exceed the profile's.
fn aggregate(nodes: &[TreeNode]) -> (HashMap<&str, FunctionTotals>, HashMap<(&str, &str), i64>) {
    let mut functions: HashMap<&str, FunctionTotals> = HashMap::new();
    let mut edges: HashMap<(&str, &str), i64> = HashMap::new();
    for (i, n) in nodes.iter().enumerate().skip(1) {
        let f = functions.entry(n.name.as_str()).or_default();
        f.self_value += n.self_value;
        // Only the outermost occurrence on the path counts towards the total.
        let mut ancestor = n.parent as usize;
        let mut recursive = false;
        while ancestor != 0 {
            if nodes[ancestor].name == n.name {
                recursive = true;
                break;
            }
            ancestor = nodes[ancestor].parent as usize;
        }
        if !recursive {
            f.total += n.total;
        }
        if n.parent != 0 && n.parent as usize != i {
            *edges
                .entry((nodes[n.parent as usize].name.as_str(), n.name.as_str()))
                .or_default() += n.total;
        }
    }
    (functions, edges)
}

fn to_dot(nodes: &[TreeNode], ctx: &RenderContext, fraction: f64) -> String {
    let grand_total = nodes.first().map_or(0, |n| n.total);
    let cutoff = (grand_total as f64 * fraction) as i64;
    let (functions, edges) = aggregate(nodes);
    let mut kept: Vec<(&str, &FunctionTotals)> = functions
        .iter()
        .filter(|(_, f)| f.total >= cutoff.max(1))
        .map(|(name, f)| (*name, f))
        .collect();
    kept.sort_by(|a, b| b.1.total.cmp(&a.1.total).then(a.0.cmp(b.0)));
    let ids: HashMap<&str, usize> = kept.iter().enumerate().map(|(i, (n, _))| (*n, i)).collect();
    let share = |v: i64| {
        if grand_total == 0 {
            0.0
        } else {
            100.0 * v as f64 / grand_total as f64
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quoted(&ctx.title));
    let _ = writeln!(
        out,
        "  label={}; labelloc=t; node [shape=box, style=filled, fontname=\"Helvetica\"];",
        quoted(&format!(
            "{} — {} {} total",
            ctx.title, grand_total, ctx.profile_type.sample_unit
        ))
    );
    for (i, (name, f)) in kept.iter().enumerate() {
        // Darker red for more self value, as pprof's graph view does.
        let heat = (share(f.self_value) / 100.0).clamp(0.0, 1.0);
        let green_blue = (235.0 - 180.0 * heat) as u8;
        let _ = writeln!(
            out,
            "  n{i} [label={}, fillcolor=\"#ff{green_blue:02x}{green_blue:02x}\"];",
            quoted(&format!(
                "{name}\nself {} ({:.1}%)\ntotal {} ({:.1}%)",
                f.self_value,
                share(f.self_value),
                f.total,
                share(f.total)
            ))
        );
    }
    let mut kept_edges: Vec<(&(&str, &str), &i64)> = edges
        .iter()
        .filter(|((from, to), v)| **v >= cutoff.max(1) && ids.contains_key(from) && ids.contains_key(to))
        .collect();
    kept_edges.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for ((from, to), value) in kept_edges {
        let width = 1.0 + 4.0 * share(*value) / 100.0;
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"{value}\", penwidth={width:.2}];",
            ids[from], ids[to]
        );
    }
    out.push_str("}\n");
    out
}

struct Dot;

impl Guest for Dot {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "dot".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn init(options: String) -> Result<(), String> {
        let parsed: Options = serde_json::from_str(&options).map_err(|e| e.to_string())?;
        if !(0.0..1.0).contains(&parsed.node_fraction) {
            return Err("`node_fraction` must be in [0, 1)".into());
        }
        NODE_FRACTION.with(|f| f.set(parsed.node_fraction));
        Ok(())
    }

    fn render(tree: Vec<TreeNode>, context: RenderContext) -> Result<Rendered, String> {
        let fraction = NODE_FRACTION.with(Cell::get);
        Ok(Rendered {
            content_type: "text/vnd.graphviz; charset=utf-8".into(),
            extension: "dot".into(),
            body: to_dot(&tree, &context, fraction).into_bytes(),
        })
    }
}

export!(Dot);
