//! What retention by size does to the data directory, on the Go CPU fixture: fills `HOURS` of a
//! profile every 10 s (a profiled core), then measures what `usage` costs, bounds storage at half
//! of what it holds, and follows the accounted bytes and the files (`du`) as ingest goes on.
//!
//! ```text
//! cargo run --release -p kiln-storage-sled --example size-retention -- 24   # a day (BENCHMARKS.md)
//! cargo run -p kiln-storage-sled --example size-retention -- 1              # a quick check
//! ```

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use kiln_plugin_api::{Decoder, IngestMeta, Labels, Profile, Tenant};
use kiln_storage_sled::{SledConfig, SledStorage};

const NS: i64 = 1_000_000_000;

fn cpu_profile() -> Profile {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/go-cpu.pb.gz"
    ))
    .unwrap();
    let meta = IngestMeta {
        app: "day".into(),
        labels: Labels::from_pairs([("service_name", "day")]),
        ..Default::default()
    };
    kiln_pprof::PprofDecoder::default()
        .decode(&body, &meta)
        .unwrap()
        .into_iter()
        .find(|p| p.profile_type.name == "cpu")
        .unwrap()
}

/// Bytes of the files under `dir`: the blocks they occupy, as `du` counts (the finest level's
/// journal is preallocated sparsely).
fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path) -> u64 {
        std::fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| match e.metadata() {
                        Ok(m) if m.is_dir() => walk(&e.path()),
                        Ok(m) => m.blocks() * 512,
                        Err(_) => 0,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(dir)
}

/// Writes a profile every 10 s over `[from, to)`, flushing every 1000.
fn fill(storage: &SledStorage, base: &Profile, from: i64, to: i64) {
    let mut batch = Vec::with_capacity(1000);
    for t in (from..to).step_by(10) {
        let mut p = base.clone();
        p.start_ns = t * NS;
        p.end_ns = (t + 10) * NS;
        batch.push(p);
        if batch.len() == 1000 {
            storage
                .write_blocking(&Tenant::default(), std::mem::take(&mut batch))
                .unwrap();
            storage.flush_blocking().unwrap();
        }
    }
    storage.write_blocking(&Tenant::default(), batch).unwrap();
    storage.flush_blocking().unwrap();
}

fn main() {
    let hours: i64 = std::env::args()
        .nth(1)
        .map(|h| h.parse().expect("HOURS is a number"))
        .unwrap_or(24);
    // Steps of a tenth of the span written after the bound is first enforced (past 10, the
    // times go beyond now).
    let steps: i64 = std::env::args()
        .nth(2)
        .map(|n| n.parse().expect("STEPS is a number"))
        .unwrap_or(10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage = SledStorage::open(&SledConfig::new(dir.path())).unwrap();
    let base = cpu_profile();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = now - 2 * hours * 3600;
    let t = Instant::now();
    fill(&storage, &base, start, start + hours * 3600);
    println!(
        "filled {hours} h ({} profiles) in {:.1} s",
        hours * 360,
        t.elapsed().as_secs_f64()
    );
    use kiln_plugin_api::Storage;
    let t = Instant::now();
    let usage = rt.block_on(storage.usage()).unwrap();
    let scan = t.elapsed();
    let chunks: u64 = usage.entries.iter().map(|e| e.chunks).sum();
    println!(
        "usage: {} chunks, {} bytes accounted, {} bytes of files (du {}), scan {:.1} ms",
        chunks,
        usage.total_bytes,
        usage.disk_bytes.unwrap_or(0),
        du(dir.path()),
        scan.as_secs_f64() * 1e3
    );
    let max = usage.total_bytes / 2;
    let t = Instant::now();
    let report = rt
        .block_on(storage.enforce_size(max, max - max / 10))
        .unwrap();
    storage.flush_blocking().unwrap();
    let after = rt.block_on(storage.usage()).unwrap();
    println!(
        "bound {max}: deleted {} chunks in {:.1} ms; accounted {} bytes, files {} (du {})",
        report.chunks_deleted,
        t.elapsed().as_secs_f64() * 1e3,
        after.total_bytes,
        after.disk_bytes.unwrap_or(0),
        du(dir.path())
    );
    // Ingest goes on (the next hours, a tenth of the span at a time) with the bound enforced
    // after each step, as the daemon's retention loop does.
    let step = hours * 360;
    for i in 0..steps {
        let from = start + hours * 3600 + i * step;
        fill(&storage, &base, from, from + step);
        rt.block_on(storage.enforce_size(max, max - max / 10))
            .unwrap();
        storage.flush_blocking().unwrap();
        let u = rt.block_on(storage.usage()).unwrap();
        println!(
            "after {:>3} more minutes of data: accounted {} bytes, files {} (du {})",
            (i + 1) * step / 60,
            u.total_bytes,
            u.disk_bytes.unwrap_or(0),
            du(dir.path())
        );
    }
}
