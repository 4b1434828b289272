//! rust-app: burns CPU in `hash_loop` and allocates in `alloc_loop`, profiled by kiln-sdk.
//!
//! `cargo run -p rust-app -- --server http://127.0.0.1:4040 --duration 30`
//! (TLS: `--ca-file CA.pem`, and `--client-cert C.pem --client-key K.pem` for mutual TLS)

use std::time::{Duration, Instant};

mod workload;

use workload::{alloc_loop, hash_loop};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
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
    let running = if args.iter().any(|a| a == "--no-profiling") {
        None
    } else {
        let mut builder = kiln_sdk::Agent::builder(server, "rust-app")
            .tags([(k, v)])
            .upload_interval(interval);
        // An API key, when the daemon has auth on.
        if let Some(token) =
            arg(&args, "--auth-token").or_else(|| std::env::var("KILN_AUTH_TOKEN").ok())
        {
            builder = builder.auth_token(token);
        }
        // TLS: a private CA for an https server, a client certificate for mutual TLS.
        if let Some(ca) = arg(&args, "--ca-file") {
            builder = builder.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (arg(&args, "--client-cert"), arg(&args, "--client-key")) {
            builder = builder.client_cert(cert, key);
        }
        Some(builder.build()?.start()?)
    };
    let end = Instant::now() + duration;
    while Instant::now() < end {
        {
            let _tags = kiln_sdk::tag_wrapper([("path", "hash")]);
            hash_loop(Duration::from_millis(70));
        }
        alloc_loop(Duration::from_millis(30));
    }
    if let Some(r) = running {
        r.stop()?;
    }
    Ok(())
}
