//! Decode throughput of a real Go CPU profile (gzip'd, as agents send it).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_plugin_api::{Decoder, IngestMeta, Labels};
use kiln_pprof::PprofDecoder;

fn bench(c: &mut Criterion) {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/go-cpu.pb.gz"
    ))
    .unwrap();
    let meta = IngestMeta {
        app: "bench".into(),
        labels: Labels::from_pairs([("service_name", "bench")]),
        ..Default::default()
    };
    let decoder = PprofDecoder::default();
    let mut g = c.benchmark_group("pprof");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode go-cpu.pb.gz", |b| {
        b.iter(|| decoder.decode(&body, &meta).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
