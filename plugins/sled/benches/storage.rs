//! Storage throughput and query latency on a real Go CPU profile.
//!
//! * `write`: one decoded profile into one of 100 series, flushed every 100 writes.
//! * `write one Go CPU push`: both sample types of the profile (`samples` and `cpu` time, as a
//!   push decodes to), into one of 100 series, flushed every 100 writes.
//! * `select_merge 24h` / `30d`: one service with a push every 10 s for 24 hours (8,640
//!   profiles) / 30 days (259,200 profiles), merged over the whole range: its `samples` type
//!   (stored as a reference to the CPU time column of the same chunk) and, for 24 h, its CPU
//!   time.

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile, Query, Selector, Tenant};
use kiln_storage_sled::{SledConfig, SledStorage};

const NS: i64 = 1_000_000_000;

fn cpu_profile() -> Profile {
    cpu_push()
        .into_iter()
        .find(|p| p.profile_type.name == "cpu")
        .unwrap()
}

/// Both sample types of the Go CPU fixture, as its push decodes to.
fn cpu_push() -> Vec<Profile> {
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
    kiln_pprof::PprofDecoder::default()
        .decode(&body, &meta)
        .unwrap()
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A storage holding one profile every 10 s over `hours`, ending now.
fn filled(hours: i64) -> (tempfile::TempDir, SledStorage, i64) {
    let dir = tempfile::tempdir().unwrap();
    let storage = SledStorage::open(&SledConfig::new(dir.path())).unwrap();
    let base = cpu_push();
    let now = now_s();
    let start = now - hours * 3600;
    let mut batch = Vec::with_capacity(2000);
    for t in (start..now).step_by(10) {
        for p in &base {
            let mut p = p.clone();
            p.start_ns = t * NS;
            p.end_ns = (t + 10) * NS;
            batch.push(p);
        }
        if batch.len() == 2000 {
            storage
                .write_blocking(&Tenant::default(), std::mem::take(&mut batch))
                .unwrap();
            storage.flush_blocking().unwrap();
        }
    }
    storage.write_blocking(&Tenant::default(), batch).unwrap();
    storage.flush_blocking().unwrap();
    (dir, storage, now)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sled");
    {
        let dir = tempfile::tempdir().unwrap();
        let storage = SledStorage::open(&SledConfig::new(dir.path())).unwrap();
        let base = cpu_profile();
        let mut i = 0u64;
        let t0 = now_s();
        g.throughput(Throughput::Elements(1));
        g.bench_function("write one profile (100 series)", |b| {
            b.iter(|| {
                let mut p = base.clone();
                p.labels.insert("pod", format!("pod-{}", i % 100));
                p.start_ns = (t0 + (i / 100) as i64 * 10) * NS;
                storage.write_blocking(&Tenant::default(), vec![p]).unwrap();
                i += 1;
                if i.is_multiple_of(100) {
                    storage.flush_blocking().unwrap();
                }
            })
        });
    }
    {
        let dir = tempfile::tempdir().unwrap();
        let storage = SledStorage::open(&SledConfig::new(dir.path())).unwrap();
        let push = cpu_push();
        assert_eq!(push.len(), 2);
        let mut i = 0u64;
        let t0 = now_s();
        g.throughput(Throughput::Elements(1));
        g.bench_function("write one Go CPU push (both types, 100 series)", |b| {
            b.iter(|| {
                let pod = format!("pod-{}", i % 100);
                let start_ns = (t0 + (i / 100) as i64 * 10) * NS;
                let profiles = push
                    .iter()
                    .map(|p| {
                        let mut p = p.clone();
                        p.labels.insert("pod", pod.clone());
                        p.start_ns = start_ns;
                        p
                    })
                    .collect();
                storage
                    .write_blocking(&Tenant::default(), profiles)
                    .unwrap();
                i += 1;
                if i.is_multiple_of(100) {
                    storage.flush_blocking().unwrap();
                }
            })
        });
    }
    for (label, hours) in [("24h", 24), ("30d", 24 * 30)] {
        let (_dir, storage, now) = filled(hours);
        let types: &[&str] = if hours == 24 {
            &["cpu", "cpu_nanoseconds"]
        } else {
            &["cpu"]
        };
        for ty in types {
            let q = Query {
                selector: Selector::parse(&format!("bench.{ty}")).unwrap(),
                start_ns: (now - hours * 3600) * NS,
                end_ns: now * NS,
            };
            let expected = storage
                .select_merge_blocking(&Tenant::default(), &q)
                .unwrap();
            assert_eq!(expected.profiles as i64, hours * 360);
            let name = match *ty {
                "cpu" => format!("select_merge {label}"),
                _ => format!("select_merge {label} {ty}"),
            };
            g.throughput(Throughput::Elements(1));
            g.bench_function(name, |b| {
                b.iter(|| {
                    storage
                        .select_merge_blocking(&Tenant::default(), &q)
                        .unwrap()
                })
            });
        }
        eprintln!("{label}: {} bytes on disk", storage.size_on_disk());
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
