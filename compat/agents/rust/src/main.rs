//! A workload profiled by the official Pyroscope Rust crate, pointed at Kiln.

use std::time::{Duration, Instant};

use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;
use sha2::{Digest, Sha256};

#[inline(never)]
fn pyroscope_rust_burn(d: Duration) {
    let end = Instant::now() + d;
    let mut data = vec![0u8; 4096];
    while Instant::now() < end {
        let s = Sha256::digest(&data);
        data[0] = s[0];
    }
    std::hint::black_box(&data);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (server, seconds): (&str, u64) = (&args[1], args[2].parse()?);
    let backend = pprof_backend(PprofConfig::default(), BackendConfig::default());
    let mut builder =
        PyroscopeAgentBuilder::new(server, "agent-rust", 100, "pyroscope-rs", "2.1", backend)
            .tags([("agent", "pyroscope-rs")].to_vec());
    // The API key as the Basic password; no credential without KILN_AGENT_KEY.
    if let Ok(key) = std::env::var("KILN_AGENT_KEY") {
        builder = builder.basic_auth("agent", key);
    }
    let agent = builder.build()?;
    let running = agent.start()?;
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        pyroscope_rust_burn(Duration::from_millis(100));
    }
    let ready = running.stop()?;
    ready.shutdown();
    Ok(())
}
