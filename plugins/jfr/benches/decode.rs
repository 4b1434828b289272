//! Decoding the JDK recording in `testdata/` (347 KB, one chunk) and a 1 MB recording made of
//! three copies of it back to back (three chunks).

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
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
