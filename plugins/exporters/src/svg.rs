//! A static icicle flamegraph (root on top), as SVG, and its PNG rasterisation.

use std::fmt::Write;
use std::sync::{Arc, OnceLock};

use kiln_plugin_api::{ExportError, RenderContext, Tree};
use resvg::{tiny_skia, usvg};

/// Geometry of the drawing.
#[derive(Debug, Clone)]
pub struct SvgOptions {
    pub width: f64,
    pub row_height: f64,
    pub font_size: f64,
    /// Nodes narrower than this fraction of the total are not drawn.
    pub min_fraction: f64,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            width: 1200.0,
            row_height: 18.0,
            font_size: 11.0,
            min_fraction: 0.001,
        }
    }
}

const HEADER: f64 = 44.0;

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The package of a frame: what precedes its last `.`, `/` or `::` separator.
fn package(name: &str) -> &str {
    let cut = [name.rfind("::"), name.rfind('/'), name.rfind('.')]
        .into_iter()
        .flatten()
        .max();
    cut.map_or(name, |i| &name[..i])
}

/// A colour per package, stable across renders (FNV-1a of the package name).
fn colour(name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in package(name).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let hue = h % 60; // warm hues, like classic flamegraphs
    let light = 55 + (h >> 8) % 15;
    format!("hsl({hue},80%,{light}%)")
}

fn threshold(tree: &Tree, max_nodes: usize) -> i64 {
    if max_nodes == 0 || tree.nodes.len() <= max_nodes {
        return i64::MIN;
    }
    let mut totals: Vec<i64> = tree.nodes.iter().map(|n| n.total).collect();
    let (_, nth, _) = totals.select_nth_unstable_by(max_nodes - 1, |a, b| b.cmp(a));
    *nth
}

/// Draws `tree` as an SVG icicle graph. Children sit after their parent's self value, ordered
/// by name; nodes below the `max_nodes` budget or narrower than `min_fraction` are left out.
pub fn flamegraph_svg(tree: &Tree, ctx: &RenderContext, opts: &SvgOptions) -> String {
    let total = tree.total().max(1);
    let scale = opts.width / total as f64;
    let min_total = threshold(tree, ctx.max_nodes).max((opts.min_fraction * total as f64) as i64);
    let mut children = tree.children();
    for c in &mut children {
        c.sort_by(|&a, &b| tree.name_of(a).cmp(tree.name_of(b)));
    }
    let mut body = String::new();
    let mut depth_max = 0usize;
    let char_width = opts.font_size * 0.6;
    // (node, depth, x in value units)
    let mut stack: Vec<(u32, usize, i64)> = vec![(0, 0, 0)];
    while let Some((node, depth, x)) = stack.pop() {
        let n = tree.nodes[node as usize];
        depth_max = depth_max.max(depth);
        let name = if node == 0 {
            "total"
        } else {
            tree.name_of(node)
        };
        let (px, w) = (x as f64 * scale, n.total as f64 * scale);
        let y = HEADER + depth as f64 * opts.row_height;
        let pct = n.total as f64 * 100.0 / total as f64;
        let fill = if node == 0 {
            "hsl(220,10%,75%)".to_string()
        } else {
            colour(name)
        };
        let _ = write!(
            body,
            "<g><title>{} — self {}, total {} ({pct:.2}%)</title><rect x=\"{px:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"{fill}\" rx=\"1\"/>",
            escape(name),
            n.self_value,
            n.total,
            (w - 0.5).max(0.1),
            opts.row_height - 1.0,
        );
        let fits = ((w - 6.0) / char_width).floor() as usize;
        if fits >= 3 {
            let label: String = if name.chars().count() > fits {
                name.chars()
                    .take(fits.saturating_sub(2))
                    .collect::<String>()
                    + ".."
            } else {
                name.to_string()
            };
            let _ = write!(
                body,
                "<text x=\"{:.2}\" y=\"{:.1}\">{}</text>",
                px + 3.0,
                y + opts.row_height * 0.7,
                escape(&label)
            );
        }
        body.push_str("</g>\n");
        let mut child_x = x + n.self_value;
        let mut next = Vec::new();
        for &c in &children[node as usize] {
            let cn = tree.nodes[c as usize];
            if cn.total > 0 && cn.total >= min_total {
                next.push((c, depth + 1, child_x));
            }
            child_x += cn.total;
        }
        stack.extend(next.into_iter().rev());
    }
    let height = HEADER + (depth_max + 1) as f64 * opts.row_height + 8.0;
    let subtitle = format!(
        "{} · total {} {} · {}",
        ctx.profile_type.id(),
        tree.total(),
        ctx.profile_type.sample_unit,
        ctx.spy_name
    );
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height:.0}\" viewBox=\"0 0 {w} {height:.0}\" font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"{fs}\">\n<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n<text x=\"{cx}\" y=\"18\" text-anchor=\"middle\" font-size=\"15\">{title}</text>\n<text x=\"{cx}\" y=\"34\" text-anchor=\"middle\" fill=\"#555\">{sub}</text>\n{body}</svg>\n",
        w = opts.width,
        fs = opts.font_size,
        cx = opts.width / 2.0,
        title = escape(&ctx.title),
        sub = escape(&subtitle),
    )
}

/// System fonts, loaded once.
fn fonts() -> Arc<usvg::fontdb::Database> {
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            db.load_system_fonts();
            Arc::new(db)
        })
        .clone()
}

/// Renders an SVG document to PNG bytes.
pub fn rasterize(svg: &str) -> Result<Vec<u8>, ExportError> {
    let options = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| ExportError(format!("svg: {e}")))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| ExportError("flamegraph has no area".into()))?;
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap
        .encode_png()
        .map_err(|e| ExportError(format!("png: {e}")))
}
