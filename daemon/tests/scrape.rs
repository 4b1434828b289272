//! Pull mode end to end: the daemon scrapes a real Go program serving `net/http/pprof`, picks
//! up a target written to a `file_sd` file while it runs, marks broken targets down with the
//! cause, and stores cumulative profiles as deltas between scrapes.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{enc, Daemon};
use kiln_pprof::proto;
use prost::Message;
use serde_json::Value;

const HOT: &str = "main.kilnScrapeHotLoop";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Builds the Go target program into `dir`.
fn build_go_target(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scrape-target");
    let bin = dir.join("scrape-target");
    let out = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&bin)
        .arg(".")
        .current_dir(&src)
        .output()
        .expect("Go must be installed to build the scrape target");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

/// Starts the Go target program on `addrs`.
fn start_go_target(bin: &Path, addrs: &[String]) -> Kill {
    let child = Command::new(bin)
        .arg("-addrs")
        .arg(addrs.join(","))
        .spawn()
        .unwrap();
    let k = Kill(child);
    for a in addrs {
        wait_until(Duration::from_secs(30), "the Go target to listen", || {
            std::net::TcpStream::connect(a).is_ok()
        });
    }
    k
}

fn wait_until(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A stub HTTP server on a free port answering every request with what `respond` returns
/// (status, body) for the n-th request; `None` never answers (the connection hangs open).
fn stub(
    respond: impl Fn(usize) -> Option<(u16, Vec<u8>)> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let n = count.fetch_add(1, Ordering::SeqCst);
            match respond(n) {
                Some((status, body)) => {
                    // A redirect points back at the same path: a loop.
                    let location = if (300..400).contains(&status) {
                        "Location: /debug/pprof/goroutine\r\n"
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        "HTTP/1.1 {status} X\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(&body);
                }
                None => held.push(s),
            }
        }
    });
    (addr, served)
}

/// A heap profile whose one stack has allocated `alloc` objects in total.
fn heap_profile(alloc: i64) -> Vec<u8> {
    let strings: Vec<String> = [
        "",
        "alloc_objects",
        "count",
        "alloc_space",
        "bytes",
        "inuse_objects",
        "inuse_space",
        "main.kilnCumulativeAlloc",
        "space",
    ]
    .map(String::from)
    .to_vec();
    let vt = |t, u| proto::ValueType { r#type: t, unit: u };
    proto::Profile {
        sample_type: vec![vt(1, 2), vt(3, 4), vt(5, 2), vt(6, 4)],
        sample: vec![proto::Sample {
            location_id: vec![1],
            value: vec![alloc, alloc * 64, 7, 7 * 64],
            label: vec![],
        }],
        location: vec![proto::Location {
            id: 1,
            line: vec![proto::Line {
                function_id: 1,
                ..Default::default()
            }],
            ..Default::default()
        }],
        function: vec![proto::Function {
            id: 1,
            name: 7,
            ..Default::default()
        }],
        string_table: strings,
        period_type: Some(vt(8, 4)),
        period: 512 * 1024,
        ..Default::default()
    }
    .encode_to_vec()
}

fn targets(d: &Daemon) -> Vec<Value> {
    d.get_json("/api/targets")["targets"]
        .as_array()
        .unwrap()
        .clone()
}

fn target_at(d: &Daemon, addr: &str) -> Option<Value> {
    targets(d)
        .into_iter()
        .find(|t| t["labels"]["instance"] == addr)
}

fn function_self(d: &Daemon, query: &str, name: &str) -> Option<i64> {
    let r = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc(query)
    ));
    r["functions"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == name)
        .and_then(|f| f["self"].as_i64())
}

#[test]
fn scrapes_go_pprof_targets_and_reports_their_health() {
    let dir = tempfile::tempdir().unwrap();
    let (static_addr, sd_addr) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    // Two processes: a Go program runs one CPU profile at a time.
    let bin = build_go_target(dir.path());
    let _go = start_go_target(&bin, std::slice::from_ref(&static_addr));
    let _go_sd = start_go_target(&bin, std::slice::from_ref(&sd_addr));

    let (hang, _) = stub(|_| None);
    let (fail, _) = stub(|_| Some((500, b"boom: profiling disabled".to_vec())));
    let (garbage, _) = stub(|_| Some((200, b"<html><body>not a profile</body></html>".to_vec())));
    let (redirect_loop, _) = stub(|_| Some((302, Vec::new())));
    // Past server.max_body_bytes (set to 4 MiB below): refused, not buffered.
    let (huge, _) = stub(|_| Some((200, vec![b'x'; 5 << 20])));
    // Cumulative totals that grow as n², so stored totals and stored deltas differ.
    let frozen = Arc::new(AtomicBool::new(false));
    let last_value = Arc::new(AtomicUsize::new(0));
    let (f, lv) = (frozen.clone(), last_value.clone());
    let (heap, heap_served) = stub(move |n| {
        if f.load(Ordering::SeqCst) {
            return Some((503, b"frozen".to_vec()));
        }
        let v = 100 * (n as i64 + 1).pow(2);
        lv.store(v as usize, Ordering::SeqCst);
        Some((200, heap_profile(v)))
    });

    let sd_dir = dir.path().join("sd");
    std::fs::create_dir(&sd_dir).unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
max_body_bytes = 4194304

[[scrape_configs]]
job_name = "api"
scrape_interval = "2s"
scrape_timeout = "5s"
profiles = ["cpu", "heap", "goroutine"]
[[scrape_configs.static_configs]]
targets = ["{static_addr}"]
labels = {{ env = "prod" }}
[[scrape_configs.file_sd_configs]]
files = ["{sd}/*.json"]
refresh_interval = "300ms"

[[scrape_configs]]
job_name = "broken"
scrape_interval = "1s"
scrape_timeout = "1s"
profiles = ["goroutine"]
[[scrape_configs.static_configs]]
targets = ["{hang}", "{fail}", "{garbage}", "{redirect_loop}", "{huge}"]

[[scrape_configs]]
job_name = "cumulative"
scrape_interval = "1s"
scrape_timeout = "2s"
profiles = ["heap"]
[[scrape_configs.static_configs]]
targets = ["{heap}"]
"#,
            sd = sd_dir.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);

    // The Go target: up, and its hot function under the job's and the target's labels.
    wait_until(
        Duration::from_secs(60),
        "the static Go target's CPU profile",
        || {
            function_self(
                &d,
                &format!(r#"api.cpu{{instance="{static_addr}",env="prod",job="api"}}"#),
                HOT,
            )
            .is_some_and(|v| v > 0)
        },
    );
    let t = target_at(&d, &static_addr).expect("static target listed");
    assert_eq!(t["job"], "api");
    assert_eq!(t["url"], format!("http://{static_addr}"));
    assert_eq!(t["labels"]["service_name"], "api");
    wait_until(
        Duration::from_secs(30),
        "the static target to be up",
        || target_at(&d, &static_addr).is_some_and(|t| t["health"] == "up"),
    );
    let t = target_at(&d, &static_addr).unwrap();
    assert!(t["last_scrape_ms"].as_i64().unwrap() > 0, "{t}");
    assert!(t["last_error"].is_null(), "{t}");
    // Heap (in-use) and goroutines of the Go target were stored too.
    for app in ["api.inuse_space", "api.goroutines"] {
        wait_until(Duration::from_secs(30), app, || {
            d.get_json("/api/apps")
                .to_string()
                .contains(&format!("\"{app}\""))
        });
    }

    // A target written to a file_sd file while the daemon runs is scraped.
    assert!(target_at(&d, &sd_addr).is_none());
    std::fs::write(
        sd_dir.join("more.json"),
        format!(r#"[{{"targets": ["{sd_addr}"], "labels": {{"team": "sd"}}}}]"#),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(60),
        "the file_sd target's CPU profile",
        || {
            function_self(
                &d,
                &format!(r#"api.cpu{{instance="{sd_addr}",team="sd"}}"#),
                HOT,
            )
            .is_some_and(|v| v > 0)
        },
    );

    // Broken targets are down with their cause; the good ones stay up.
    wait_until(
        Duration::from_secs(30),
        "the broken targets to be down",
        || {
            [&hang, &fail, &garbage, &redirect_loop, &huge]
                .iter()
                .all(|a| target_at(&d, a).is_some_and(|t| t["health"] == "down"))
        },
    );
    let cause = |a: &str| {
        target_at(&d, a).unwrap()["last_error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(cause(&hang).contains("timed out"), "{}", cause(&hang));
    assert!(cause(&fail).contains("500"), "{}", cause(&fail));
    assert!(cause(&fail).contains("boom"), "{}", cause(&fail));
    assert!(
        cause(&garbage).contains("not a pprof profile"),
        "{}",
        cause(&garbage)
    );
    assert!(
        cause(&redirect_loop).contains("redirect"),
        "{}",
        cause(&redirect_loop)
    );
    assert!(cause(&huge).contains("exceeds"), "{}", cause(&huge));
    for a in [&static_addr, &sd_addr] {
        let t = target_at(&d, a).unwrap();
        assert_eq!(t["health"], "up", "{t}");
    }

    // Cumulative: after some scrapes, what is stored is the growth since the first scrape
    // (the baseline), not the sum of the running totals.
    wait_until(Duration::from_secs(30), "four heap scrapes", || {
        heap_served.load(Ordering::SeqCst) >= 4
    });
    frozen.store(true, Ordering::SeqCst);
    wait_until(
        Duration::from_secs(30),
        "the frozen heap target to be down",
        || target_at(&d, &heap).is_some_and(|t| t["health"] == "down"),
    );
    let last = last_value.load(Ordering::SeqCst) as i64;
    let stored = function_self(&d, "cumulative.alloc_objects{}", "main.kilnCumulativeAlloc")
        .expect("alloc_objects stored");
    assert_eq!(stored, last - 100, "deltas add up to last − first");

    // Scrape metrics by job and outcome.
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains(r#"kiln_scrapes_total{job="api",outcome="success"}"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kiln_scrapes_total{job="broken",outcome="timeout"}"#));
    assert!(metrics.contains("kiln_scrape_duration_seconds_bucket"));
}

#[test]
fn bad_scrape_configs_stop_startup_naming_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (body, expect) in [
        (
            "[[scrape_configs]]\njob_name = \"a\"\nscrape_interval = \"soon\"\n[[scrape_configs.static_configs]]\ntargets = [\"h:1\"]\n",
            "scrape_interval",
        ),
        (
            "[[scrape_configs]]\njob_name = \"a\"\n[[scrape_configs.static_configs]]\ntargets = []\n",
            "key `targets`: must not be empty",
        ),
        (
            "[[scrape_configs]]\njob_name = \"a\"\nprofiles = [\"cpu\", \"bogus\"]\n[[scrape_configs.static_configs]]\ntargets = [\"h:1\"]\n",
            "unknown profile \"bogus\"",
        ),
        (
            "[[scrape_configs]]\njob_name = \"a\"\n",
            "no targets",
        ),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, body).unwrap();
        let (ok, out) = common::kiln(&["validate", "--config", path.to_str().unwrap()]);
        assert!(!ok, "{body}");
        assert!(out.contains("bad.toml"), "{out}");
        assert!(out.contains(expect), "{expect:?} not in {out}");
        assert!(out.contains("scrape_configs"), "{out}");
    }
}
