//! What the native plugin boundary costs: the perf-script decoder called directly (as a built-in
//! decoder is) against the same decoder called the way the daemon calls a loaded library —
//! through the entry descriptor's `call`, with the request and the profiles prost-encoded.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_perf_script::PerfScriptDecoder;
use kiln_plugin_api::abi::{self, wire, ByteBuf, FromConfig};
use kiln_plugin_api::{Decoder, IngestMeta, Labels};

/// `perf script` output of `samples` events: the fixture's events repeated with fresh times.
fn perf_script(samples: usize) -> Vec<u8> {
    let fixture = include_str!("../testdata/perf-script.txt");
    let events: Vec<&str> = fixture
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    let mut out = String::new();
    for i in 0..samples {
        let event = events[i % events.len()];
        let (header, stack) = event.split_once('\n').unwrap();
        // Replace the timestamp so every event is distinct, as in a real recording.
        let mut fields: Vec<String> = header.split_whitespace().map(String::from).collect();
        fields[3] = format!("{}.{:06}:", 81234 + i / 1000, i % 1000 * 1000);
        out.push_str(&fields.join(" "));
        out.push('\n');
        out.push_str(stack.trim_end_matches('\n'));
        out.push_str("\n\n");
    }
    out.into_bytes()
}

/// Decodes the way the daemon's native host does.
fn decode_through_abi(
    descriptor: &abi::Descriptor,
    instance: *mut std::ffi::c_void,
    body: &[u8],
    meta: &IngestMeta,
) -> Vec<kiln_plugin_api::Profile> {
    let request = prost::Message::encode_to_vec(&wire::DecodeRequest::new(body, meta));
    let mut out = ByteBuf::empty();
    let status = unsafe { (descriptor.call)(instance, request.as_ptr(), request.len(), &mut out) };
    let bytes = unsafe { out.as_slice() }.to_vec();
    unsafe { (descriptor.free)(out) };
    assert_eq!(
        status,
        abi::STATUS_OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    wire::decode_profiles(&bytes).unwrap()
}

fn bench(c: &mut Criterion) {
    let meta = IngestMeta {
        app: "bench".into(),
        labels: Labels::from_pairs([("service_name", "bench")]),
        ..Default::default()
    };
    let direct = PerfScriptDecoder::from_config("{}").unwrap();
    let descriptor = unsafe { &*kiln_perf_script::kiln_plugin_entry() };
    let mut instance = std::ptr::null_mut();
    let mut err = ByteBuf::empty();
    let status = unsafe { (descriptor.create)(b"{}".as_ptr(), 2, &mut instance, &mut err) };
    assert_eq!(status, abi::STATUS_OK);

    let mut g = c.benchmark_group("perf-script");
    g.throughput(Throughput::Elements(1));
    for samples in [100, 1_000] {
        let body = perf_script(samples);
        let expected = direct.decode(&body, &meta).unwrap();
        let through_abi = decode_through_abi(descriptor, instance, &body, &meta);
        assert_eq!(through_abi[0].total(), expected[0].total());
        g.bench_function(format!("direct, {samples} samples"), |b| {
            b.iter(|| direct.decode(&body, &meta).unwrap())
        });
        g.bench_function(format!("through the C ABI, {samples} samples"), |b| {
            b.iter(|| decode_through_abi(descriptor, instance, &body, &meta))
        });
    }
    g.finish();
    unsafe { (descriptor.destroy)(instance) };
}

criterion_group!(benches, bench);
criterion_main!(benches);
