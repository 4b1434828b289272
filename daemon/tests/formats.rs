//! The other ingest formats over HTTP: trie, tree, speedscope, OTLP.

mod common;

use common::{agent, enc, Daemon};
use kiln_otlp::proto::*;
use prost::Message;

fn uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn node(out: &mut Vec<u8>, name: &str, value: u64, children: u64) {
    uvarint(out, name.len() as u64);
    out.extend_from_slice(name.as_bytes());
    uvarint(out, value);
    uvarint(out, children);
}

#[test]
fn trie_tree_and_speedscope_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let mut trie = Vec::new();
    node(&mut trie, "", 0, 1);
    node(&mut trie, "foo;ba", 0, 2);
    node(&mut trie, "r", 100, 0);
    node(&mut trie, "z", 200, 0);
    let (s, m) = d.ingest(
        &format!("name={}", enc("trie.cpu")),
        "binary/octet-stream+trie",
        &trie,
    );
    assert_eq!(s, 200, "{m}");
    let mut tree = Vec::new();
    node(&mut tree, "", 0, 1);
    node(&mut tree, "foo", 0, 1);
    node(&mut tree, "bar", 7, 0);
    let (s, m) = d.ingest(
        &format!("name={}&format=tree", enc("tree.cpu")),
        "application/octet-stream",
        &tree,
    );
    assert_eq!(s, 200, "{m}");
    let speedscope = br#"{"shared":{"frames":[{"name":"main"},{"name":"work"}]},
        "profiles":[{"type":"sampled","unit":"none","samples":[[0,1],[0]],"weights":[3,1]}]}"#;
    let (s, m) = d.ingest(
        &format!("name={}&format=speedscope", enc("ss.cpu")),
        "application/json",
        speedscope,
    );
    assert_eq!(s, 200, "{m}");
    let total = |q: &str| {
        d.get_json(&format!(
            "/render?query={}&from=now-1h&until=now%2B1m",
            enc(q)
        ))["flamebearer"]["numTicks"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(total("trie.cpu"), 300);
    assert_eq!(total("tree.cpu"), 7);
    assert_eq!(total("ss.cpu"), 4);
    let (s, m) = d.ingest(
        &format!("name={}&format=tree", enc("tree.cpu")),
        "application/octet-stream",
        &tree[..3],
    );
    assert_eq!(s, 400, "{m}");
    let (s, m) = d.ingest(
        &format!("name={}&format=speedscope", enc("ss.cpu")),
        "application/json",
        b"{\"shared\":1}",
    );
    assert_eq!(s, 400, "{m}");
}

fn otlp_request() -> ExportProfilesServiceRequest {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            string_value: v.into(),
            ..Default::default()
        }),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    ExportProfilesServiceRequest {
        dictionary: Some(ProfilesDictionary {
            location_table: vec![
                Location {
                    mapping_index: 0,
                    address: 0,
                    line: vec![Line {
                        function_index: 0,
                        line: 1,
                    }],
                },
                Location {
                    mapping_index: 0,
                    address: 0,
                    line: vec![Line {
                        function_index: 1,
                        line: 2,
                    }],
                },
            ],
            function_table: vec![
                Function {
                    name_strindex: 1,
                    filename_strindex: 0,
                    start_line: 0,
                },
                Function {
                    name_strindex: 2,
                    filename_strindex: 0,
                    start_line: 0,
                },
            ],
            string_table: ["", "main", "otelWork", "samples", "count"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            attribute_table: vec![],
        }),
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "otel-svc"),
                    kv("deployment.environment", "test"),
                ],
            }),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![Profile {
                    sample_type: vec![ValueType {
                        type_strindex: 3,
                        unit_strindex: 4,
                        aggregation_temporality: 1,
                    }],
                    sample: vec![Sample {
                        locations_start_index: 0,
                        locations_length: 2,
                        value: vec![5],
                        attribute_indices: vec![],
                    }],
                    location_indices: vec![1, 0],
                    time_nanos: now - 5_000_000_000,
                    duration_nanos: 5_000_000_000,
                    period_type: None,
                    period: 0,
                }],
            }],
        }],
    }
}

#[test]
fn otlp_profiles_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let body = otlp_request().encode_to_vec();
    let mut r = agent()
        .post(format!("{}/v1development/profiles", d.url))
        .header("Content-Type", "application/x-protobuf")
        .send(&body[..])
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let render = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc(r#"otel-svc.cpu{deployment.environment="test"}"#)
    ));
    assert_eq!(render["flamebearer"]["numTicks"], 5);
    assert!(render["flamebearer"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "otelWork"));
    // The same request as OTLP/JSON (camelCase, 64-bit integers as strings).
    let json = serde_json::json!({
        "resourceProfiles": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "otel-json"}}]},
            "scopeProfiles": [{"profiles": [{
                "sampleType": [{"typeStrindex": 3, "unitStrindex": 4}],
                "sample": [{"locationsStartIndex": 0, "locationsLength": 2, "value": ["7"]}],
                "locationIndices": [1, 0],
                "timeNanos": (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64 - 5_000_000_000).to_string(),
            }]}]
        }],
        "dictionary": {
            "locationTable": [{"line": [{"functionIndex": 0}]}, {"line": [{"functionIndex": 1}]}],
            "functionTable": [{"nameStrindex": 1}, {"nameStrindex": 2}],
            "stringTable": ["", "main", "otelJsonWork", "samples", "count"]
        }
    });
    let mut r = agent()
        .post(format!("{}/v1development/profiles", d.url))
        .header("Content-Type", "application/json")
        .send(json.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
    let render = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc("otel-json.cpu")
    ));
    assert_eq!(render["flamebearer"]["numTicks"], 7);
    assert!(render["flamebearer"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "otelJsonWork"));
    let mut bad = otlp_request();
    bad.resource_profiles[0].scope_profiles[0].profiles[0].location_indices = vec![9];
    bad.resource_profiles[0].scope_profiles[0].profiles[0].sample[0].locations_length = 1;
    let mut r = agent()
        .post(format!("{}/v1development/profiles", d.url))
        .header("Content-Type", "application/x-protobuf")
        .send(&bad.encode_to_vec()[..])
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("location index 9"));
}

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../compat/conformance/corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Speedscope weights in seconds pushed as `app.cpu` are CPU time in nanoseconds, typed and
/// labelled so: never `samples` at 100 Hz.
#[test]
fn speedscope_time_units_follow_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let body = br#"{"shared":{"frames":[{"name":"main"},{"name":"work"}]},
        "profiles":[{"type":"sampled","unit":"seconds","samples":[[0,1],[0]],"weights":[2.5,0.5]}]}"#;
    let (s, m) = d.ingest(
        &format!("name={}&format=speedscope", enc("sst.cpu")),
        "application/json",
        body,
    );
    assert_eq!(s, 200, "{m}");
    let r = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc("sst.cpu{}")
    ));
    assert_eq!(r["flamebearer"]["numTicks"], 3_000_000_000i64);
    assert_eq!(r["metadata"]["units"], "nanoseconds");
    assert_eq!(
        r["metadata"]["profileType"],
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
    );
}

/// Every name /api/apps and /label-values list renders, whatever the sample type is called.
#[test]
fn every_listed_type_renders() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let (body, ct) = common::multipart(&corpus("go-fgprof-shape.pb.gz"), None);
    let (s, m) = d.ingest(&format!("name={}", enc("fg.app")), &ct, &body);
    assert_eq!(s, 200, "{m}");
    let apps = d.get_json("/api/apps");
    let names: Vec<String> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"fg.app.time".to_string()), "{names:?}");
    let listed = d.get_json("/label-values?label=__name__");
    for name in &names {
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v == name.as_str()),
            "{name} not in /label-values"
        );
        let r = d.get_json(&format!(
            "/render?query={}&from=now-1h&until=now%2B1m",
            enc(&format!("{name}{{}}"))
        ));
        assert!(
            r["flamebearer"]["numTicks"].as_i64().unwrap() > 0,
            "{name} renders empty"
        );
        assert_eq!(r["metadata"]["name"], name.as_str());
    }
    // Deleting by a listed name deletes that application.
    let r = common::agent()
        .delete(format!("{}/api/apps", d.url))
        .force_send_body()
        .send(r#"{"name":"fg.app.time"}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let apps = d.get_json("/api/apps");
    assert!(
        !apps
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"].as_str().unwrap().starts_with("fg.app.")),
        "{apps}"
    );
}

/// Skipped parts of a body are counted in /metrics; a JFR is never a 500.
#[test]
fn decode_skips_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let jfr = std::fs::read(common::testdata("java-jdk.jfr")).unwrap();
    let mut damaged = jfr.clone();
    damaged.extend_from_slice(&jfr[..jfr.len() / 3]);
    let (s, m) = d.ingest(
        &format!("name={}&format=jfr", enc("jfrskip")),
        "application/octet-stream",
        &damaged,
    );
    assert_eq!(s, 200, "{m}");
    let (s, metrics) = d.get("/metrics");
    assert_eq!(s, 200);
    assert!(
        metrics.contains(r#"kiln_decode_skipped_total{format="jfr",reason="malformed_chunk"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"reason="unprofiled_event""#));
}
