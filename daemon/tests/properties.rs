//! Properties for any input, over generated pprofs pushed to the real daemon: every type
//! `/api/apps` lists renders; the flamebearer, the `functions` table, the collapsed and the pprof
//! exports agree on the total and on every function's self value; and the pprof export
//! round-trips the total of every sample type (negative values dropped, docs/negative-values.md).
//!
//! The generator draws stacks over a few functions at several lines each (so one function
//! appears at different lines under one parent), inlined frames, recursion, unsymbolized
//! addresses, negative values and sample type names Kiln does not know.

mod common;

use std::collections::BTreeMap;

use common::{enc, Daemon};
use kiln_pprof::proto;
use prost::Message;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SAMPLE_TYPES: &[(&str, &str)] = &[
    ("samples", "count"),
    ("cpu", "nanoseconds"),
    ("time", "nanoseconds"),
    ("custom-metric.v2", "count"),
];

/// A pprof with `types` sample types; returns it and, per sample type, the expected total.
fn generate(rng: &mut Rng, types: &[(&str, &str)]) -> (Vec<u8>, Vec<i64>) {
    let mut strings = vec![String::new()];
    let mut s = |v: &str| -> i64 {
        if let Some(i) = strings.iter().position(|x| x == v) {
            return i as i64;
        }
        strings.push(v.to_string());
        strings.len() as i64 - 1
    };
    let sample_type = types
        .iter()
        .map(|(t, u)| proto::ValueType {
            r#type: s(t),
            unit: s(u),
        })
        .collect();
    let names = ["main", "serve", "parse", "hash", "alloc", "lock", "fib"];
    let function: Vec<proto::Function> = names
        .iter()
        .enumerate()
        .map(|(i, n)| proto::Function {
            id: i as u64 + 1,
            name: s(&format!("pkg.{n}")),
            system_name: 0,
            filename: s(&format!("/src/{n}.go")),
            start_line: 10 * i as i64 + 1,
        })
        .collect();
    // Locations: each function at three lines; a few inlined pairs; two without symbols.
    let mut location = Vec::new();
    for f in 1..=names.len() as u64 {
        for l in 0..3 {
            location.push(proto::Location {
                id: location.len() as u64 + 1,
                mapping_id: 0,
                address: 0,
                line: vec![proto::Line {
                    function_id: f,
                    line: 10 * (f as i64 - 1) + 2 + l,
                    column: 0,
                }],
                is_folded: false,
            });
        }
    }
    for (callee, caller) in [(4, 2), (5, 3)] {
        location.push(proto::Location {
            id: location.len() as u64 + 1,
            mapping_id: 0,
            address: 0,
            line: vec![
                proto::Line {
                    function_id: callee,
                    line: 10 * (callee as i64 - 1) + 5,
                    column: 0,
                },
                proto::Line {
                    function_id: caller,
                    line: 10 * (caller as i64 - 1) + 6,
                    column: 0,
                },
            ],
            is_folded: false,
        });
    }
    for addr in [0x1000u64, 0x2000] {
        location.push(proto::Location {
            id: location.len() as u64 + 1,
            mapping_id: 0,
            address: addr,
            line: vec![],
            is_folded: false,
        });
    }
    let mut totals = vec![0i64; types.len()];
    let mut sample = Vec::new();
    for _ in 0..(20 + rng.below(60)) {
        let depth = 1 + rng.below(6) as usize;
        // Leaf first; the root is always main.
        let mut ids: Vec<u64> = (0..depth - 1)
            .map(|_| 1 + rng.below(location.len() as u64))
            .collect();
        ids.push(1 + rng.below(3));
        let value: Vec<i64> = (0..types.len())
            .map(|_| {
                let v = rng.below(1000) as i64;
                if rng.below(8) == 0 {
                    -v
                } else {
                    v
                }
            })
            .collect();
        for (t, &v) in totals.iter_mut().zip(&value) {
            *t += v.max(0);
        }
        sample.push(proto::Sample {
            location_id: ids,
            value,
            label: vec![],
        });
    }
    let p = proto::Profile {
        sample_type,
        sample,
        location,
        function,
        string_table: strings,
        period_type: Some(proto::ValueType { r#type: 0, unit: 0 }),
        ..Default::default()
    };
    (p.encode_to_vec(), totals)
}

/// Self per function of a flamebearer (levels of `[offset, total, self, name]`).
fn flamebearer_self(fb: &serde_json::Value) -> BTreeMap<String, i64> {
    let names: Vec<&str> = fb["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let mut out = BTreeMap::new();
    for level in fb["levels"].as_array().unwrap().iter().skip(1) {
        let l: Vec<i64> = level
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        for q in l.chunks(4) {
            if q[2] != 0 {
                *out.entry(names[q[3] as usize].to_string()).or_default() += q[2];
            }
        }
    }
    out
}

#[test]
fn views_agree_and_pprof_round_trips_on_generated_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for case in 0..8 {
        let n = 1 + rng.below(SAMPLE_TYPES.len() as u64) as usize;
        let types = &SAMPLE_TYPES[..n];
        let (body, totals) = generate(&mut rng, types);
        let app = format!("prop{case}");
        let (mp, ct) = common::multipart(&body, None);
        let (s, m) = d.ingest(&format!("name={}", enc(&app)), &ct, &mp);
        assert_eq!(s, 200, "{m}");

        let apps = d.get_json("/api/apps");
        let listed: Vec<(String, String)> = apps
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"].as_str().unwrap().starts_with(&format!("{app}.")))
            .map(|a| {
                (
                    a["name"].as_str().unwrap().to_string(),
                    a["profileType"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        for (i, (t, u)) in types.iter().enumerate() {
            let found = listed.iter().find(|(_, id)| {
                let parts: Vec<&str> = id.split(':').collect();
                parts[1] == *t && parts[2] == *u
            });
            if totals[i] == 0 {
                continue;
            }
            let (name, _) = found.unwrap_or_else(|| panic!("{t}/{u} not listed: {listed:?}"));
            let render = |format: &str| {
                format!(
                    "/render?query={}&from=now-1h&until=now%2B1h&maxNodes=100000&format={format}",
                    enc(&format!("{name}{{}}"))
                )
            };
            let r = d.get_json(&render("json"));
            let fb = &r["flamebearer"];
            assert_eq!(fb["numTicks"], totals[i], "{name}: total");
            let fb_self = flamebearer_self(fb);

            let mut fn_self = BTreeMap::new();
            for f in r["functions"].as_array().unwrap() {
                let v = f["self"].as_i64().unwrap();
                if v != 0 {
                    fn_self.insert(f["name"].as_str().unwrap().to_string(), v);
                }
            }
            assert_eq!(fn_self, fb_self, "{name}: functions vs flamebearer");

            let (s, folded) = d.get(&render("collapsed"));
            assert_eq!(s, 200);
            let mut col_self: BTreeMap<String, i64> = BTreeMap::new();
            let mut col_total = 0;
            for line in folded.lines() {
                let (stack, v) = line.rsplit_once(' ').unwrap();
                let v: i64 = v.parse().unwrap();
                col_total += v;
                *col_self
                    .entry(stack.rsplit(';').next().unwrap().to_string())
                    .or_default() += v;
            }
            col_self.retain(|_, v| *v != 0);
            assert_eq!(col_total, totals[i], "{name}: collapsed total");
            assert_eq!(col_self, fb_self, "{name}: collapsed vs flamebearer");

            let (s, gz) = d.get_bytes(&render("pprof"));
            assert_eq!(s, 200);
            let raw = kiln_pprof::gunzip_if_needed(&gz, 1 << 30).unwrap();
            let p = proto::Profile::decode(&raw[..]).unwrap();
            let function_name: BTreeMap<u64, &str> = p
                .function
                .iter()
                .map(|f| (f.id, p.string_table[f.name as usize].as_str()))
                .collect();
            let leaf_of: BTreeMap<u64, &str> = p
                .location
                .iter()
                .map(|l| (l.id, function_name[&l.line[0].function_id]))
                .collect();
            let mut pp_self: BTreeMap<String, i64> = BTreeMap::new();
            let mut pp_total = 0;
            for smp in &p.sample {
                pp_total += smp.value[0];
                *pp_self
                    .entry(leaf_of[&smp.location_id[0]].to_string())
                    .or_default() += smp.value[0];
            }
            pp_self.retain(|_, v| *v != 0);
            assert_eq!(pp_total, totals[i], "{name}: pprof round trip");
            assert_eq!(pp_self, fb_self, "{name}: pprof vs flamebearer");
            // The export keeps lines: the generated stacks use several lines per function.
            let lines: std::collections::BTreeSet<i64> = p
                .location
                .iter()
                .flat_map(|l| l.line.iter().map(|x| x.line))
                .collect();
            assert!(lines.len() > 3, "{name}: pprof export lost its lines");
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} profile types checked");
}
