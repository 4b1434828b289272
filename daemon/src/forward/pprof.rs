//! A stored profile as pprof, the body a forwarding sink pushes.

use std::io::Write;

use kiln_pprof::proto;
use prost::Message;
use rustc_hash::FxHashMap;

/// Encodes one stored profile as a gzip'd single-sample-type pprof (what a forwarding sink
/// pushes on): one function and location per frame of the profile's frame table, one sample
/// per stack (location ids leaf first).
pub fn encode_profile(p: &kiln_plugin_api::Profile) -> Vec<u8> {
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
    let ty = &p.profile_type;
    let sample_type = vec![proto::ValueType {
        r#type: intern(&ty.sample_type),
        unit: intern(&ty.sample_unit),
    }];
    let period_type = proto::ValueType {
        r#type: intern(&ty.period_type),
        unit: intern(&ty.period_unit),
    };
    let mut functions = Vec::with_capacity(p.frames.len());
    let mut locations = Vec::with_capacity(p.frames.len());
    for (i, f) in p.frames.iter().enumerate() {
        let id = i as u64 + 1;
        let name = intern(&f.function);
        functions.push(proto::Function {
            id,
            name,
            system_name: name,
            filename: intern(&f.file),
            start_line: i64::from(f.start_line),
        });
        locations.push(proto::Location {
            id,
            mapping_id: 1,
            address: 0,
            line: vec![proto::Line {
                function_id: id,
                line: i64::from(f.line),
                column: 0,
            }],
            is_folded: false,
        });
    }
    let samples = p
        .samples
        .iter()
        .map(|s| proto::Sample {
            location_id: s.stack.iter().rev().map(|&i| u64::from(i) + 1).collect(),
            value: vec![s.value],
            label: vec![],
        })
        .collect();
    let period = if p.meta.sample_rate > 0 && ty.period_unit == "nanoseconds" {
        1_000_000_000 / i64::from(p.meta.sample_rate)
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
        time_nanos: p.start_ns,
        duration_nanos: (p.end_ns - p.start_ns).max(0),
        period_type: Some(period_type),
        period,
        ..Default::default()
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&profile.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}
