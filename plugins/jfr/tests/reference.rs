//! Totals per profile type of the JFR recordings in the conformance corpus, as Grafana
//! Pyroscope's parser (`github.com/grafana/jfr-parser` v0.14.0, package `pprof`) computes them:
//! its CPU and wall values (count × 10⁷ ns at 100 Hz) divided back to counts. The same numbers,
//! and the top functions, are checked end to end against the daemon by compat/conformance.

use kiln_jfr::JfrDecoder;
use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile};

fn decode(file: &str) -> Vec<Profile> {
    let path = format!(
        "{}/../../compat/conformance/corpus/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let meta = IngestMeta {
        app: "java".into(),
        labels: Labels::from_pairs([("service_name", "java")]),
        start_ns: 1,
        end_ns: 2,
        ..Default::default()
    };
    let ps = JfrDecoder::default().decode(&body, &meta).unwrap();
    for p in &ps {
        p.validate().unwrap();
    }
    ps
}

/// Totals by type name, summed over series (contexts).
fn totals(ps: &[Profile]) -> Vec<(String, i64)> {
    let mut t: std::collections::BTreeMap<String, i64> = Default::default();
    for p in ps {
        *t.entry(p.profile_type.name.clone()).or_default() += p.total();
    }
    t.into_iter().collect()
}

/// The tick rate in the first chunk header of a corpus recording.
fn ticks_per_second(file: &str) -> f64 {
    use std::io::Read;
    let path = format!(
        "{}/../../compat/conformance/corpus/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    u64::from_be_bytes(raw[56..64].try_into().unwrap()) as f64
}

/// `approx`: durations as the reference reports them, in the recording's ticks.
fn check(file: &str, want: &[(&str, i64)], approx: &[(&str, i64)]) {
    let got = totals(&decode(file));
    let ns_per_tick = 1e9 / ticks_per_second(file);
    let mut expected: Vec<(String, i64)> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    for (name, reference) in approx {
        let v = got
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{file}: no {name} in {got:?}"))
            .1;
        // Durations: the reference keeps ticks, Kiln nanoseconds (truncated per event).
        let reference = *reference as f64 * ns_per_tick;
        let diff = (v as f64 - reference).abs() / reference;
        assert!(diff < 0.001, "{file}: {name} {v}, reference {reference} ns");
        expected.push((name.to_string(), v));
    }
    expected.sort();
    assert_eq!(got, expected, "{file}");
}

#[test]
fn async_profiler_cpu_mode() {
    check(
        "cortex-dev-01__kafka-0__cpu__0.jfr.gz",
        &[("cpu", 478)],
        &[],
    );
    check(
        "cortex-dev-01__kafka-0__cpu_lock_alloc__0.jfr.gz",
        &[
            ("cpu", 554),
            ("alloc_in_new_tlab_objects", 766),
            ("alloc_in_new_tlab_bytes", 1_606_418_432),
        ],
        &[],
    );
    check(
        "example.jfr.gz",
        &[
            ("cpu", 1031),
            ("alloc_in_new_tlab_objects", 30),
            ("alloc_in_new_tlab_bytes", 27_650_544),
            ("alloc_outside_tlab_objects", 260),
            ("alloc_outside_tlab_bytes", 139_855_503_616),
            ("lock_count", 13),
        ],
        &[("lock_duration", 18_443_760_794)],
    );
}

#[test]
fn async_profiler_itimer_mode_is_cpu() {
    check("dump1.jfr.gz", &[("cpu", 2188)], &[]);
}

#[test]
fn wall_mode_gives_wall_and_the_cpu_of_running_threads() {
    check("wall.jfr.gz", &[("cpu", 834), ("wall", 26_246)], &[]);
    check(
        "wall_tick_sample.jfr.gz",
        &[("cpu", 129), ("wall", 2579)],
        &[],
    );
    check(
        "FastSlow_2024_01_16_180855.jfr.gz",
        &[
            ("cpu", 1012),
            ("wall", 1012),
            ("alloc_sample_objects", 6),
            ("alloc_sample_bytes", 4_689_568),
        ],
        &[],
    );
}

#[test]
fn jdk_recorder_and_thread_park() {
    check(
        "jdk-two-chunks.jfr.gz",
        &[
            ("cpu", 886),
            ("alloc_sample_objects", 1764),
            ("alloc_sample_bytes", 2_340_881_264),
            ("lock_count", 82),
        ],
        &[("lock_duration", 2_076_975_838)],
    );
    check(
        "cpool-uint64-constant-index.jfr.gz",
        &[
            ("cpu", 88),
            ("block_count", 75),
            ("alloc_in_new_tlab_objects", 816),
            ("alloc_in_new_tlab_bytes", 1_100_877_184),
            ("alloc_outside_tlab_objects", 25),
            ("alloc_outside_tlab_bytes", 626_856),
            ("alloc_sample_objects", 785),
            ("alloc_sample_bytes", 1_075_719_472),
        ],
        &[("block_duration", 319_748_015_160)],
    );
}

#[test]
fn native_memory() {
    check(
        "nativemem.jfr.gz",
        &[("malloc_objects", 57), ("malloc_bytes", 34_861)],
        &[],
    );
}

#[test]
fn skipped_parts_are_counted_not_fatal() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/java-jdk.jfr"
    ))
    .unwrap();
    let meta = IngestMeta::default();
    let (_, skipped) = kiln_jfr::decode_jfr_counted(&body, None, &meta).unwrap();
    // A JDK recording is mostly events no profile is made from (GC, CPU load, …).
    assert!(skipped.unprofiled_events > 0, "{skipped:?}");
    // A damaged second chunk keeps the first.
    let mut two = body.clone();
    two.extend_from_slice(&body[..body.len() / 2]);
    let (ps, skipped) = kiln_jfr::decode_jfr_counted(&two, None, &meta).unwrap();
    assert_eq!(skipped.malformed_chunks, 1);
    assert!(ps.iter().any(|p| p.profile_type.name == "cpu"));
}

#[test]
fn frames_keep_their_line_numbers() {
    let ps = decode("cortex-dev-01__kafka-0__cpu__0.jfr.gz");
    let cpu = ps.iter().find(|p| p.profile_type.name == "cpu").unwrap();
    assert!(cpu.frames.iter().any(|f| f.line > 0));
    // One function at several lines is several frames with the same name.
    let mut lines: std::collections::BTreeMap<&str, std::collections::BTreeSet<u32>> =
        Default::default();
    for f in &cpu.frames {
        lines.entry(&f.function).or_default().insert(f.line);
    }
    assert!(lines.values().any(|l| l.len() > 1));
}

/// Recordings whose metadata was seen before reuse its type system (`parse.rs`, `cached_types`):
/// interleaving recordings of different JVMs and profilers, each decodes the same every time.
#[test]
fn recordings_decode_the_same_when_their_type_system_is_reused() {
    let files = ["example.jfr.gz", "wall.jfr.gz", "jdk-two-chunks.jfr.gz"];
    let first: Vec<Vec<Profile>> = files.iter().map(|f| decode(f)).collect();
    for round in 0..2 {
        for (f, expected) in files.iter().zip(&first) {
            assert!(
                decode(f) == *expected,
                "{f} decoded differently in round {round}"
            );
        }
    }
    assert!(first.iter().all(|ps| !ps.is_empty()));
}
