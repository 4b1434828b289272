//! Every exporter on a tree built from the collapsed fixture.

use kiln_exporters::{builtin, flamegraph_svg, speedscope, SvgOptions};
use kiln_plugin_api::{ProfileType, RenderContext, Tree};

fn tree() -> Tree {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/collapsed.txt"
    ))
    .unwrap();
    let stacks: Vec<(Vec<String>, i64)> = text
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(s, v)| {
            (
                s.split(';').map(String::from).collect(),
                v.trim().parse().unwrap(),
            )
        })
        .collect();
    Tree::from_stacks(
        stacks
            .iter()
            .map(|(s, v)| (s.iter().map(String::as_str), *v)),
    )
}

fn ctx() -> RenderContext {
    RenderContext {
        title: "app.cpu <&>".into(),
        profile_type: ProfileType::well_known("cpu").unwrap(),
        start_ns: 0,
        end_ns: 10_000_000_000,
        max_nodes: 0,
        sample_rate: 100,
        spy_name: "gospy".into(),
    }
}

async fn render(format: &str) -> kiln_plugin_api::Rendered {
    let (_, r) = builtin().into_iter().find(|(n, _)| *n == format).unwrap();
    r.render(&tree(), &ctx()).await.unwrap()
}

#[tokio::test]
async fn collapsed_round_trips() {
    let r = render("collapsed").await;
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), tree().to_folded());
}

#[tokio::test]
async fn speedscope_weights_sum_to_the_total() {
    let t = tree();
    let v = speedscope(&t, &ctx());
    let p = &v["profiles"][0];
    assert_eq!(p["type"], "sampled");
    let weights: i64 = p["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_i64().unwrap())
        .sum();
    assert_eq!(weights, t.total());
    let frames = v["shared"]["frames"].as_array().unwrap().len();
    for s in p["samples"].as_array().unwrap() {
        for f in s.as_array().unwrap() {
            assert!((f.as_u64().unwrap() as usize) < frames);
        }
    }
    assert_eq!(render("speedscope").await.content_type, "application/json");
}

#[tokio::test]
async fn svg_is_well_formed_with_a_rect_per_node() {
    let r = render("svg").await;
    let svg = std::str::from_utf8(&r.body).unwrap();
    assert!(svg.starts_with("<?xml"));
    assert!(svg.contains("app.cpu &lt;&amp;&gt;"), "title is escaped");
    // Every node of this small tree is wide enough to be drawn.
    assert_eq!(svg.matches("<rect x=").count(), tree().nodes.len());
    assert!(resvg::usvg::Tree::from_str(svg, &Default::default()).is_ok());
}

#[tokio::test]
async fn svg_honours_max_nodes() {
    let mut c = ctx();
    c.max_nodes = 3;
    let svg = flamegraph_svg(&tree(), &c, &SvgOptions::default());
    assert!(svg.matches("<rect x=").count() <= 3);
}

#[tokio::test]
async fn png_decodes_and_is_not_blank() {
    let r = render("png").await;
    let decoder = png::Decoder::new(std::io::Cursor::new(&r.body[..]));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.width, 1200);
    let px = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for chunk in buf[..info.buffer_size()].chunks(px) {
        colours.insert(chunk.to_vec());
        if colours.len() > 5 {
            break;
        }
    }
    assert!(colours.len() > 5, "a flamegraph has many colours");
}
