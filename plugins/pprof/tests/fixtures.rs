//! Decoding the real Go profiles in `testdata/`. Expected figures were read with
//! `go tool pprof -raw` / `-top` on the same files.

use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile, Tree};
use kiln_pprof::PprofDecoder;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn meta() -> IngestMeta {
    IngestMeta {
        app: "app".into(),
        labels: Labels::from_pairs([("service_name", "app"), ("env", "test")]),
        start_ns: 1_000_000_000_000,
        end_ns: 1_010_000_000_000,
        spy_name: "gospy".into(),
        ..Default::default()
    }
}

fn by_type<'a>(profiles: &'a [Profile], name: &str) -> &'a Profile {
    profiles
        .iter()
        .find(|p| p.profile_type.name == name)
        .unwrap_or_else(|| panic!("no {name} profile"))
}

fn self_of(tree: &Tree, function: &str) -> i64 {
    tree.function_totals()
        .iter()
        .find(|f| f.name == function)
        .map(|f| f.self_value)
        .unwrap_or(0)
}

fn tree_of(p: &Profile) -> Tree {
    Tree::from_stacks(p.samples.iter().map(|s| (p.stack_names(s), s.value)))
}

#[test]
fn go_cpu_profile_becomes_cpu_and_cpu_nanoseconds() {
    let profiles = PprofDecoder::default()
        .decode(&fixture("go-cpu.pb.gz"), &meta())
        .unwrap();
    assert_eq!(profiles.len(), 2);
    let cpu = by_type(&profiles, "cpu");
    assert_eq!(
        cpu.profile_type.id(),
        "process_cpu:samples:count:cpu:nanoseconds"
    );
    assert_eq!(cpu.meta.sample_rate, 100);
    assert_eq!(cpu.labels.get("env"), Some("test"));
    // `go tool pprof -top`: Total samples = 10170ms at 10ms per sample.
    assert_eq!(cpu.total(), 1017);
    let tree = tree_of(cpu);
    // `go tool pprof -top`: crypto/sha256.block flat 3120ms, sort.partition flat 2740ms.
    assert_eq!(self_of(&tree, "crypto/sha256.block"), 312);
    assert_eq!(self_of(&tree, "sort.partition"), 274);
    let ns = by_type(&profiles, "cpu_nanoseconds");
    assert_eq!(ns.total(), 10_170_000_000);
    for p in &profiles {
        p.validate().unwrap();
    }
}

#[test]
fn go_heap_profile_has_four_memory_types() {
    let profiles = PprofDecoder::default()
        .decode(&fixture("go-heap.pb.gz"), &meta())
        .unwrap();
    let mut names: Vec<&str> = profiles
        .iter()
        .map(|p| p.profile_type.name.as_str())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ]
    );
    assert_eq!(
        by_type(&profiles, "inuse_space").profile_type.aggregation,
        kiln_plugin_api::Aggregation::Average
    );
    assert_eq!(
        by_type(&profiles, "alloc_space").profile_type.id(),
        "memory:alloc_space:bytes:space:bytes"
    );
}

#[test]
fn goroutine_profile_is_named_goroutines() {
    let profiles = PprofDecoder::default()
        .decode(&fixture("go-goroutine.pb.gz"), &meta())
        .unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].profile_type.name, "goroutines");
    assert!(profiles[0].total() > 0);
}

fn multipart(parts: &[(&str, &[u8])]) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!(
                "--B0undary\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--B0undary--\r\n");
    (body, "multipart/form-data; boundary=B0undary".to_string())
}

#[test]
fn multipart_with_sample_type_config_renames_and_filters() {
    let heap = fixture("go-heap.pb.gz");
    let config = br#"{"alloc_space":{"display-name":"alloc_space","units":"bytes"},"inuse_space":{"display-name":"inuse_space","aggregation":"average"}}"#;
    let (body, ct) = multipart(&[("profile", &heap), ("sample_type_config", config)]);
    let mut m = meta();
    m.content_type = Some(ct);
    let profiles = PprofDecoder::default().decode(&body, &m).unwrap();
    let mut names: Vec<&str> = profiles
        .iter()
        .map(|p| p.profile_type.name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["alloc_space", "inuse_space"]);
}

#[test]
fn prev_profile_turns_cumulative_types_into_deltas() {
    let heap = fixture("go-heap.pb.gz");
    let (body, ct) = multipart(&[("profile", &heap), ("prev_profile", &heap)]);
    let mut m = meta();
    m.content_type = Some(ct);
    let profiles = PprofDecoder::default().decode(&body, &m).unwrap();
    // The same cumulative profile twice: no allocation happened in between.
    assert!(profiles
        .iter()
        .all(|p| !p.profile_type.name.starts_with("alloc_")));
    assert!(profiles
        .iter()
        .any(|p| p.profile_type.name == "inuse_space"));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let d = PprofDecoder::default();
    let err = d.decode(b"\x1f\x8bnot really gzip", &meta()).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    let err = d.decode(b"\xff\xff\xff\xff", &meta()).unwrap_err();
    assert!(err.to_string().contains("pprof"), "{err}");
    let (body, ct) = multipart(&[("other", b"x")]);
    let mut m = meta();
    m.content_type = Some(ct);
    let err = d.decode(&body, &m).unwrap_err();
    assert!(err.to_string().contains("'profile' part"), "{err}");
    let (body, ct) = multipart(&[
        ("profile", &fixture("go-cpu.pb.gz")),
        ("sample_type_config", b"{nope"),
    ]);
    m.content_type = Some(ct);
    let err = d.decode(&body, &m).unwrap_err();
    assert!(err.to_string().contains("sample_type_config"), "{err}");
    // A gzip bomb: 1 MiB of zeros inflating past a 64 KiB limit.
    let small = PprofDecoder {
        max_decompressed_bytes: 64 << 10,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &vec![0u8; 1 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(matches!(
        small.decode(&bomb, &meta()),
        Err(kiln_plugin_api::DecodeError::TooLarge { .. })
    ));
}

#[test]
fn encoded_tree_decodes_back_to_the_same_stacks() {
    let profiles = PprofDecoder::default()
        .decode(&fixture("go-cpu.pb.gz"), &meta())
        .unwrap();
    let cpu = by_type(&profiles, "cpu");
    let tree = tree_of(cpu);
    let ctx = kiln_plugin_api::RenderContext {
        title: "app.cpu".into(),
        profile_type: cpu.profile_type.clone(),
        start_ns: cpu.start_ns,
        end_ns: cpu.end_ns,
        max_nodes: 0,
        sample_rate: 100,
        spy_name: "gospy".into(),
    };
    let bytes = kiln_pprof::encode_tree(&tree, &ctx);
    let back = PprofDecoder::default().decode(&bytes, &meta()).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(tree_of(&back[0]).to_folded(), tree.to_folded());
}

/// Fuzz-style: every truncation and many byte flips of the real profiles decode or fail
/// cleanly, never panic.
#[test]
fn corrupted_profiles_never_panic() {
    let d = PprofDecoder::default();
    for name in ["go-cpu.pb.gz", "go-heap.pb.gz", "go-goroutine.pb.gz"] {
        let gz = fixture(name);
        let raw = kiln_pprof::gunzip_if_needed(&gz, 1 << 30)
            .unwrap()
            .into_owned();
        for data in [&gz, &raw] {
            for cut in (0..data.len()).step_by(7) {
                let _ = d.decode(&data[..cut], &meta());
            }
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for _ in 0..2000 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut m = data.clone();
                let i = (state % m.len() as u64) as usize;
                m[i] ^= (state >> 32) as u8 | 1;
                if let Ok(profiles) = d.decode(&m, &meta()) {
                    for p in profiles {
                        p.validate().unwrap();
                    }
                }
            }
        }
    }
}

/// pyroscope-rs (the Python and Rust agents) sends only `cpu/nanoseconds`: that is the `cpu` type.
#[test]
fn cpu_time_alone_is_the_cpu_type() {
    use prost::Message;
    let raw = kiln_pprof::gunzip_if_needed(&fixture("go-cpu.pb.gz"), 1 << 30)
        .unwrap()
        .into_owned();
    let mut p = kiln_pprof::proto::Profile::decode(&raw[..]).unwrap();
    p.sample_type.remove(0);
    for s in &mut p.sample {
        s.value.remove(0);
    }
    let profiles = PprofDecoder::default()
        .decode(&p.encode_to_vec(), &meta())
        .unwrap();
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].profile_type.name, "cpu");
    assert_eq!(
        profiles[0].profile_type.id(),
        "process_cpu:cpu:nanoseconds:cpu:nanoseconds"
    );
    assert_eq!(profiles[0].meta.sample_rate, 100);
}

fn corpus(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../compat/conformance/corpus/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The Node agent's wall profiler: `samples`, `wall` and `cpu` columns are wall time, CPU time
/// and the wall sample count, as Grafana Pyroscope files them — the count is never `cpu`.
#[test]
fn node_wall_profile_is_wall_and_cpu_time() {
    // A real recording (`sample`/`wall`/`cpu`) and one shaped as the issue describes
    // (`samples`/`wall`/`cpu`).
    for file in ["node-wall.pb.gz", "node-wall-shape.pb.gz"] {
        node_wall(file);
    }
}

fn node_wall(file: &str) {
    let profiles = PprofDecoder::default()
        .decode(&corpus(file), &meta())
        .unwrap();
    let ids: Vec<(String, String)> = profiles
        .iter()
        .map(|p| (p.profile_type.name.clone(), p.profile_type.id()))
        .collect();
    assert!(
        ids.contains(&(
            "wall".into(),
            "wall:wall:nanoseconds:wall:nanoseconds".into()
        )),
        "{ids:?}"
    );
    assert!(
        ids.contains(&(
            "cpu".into(),
            "process_cpu:cpu:nanoseconds:cpu:nanoseconds".into()
        )),
        "{ids:?}"
    );
    // The count keeps its own sample type name (`samples`, or `sample` from @datadog/pprof).
    assert!(
        ids.iter().any(|(n, id)| n == "wall_samples"
            && id.starts_with("wall:sample")
            && id.ends_with(":count:wall:nanoseconds")),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 3, "{file}: {ids:?}");
}

/// A sample type Kiln does not know by name keeps its name (fgprof's `time`), made safe for
/// queries: a name that could not be typed back after `app.` is rewritten.
#[test]
fn unknown_sample_types_keep_a_queryable_name() {
    let profiles = PprofDecoder::default()
        .decode(&corpus("go-fgprof-shape.pb.gz"), &meta())
        .unwrap();
    assert!(profiles.iter().any(|p| p.profile_type.name == "time"));
    assert_eq!(kiln_pprof::short_name("a b:c{d}"), "a_b_c_d_");
    assert_eq!(kiln_pprof::short_name("x.y-z"), "x.y-z");
    assert_eq!(kiln_pprof::short_name(""), "unknown");
}

/// Negative values (a heap delta) are dropped at ingest (docs/negative-values.md).
#[test]
fn negative_values_are_dropped() {
    let body = corpus("go-heap-delta.pb.gz");
    let raw = kiln_pprof::gunzip_if_needed(&body, 1 << 30).unwrap();
    use prost::Message;
    let p = kiln_pprof::proto::Profile::decode(&raw[..]).unwrap();
    assert!(
        p.sample.iter().any(|s| s.value.iter().any(|&v| v < 0)),
        "the fixture has negative values"
    );
    let profiles = PprofDecoder::default().decode(&body, &meta()).unwrap();
    for prof in &profiles {
        assert!(prof.samples.iter().all(|s| s.value > 0));
        let column = p
            .sample_type
            .iter()
            .position(|vt| p.string_table[vt.r#type as usize] == prof.profile_type.sample_type)
            .unwrap();
        let positive: i64 = p
            .sample
            .iter()
            .map(|s| s.value[column])
            .filter(|&v| v > 0)
            .sum();
        let stored: i64 = profiles
            .iter()
            .filter(|q| q.profile_type == prof.profile_type)
            .map(|q| q.total())
            .sum();
        assert_eq!(stored, positive, "{}", prof.profile_type.name);
    }
}
