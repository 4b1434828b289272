//! The example app against a real daemon with auth on: pushing with a writer key, its hot
//! function and tags come back through the API (read with a reader key); the same push without
//! a key is refused with 401.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn kiln_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("KILN_BIN") {
        return p.into();
    }
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/kiln");
    assert!(
        p.exists(),
        "no kiln binary: set KILN_BIN or run `cargo build -p kiln` ({} missing)",
        p.display()
    );
    p
}

/// The reader key of the daemon under test.
static READ_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn get_text(url: &str) -> String {
    let key = READ_KEY.get().expect("keys made");
    let mut r = ureq::get(url)
        .header("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap();
    r.body_mut().read_to_string().unwrap()
}

fn get(url: &str) -> serde_json::Value {
    serde_json::from_str(&get_text(url)).unwrap()
}

fn create_key(dir: &std::path::Path, role: &str) -> String {
    let out = Command::new(kiln_bin())
        .args(["admin", "apikey", "create", "--name", role, "--role", role])
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Requests the daemon refused for want of a credential.
fn unauthenticated(base: &str) -> f64 {
    get_text(&format!("{base}/metrics"))
        .lines()
        .filter(|l| {
            l.starts_with("kiln_auth_refused_total{") && l.contains("cause=\"unauthenticated\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The share of a flamegraph's samples under a function named `…::name`, and its sample count.
/// Levels hold `[x offset, total, self, name index]` per node.
fn share_of(render: &serde_json::Value, name: &str) -> (f64, i64) {
    let fb = &render["flamebearer"];
    let names = fb["names"].as_array().unwrap();
    let ticks = fb["numTicks"].as_i64().unwrap();
    let suffix = format!("::{name}");
    let mut under = 0;
    for level in fb["levels"].as_array().unwrap() {
        let level: Vec<i64> = level
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        for node in level.chunks_exact(4) {
            if names[node[3] as usize].as_str().unwrap().ends_with(&suffix) {
                under += node[1];
            }
        }
    }
    (under as f64 / ticks.max(1) as f64, ticks)
}

#[test]
fn example_profiles_reach_the_daemon() {
    let dir = std::env::temp_dir().join(format!("kiln-rust-e2e-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let write_key = create_key(&dir, "writer");
    READ_KEY.set(create_key(&dir, "reader")).unwrap();
    let mut daemon = Command::new(kiln_bin())
        .args([
            "server",
            "--config",
            "/dev/null",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--self-profiling",
            "false",
            "--log-level",
            "warn",
        ])
        .arg("--storage-path")
        .arg(&dir)
        .env("KILN_AUTH_ENABLED", "true")
        .env(
            "KILN_ADMIN_PASSWORD",
            format!("unused-{}", std::process::id()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ureq::get(format!("{base}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new(env!("CARGO_BIN_EXE_rust-app"))
        .args([
            "--server",
            &base,
            "--duration",
            "8",
            "--upload-interval",
            "2",
            "--tag",
            "env=e2e",
            "--auth-token",
            &write_key,
        ])
        .env_remove("KILN_AUTH_TOKEN")
        .status()
        .unwrap();
    let result = std::panic::catch_unwind(|| {
        assert!(status.success());
        let render = |q: &str| {
            get(&format!(
                "{base}/render?query={}&from=now-10m&until=now%2B1m",
                enc(q)
            ))
        };
        let names = |q: &str| -> Vec<String> {
            render(q)["flamebearer"]["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        };
        let cpu = names(r#"rust-app.cpu{env="e2e"}"#);
        assert!(
            cpu.iter().any(|n| n.contains("hash_loop")),
            "hash_loop missing: {cpu:?}"
        );
        // The workload spends 70 % of each 100 ms in hash_loop (under the scoped tag) and 30 %
        // in alloc_loop: hash_loop must dominate, and all but the samples at the scope's edges
        // of the tagged series must be in it.
        let (share, ticks) = share_of(&render(r#"rust-app.cpu{env="e2e"}"#), "hash_loop");
        assert!(
            ticks >= 50,
            "{ticks} samples in 8 s of a busy program at 100 Hz"
        );
        assert!(share > 0.5, "hash_loop holds {share:.2} of {ticks} samples");
        let (alloc, _) = share_of(&render(r#"rust-app.cpu{env="e2e"}"#), "alloc_loop");
        assert!(alloc > 0.05 && alloc < share, "alloc_loop holds {alloc:.2}");
        let tagged = names(r#"rust-app.cpu{env="e2e",path="hash"}"#);
        assert!(
            tagged.iter().any(|n| n.contains("hash_loop")),
            "scoped tag path=hash: {tagged:?}"
        );
        let (tagged_share, tagged_ticks) = share_of(
            &render(r#"rust-app.cpu{env="e2e",path="hash"}"#),
            "hash_loop",
        );
        assert!(
            tagged_share > 0.9,
            "hash_loop holds {tagged_share:.2} of the {tagged_ticks} samples tagged path=hash"
        );
        assert!(get(&format!("{base}/label-values?label=env"))
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "e2e"));
        // The same push without a key: refused.
        let before = unauthenticated(&base);
        let _ = Command::new(env!("CARGO_BIN_EXE_rust-app"))
            .args([
                "--server",
                &base,
                "--duration",
                "3",
                "--upload-interval",
                "1",
            ])
            .args(["--tag", "env=nokey"])
            .env_remove("KILN_AUTH_TOKEN")
            .stderr(Stdio::null())
            .status();
        assert!(
            unauthenticated(&base) > before,
            "the push without a key was not refused"
        );
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
