//! Kiln tree → gzip'd pprof, for `/render?format=pprof`.

use std::io::Write;

use kiln_plugin_api::{RenderContext, Tree};
use prost::Message;
use rustc_hash::FxHashMap;

use crate::proto;

/// Encodes `tree` as a single-sample-type pprof: one function per distinct frame name, one
/// location per function — or, for a tree with lines, per (function, file, line), so that
/// `go tool pprof -lines` and Go's PGO see them — and one sample per node with a self value
/// (location ids leaf first).
pub fn encode_tree(tree: &Tree, ctx: &RenderContext) -> Vec<u8> {
    let mut strings: Vec<String> = vec![String::new()];
    let mut string_ids: FxHashMap<String, i64> = FxHashMap::default();
    let mut intern = |s: &str| -> i64 {
        if s.is_empty() {
            return 0;
        }
        if let Some(&i) = string_ids.get(s) {
            return i;
        }
        strings.push(s.to_string());
        string_ids.insert(s.to_string(), strings.len() as i64 - 1);
        strings.len() as i64 - 1
    };
    let ty = &ctx.profile_type;
    let sample_type = vec![proto::ValueType {
        r#type: intern(&ty.sample_type),
        unit: intern(&ty.sample_unit),
    }];
    let period_type = proto::ValueType {
        r#type: intern(&ty.period_type),
        unit: intern(&ty.period_unit),
    };
    // One function per distinct frame name. Without lines, one location per function
    // (location id == function id); with lines, one location per (function, file, line).
    let mut functions = Vec::new();
    let mut function_of_name: Vec<u64> = vec![0; tree.names.len()];
    for (i, name) in tree.names.iter().enumerate().skip(1) {
        let id = functions.len() as u64 + 1;
        let name_id = intern(name);
        functions.push(proto::Function {
            id,
            name: name_id,
            system_name: name_id,
            filename: 0,
            start_line: 0,
        });
        function_of_name[i] = id;
    }
    let mut locations: Vec<proto::Location> = Vec::new();
    let mut location_ids: FxHashMap<(u64, u32, u32), u64> = FxHashMap::default();
    let mut location_of_node: Vec<u64> = vec![0; tree.nodes.len()];
    for (i, node) in tree.nodes.iter().enumerate().skip(1) {
        let function_id = function_of_name[node.name as usize];
        let at = tree.lines.get(i).copied().unwrap_or_default();
        location_of_node[i] = *location_ids
            .entry((function_id, at.file, at.line))
            .or_insert_with(|| {
                let f = &mut functions[function_id as usize - 1];
                if f.filename == 0 && at.file != 0 {
                    let file = tree.files.get(at.file as usize).map_or("", String::as_str);
                    f.filename = intern(file);
                }
                if f.start_line == 0 {
                    f.start_line = i64::from(at.start_line);
                }
                let id = locations.len() as u64 + 1;
                locations.push(proto::Location {
                    id,
                    mapping_id: 1,
                    address: 0,
                    line: vec![proto::Line {
                        function_id,
                        line: i64::from(at.line),
                        column: 0,
                    }],
                    is_folded: false,
                });
                id
            });
    }
    let mut samples = Vec::new();
    for (i, node) in tree.nodes.iter().enumerate().skip(1) {
        if node.self_value == 0 {
            continue;
        }
        let mut location_id = Vec::new();
        let mut n = i;
        while n != 0 {
            location_id.push(location_of_node[n]);
            n = tree.nodes[n].parent as usize;
        }
        samples.push(proto::Sample {
            location_id,
            value: vec![node.self_value],
            label: vec![],
        });
    }
    let period = if ctx.sample_rate > 0 && ty.period_unit == "nanoseconds" {
        1_000_000_000 / i64::from(ctx.sample_rate)
    } else {
        0
    };
    let profile = proto::Profile {
        sample_type,
        sample: samples,
        mapping: vec![proto::Mapping {
            id: 1,
            has_functions: true,
            ..Default::default()
        }],
        location: locations,
        function: functions,
        string_table: strings,
        time_nanos: ctx.start_ns,
        duration_nanos: (ctx.end_ns - ctx.start_ns).max(0),
        period_type: Some(period_type),
        period,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&profile.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}
