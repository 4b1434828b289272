//! What a Wasm sink costs per profile: the `top-functions` example (examples/wasm-exporter-rust)
//! consuming decoded Go CPU profiles, JSON lines appended into a granted directory — the whole
//! host path the daemon takes (conversion to WIT records, the sandboxed call, the guest's work).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile, SinkExporter};
use kiln_pprof::PprofDecoder;
use kiln_wasm_host::{NoObserver, Sandbox, WasmPlugin};

/// Builds the example for wasm32-wasip2 (a no-op when up to date) and returns the component.
fn top_functions_component() -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = root.join("target/wasm-guests");
    let status = Command::new(env!("CARGO"))
        .current_dir(root.join("examples/wasm-exporter-rust"))
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--quiet",
            "--locked",
            "--release",
            "--target",
            "wasm32-wasip2",
        ])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building examples/wasm-exporter-rust failed"
    );
    target.join("wasm32-wasip2/release/kiln_top_functions.wasm")
}

fn bench(c: &mut Criterion) {
    let body =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/go-cpu.pb.gz"))
            .unwrap();
    let meta = IngestMeta {
        app: "bench".into(),
        labels: Labels::from_pairs([("service_name", "bench"), ("pod", "p-1")]),
        ..Default::default()
    };
    // Two profiles (samples and nanoseconds), as one /ingest of this file stores.
    let profiles = PprofDecoder::default().decode(&body, &meta).unwrap();

    let out = tempfile::tempdir().unwrap();
    let plugin = Arc::new(WasmPlugin::load(&top_functions_component()).unwrap());
    let sandbox = Sandbox {
        dir: Some(out.path().to_path_buf()),
        ..Sandbox::default()
    };
    let sink = plugin
        .instantiate(r#"{"top": 10}"#, sandbox, Arc::new(NoObserver))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let mut g = c.benchmark_group("wasm sink top-functions");
    g.throughput(Throughput::Elements(profiles.len() as u64));
    g.bench_function(
        format!(
            "one /ingest batch ({} profiles, go-cpu.pb.gz)",
            profiles.len()
        ),
        |b| {
            let refs: Vec<&Profile> = profiles.iter().collect();
            b.iter(|| rt.block_on(sink.export(&refs)).unwrap())
        },
    );
    // The host's half alone: interning one push's profiles into the instance's string table
    // and lists, as the daemon does when it queues the push.
    g.bench_function(
        format!("prepare one /ingest batch ({} profiles)", profiles.len()),
        |b| {
            let refs: Vec<&Profile> = profiles.iter().collect();
            b.iter(|| sink.prepare(&refs).unwrap())
        },
    );
    // Sinks that buffer across requests: the per-call costs (thread hop, file open) amortize.
    let batch: Vec<&Profile> = profiles.iter().cycle().take(64).collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("a batch of 64 profiles", |b| {
        b.iter(|| rt.block_on(sink.export(&batch)).unwrap())
    });
    g.finish();
    let written = std::fs::read_to_string(out.path().join("top-functions.jsonl")).unwrap();
    assert!(written.lines().count() >= profiles.len());
}

criterion_group!(benches, bench);
criterion_main!(benches);
