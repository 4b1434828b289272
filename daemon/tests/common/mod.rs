//! A real `kiln` daemon on a free loopback port, for end-to-end tests.

#![allow(dead_code)]

pub mod conformance;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Daemon {
    pub url: String,
    pub data: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Where the daemon's log goes (inherited stderr when `None`).
    pub log: Option<PathBuf>,
    /// Start again on the port of the previous start (for a client configured with the URL).
    pub keep_port: bool,
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Daemon {
    /// Starts a daemon with a fresh data directory under `dir`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut d = Self::start_later(dir, extra);
        d.spawn();
        d
    }

    /// A daemon to be started with [`Daemon::launch`] or [`Daemon::spawn`].
    pub fn start_later(dir: &Path, extra: &[&str]) -> Self {
        Self {
            url: String::new(),
            data: dir.join("data"),
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: None,
            keep_port: false,
        }
    }

    /// Starts the process without waiting for it to listen.
    pub fn launch(&mut self) {
        let port = match self.url.rsplit_once(':') {
            Some((_, p)) if self.keep_port => p.parse().expect("a port"),
            _ => free_port(),
        };
        self.url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.arg("server")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--storage-path")
            .arg(&self.data)
            .args(["--log-level", "warn"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(match &self.log {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .unwrap(),
                ),
                None => Stdio::inherit(),
            });
        if !self.extra.iter().any(|a| a == "--self-profiling") {
            cmd.args(["--self-profiling", "false"]);
        }
        if !self.extra.iter().any(|a| a == "--config") {
            cmd.args(["--config", "/dev/null"]);
        }
        self.child = Some(cmd.spawn().expect("starting kiln"));
    }

    /// Starts the daemon and waits until it answers `/healthz`.
    pub fn spawn(&mut self) {
        self.launch();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = agent().get(format!("{}/healthz", self.url)).call() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("kiln exited during startup: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "kiln did not become healthy at {}",
                self.url
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops with SIGTERM (the daemon flushes) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "kiln did not stop on SIGTERM");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9`: no flush, no shutdown.
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// POSTs `body` to `/ingest?query`, returning status and body text.
    pub fn ingest(&self, query: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let mut r = agent()
            .post(format!("{}/ingest?{query}", self.url))
            .header("Content-Type", content_type)
            .send(body)
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    pub fn get(&self, path_and_query: &str) -> (u16, String) {
        let mut r = agent()
            .get(format!("{}{path_and_query}", self.url))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    }

    /// The value of the first `/metrics` line starting with `line_start` (a name, with its
    /// labels if any).
    pub fn metric(&self, line_start: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    pub fn get_bytes(&self, path_and_query: &str) -> (u16, Vec<u8>) {
        let mut r = agent()
            .get(format!("{}{path_and_query}", self.url))
            .call()
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_vec().unwrap())
    }

    pub fn get_json(&self, path_and_query: &str) -> serde_json::Value {
        let (status, body) = self.get(path_and_query);
        assert_eq!(status, 200, "GET {path_and_query}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// URL-encodes a query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A multipart body like the Go agent sends: file parts `profile` and optional config.
pub fn multipart(profile: &[u8], sample_type_config: Option<&str>) -> (Vec<u8>, String) {
    let boundary = "kiln-test-boundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
    body.extend_from_slice(profile);
    body.extend_from_slice(b"\r\n");
    if let Some(c) = sample_type_config {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"sample_type_config\"; filename=\"sample_type_config.json\"\r\nContent-Type: application/octet-stream\r\n\r\n{c}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (body, format!("multipart/form-data; boundary={boundary}"))
}

/// `(function → (flat, cum))` as `go tool pprof -top` reports it for one sample index.
pub fn go_pprof_top(
    file: &Path,
    sample_index: &str,
) -> std::collections::BTreeMap<String, (i64, i64)> {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-nodecount=100000",
            "-nodefraction=0",
            "-edgefraction=0",
            "-unit=minimum",
        ])
        .arg(format!("-sample_index={sample_index}"))
        .arg(file)
        .output()
        .expect("`go tool pprof` must be installed to cross-check profiles");
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = std::collections::BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("flat") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 6 {
            continue;
        }
        let num = |s: &str| -> i64 {
            let digits: String = s
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            let unit = &s[digits.len()..];
            let v: f64 = digits.parse().unwrap();
            let scale = match unit {
                "" | "ns" | "B" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "kB" => 1024.0,
                "MB" => 1024.0 * 1024.0,
                other => panic!("unit {other:?} in {s:?}"),
            };
            (v * scale).round() as i64
        };
        let name = cols[5..].join(" ");
        let name = name.trim_end_matches(" (inline)").to_string();
        map.insert(name, (num(cols[0]), num(cols[3])));
    }
    assert!(
        !map.is_empty(),
        "no rows parsed from go tool pprof output:\n{text}"
    );
    map
}

/// Runs the `kiln` CLI; returns whether it succeeded and its stdout and stderr.
pub fn kiln(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Writes `kiln.toml` under `dir`: the plugins directory, then `rest`.
pub fn config(dir: &Path, plugins: &Path, rest: &str) -> PathBuf {
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        format!("[server]\nplugins_dir = {plugins:?}\n{rest}"),
    )
    .unwrap();
    path
}
