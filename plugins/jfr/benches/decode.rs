//! Decoding the JDK recording in `testdata/` (347 KB, one chunk) and a 1 MB recording made of
//! three copies of it back to back (three chunks); and the largest recordings of the
//! conformance corpus (`compat/conformance/corpus`), gzip'd as agents send them.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_jfr::JfrDecoder;
use kiln_plugin_api::{Decoder, IngestMeta, Labels};

fn bench(c: &mut Criterion) {
    let one = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/java-jdk.jfr"
    ))
    .unwrap();
    let three: Vec<u8> = one.iter().chain(&one).chain(&one).copied().collect();
    let meta = IngestMeta {
        app: "bench".into(),
        labels: Labels::from_pairs([("service_name", "bench")]),
        ..Default::default()
    };
    let d = JfrDecoder::default();
    c.bench_function("jfr decode 347 KB", |b| {
        b.iter(|| d.decode(&one, &meta).unwrap())
    });
    c.bench_function("jfr decode 1 MB (3 chunks)", |b| {
        b.iter(|| d.decode(&three, &meta).unwrap())
    });
    for file in [
        // The largest of the corpus (694 KB decompressed, two chunks).
        "jdk-two-chunks.jfr.gz",
        // The largest third-party one (439 KB decompressed; async-profiler, several event kinds).
        "cpool-uint64-constant-index.jfr.gz",
    ] {
        let body = std::fs::read(format!(
            "{}/../../compat/conformance/corpus/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        c.bench_function(&format!("jfr decode corpus {file}"), |b| {
            b.iter(|| d.decode(&body, &meta).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
