//! The Rust example's workload (examples/rust-app) profiled by the official Pyroscope crate
//! instead of kiln-sdk: the official agent's side of `OFFICIAL=1 sdk/rust/bench-overhead.sh`.
//!
//! `hash_loop` and `alloc_loop` are the example's own (`examples/rust-app/src/workload.rs`,
//! compiled in here); the loop around them, the flags, the static tag and the per-iteration
//! `path=hash` tag are the same, set through the official crate's API (100 Hz, 10 s upload
//! interval).

use std::time::{Duration, Instant};

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;

#[path = "../../../../examples/rust-app/src/workload.rs"]
mod workload;

use workload::{alloc_loop, hash_loop};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The example's main loop; `tagged` runs `hash_loop` under the tag `path=hash`.
fn run_workload(duration: Duration, tagged: &dyn Fn(&dyn Fn())) {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tagged(&|| hash_loop(Duration::from_millis(70)));
        alloc_loop(Duration::from_millis(30));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    let server = arg(&args, "--server").unwrap_or_else(|| "http://127.0.0.1:4040".into());
    let duration = Duration::from_secs(arg(&args, "--duration").map_or(Ok(30), |s| s.parse())?);
    let interval =
        Duration::from_secs(arg(&args, "--upload-interval").map_or(Ok(10), |s| s.parse())?);
    let tag = arg(&args, "--tag").unwrap_or_else(|| "env=demo".into());
    let (k, v) = tag.split_once('=').ok_or("--tag KEY=VALUE")?;
    if args.iter().any(|a| a == "--no-profiling") {
        run_workload(duration, &|f| f());
        return Ok(());
    }
    let backend = pprof_backend(PprofConfig { sample_rate: 100 }, BackendConfig::default());
    let agent = PyroscopeAgentBuilder::new(
        server,
        "rust-app-official",
        100,
        "pyroscope-rs",
        "2.1.5",
        backend,
    )
    .tags(vec![(k, v)])
    .upload_interval(interval)
    .build()?;
    let running = agent.start()?;
    let (add_tag, remove_tag) = running.tag_wrapper();
    run_workload(duration, &|f| {
        // A failed tag change only loses the tag: the workload runs all the same.
        let _ = add_tag("path".into(), "hash".into());
        f();
        let _ = remove_tag("path".into(), "hash".into());
    });
    running.stop()?.shutdown();
    Ok(())
}
