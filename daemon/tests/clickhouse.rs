//! `[storage] type = "clickhouse"` end to end: real daemons against a real clickhouse-server
//! started in a temporary directory on free loopback ports.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::conformance::{answers, ingest_fixture, recent_base};
use common::{agent, enc, testdata, Daemon};
use kiln_storage_clickhouse::test_server::TestServer;

/// A daemon on `server`'s database `database`, data (its write-ahead log) under `dir`.
fn daemon_on(server: &TestServer, database: &str, dir: &Path) -> Daemon {
    let cfg = write_config(server, database, dir, "");
    Daemon::start(dir, &["--config", cfg.to_str().unwrap()])
}

fn write_config(server: &TestServer, database: &str, dir: &Path, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("kiln.toml");
    std::fs::write(&path, format!("{}{extra}", server.storage_toml(database))).unwrap();
    path
}

/// Waits (at most 10 s) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delete_app(d: &Daemon, name: &str) {
    let r = agent()
        .delete(format!("{}/api/apps", d.url))
        .force_send_body()
        .send(format!(r#"{{"name":"{name}"}}"#))
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn two_daemons_on_one_database_answer_like_sled() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let sled = Daemon::start(&tmp.path().join("sled"), &[]);
    let a = daemon_on(&server, "shared", &tmp.path().join("a"));
    let b = daemon_on(&server, "shared", &tmp.path().join("b"));
    let base = recent_base();
    ingest_fixture(&sled, base);
    ingest_fixture(&a, base);

    let expected = answers(&sled, base);
    assert_eq!(expected[0]["numTicks"], 120, "the fixture reached sled");
    // Pushed to A, read from A, and from B once A has flushed (server.flush_interval = 1 s).
    assert_eq!(answers(&a, base), expected);
    eventually("B sees what A was pushed", || answers(&b, base) == expected);

    // A delete through B is seen by A.
    delete_app(&sled, "cart.cpu");
    delete_app(&b, "cart.cpu");
    let expected = answers(&sled, base);
    assert!(!expected.last().unwrap().to_string().contains("cart"));
    assert_eq!(answers(&a, base), expected);
    assert_eq!(answers(&b, base), expected);

    // A render of a long range reads coarse rows and says the same.
    let long = format!(
        "/render?query={}&from={}&until={}",
        enc("shop.cpu"),
        base - 30 * 86_400,
        base + 3600
    );
    let (s, l) = (sled.get_json(&long), b.get_json(&long));
    assert_eq!(s["flamebearer"], l["flamebearer"]);
}

/// A Go CPU pprof holds its samples twice, as counts and as CPU time (the counts times the
/// sampling period). On ClickHouse the CPU time's finest rows stand for the counts' rows; every
/// answer for either type, finest or coarse, is sled's, also after a push sent twice as a
/// retrying client would.
#[test]
fn a_go_cpu_pprofs_two_types_answer_like_sled() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let sled = Daemon::start(&tmp.path().join("sled"), &[]);
    let ch = daemon_on(&server, "pairs", &tmp.path().join("ch"));
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let base = recent_base();
    let push = |d: &Daemon, from: i64| {
        let (status, text) = d.ingest(
            &format!("name=goapp&format=pprof&from={from}&until={}", from + 10),
            "application/octet-stream",
            &body,
        );
        assert_eq!(status, 200, "{text}");
    };
    let standing = || {
        server.sql(
            "SELECT count(), sum(length(stacksMap.stack)) FROM pairs.fine WHERE sibling != 0 \
             FORMAT TSV",
        )
    };
    for d in [&sled, &ch] {
        push(d, base);
    }
    // The same push again once the first is in ClickHouse (another insert, so rows of two
    // inserts in one bucket), and one of the next bucket.
    eventually("the first push in ClickHouse", || {
        standing().trim() == "1\t0"
    });
    for d in [&sled, &ch] {
        push(d, base);
        push(d, base + 10);
    }
    let renders = |d: &Daemon| -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for ty in ["samples:count", "cpu:nanoseconds"] {
            let query = format!("process_cpu:{ty}:cpu:nanoseconds{{service_name=\"goapp\"}}");
            // The two 10 s buckets alone (the finest rows), an hour around them, 30 days.
            for (from, until) in [
                (base, base + 20),
                (base - 1800, base + 1800),
                (base - 30 * 86_400, base + 1000),
            ] {
                let r = d.get_json(&format!(
                    "/render?query={}&from={from}&until={until}",
                    enc(&query)
                ));
                out.push(r["flamebearer"].clone());
                out.push(r["timeline"].clone());
            }
        }
        out
    };
    let expected = renders(&sled);
    assert_eq!(expected[0]["numTicks"], 3 * 1017, "the counts reached sled");
    assert_eq!(
        expected[6]["numTicks"],
        3 * 10_170_000_000_i64,
        "and the CPU time"
    );
    eventually(
        "a row of each insert and bucket stands for its sibling's",
        || standing().trim() == "3\t0",
    );
    assert_eq!(renders(&ch), expected);
}

fn total_ticks(d: &Daemon, base: i64) -> i64 {
    let r = d.get_json(&format!(
        "/render?query={}&from={}&until={}",
        enc("spool.cpu"),
        base - 100,
        base + 1000
    ));
    r["flamebearer"]["numTicks"].as_i64().unwrap()
}

fn push(d: &Daemon, at: i64, value: i64) {
    let (s, m) = d.ingest(
        &format!("name=spool.cpu&format=folded&from={at}&until={}", at + 10),
        "text/plain",
        format!("main;work {value}\n").as_bytes(),
    );
    assert_eq!(s, 200, "{m}");
}

#[test]
fn clickhouse_down_spools_in_the_log_and_delivers_in_order() {
    let mut server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let mut d = daemon_on(&server, "spool", tmp.path());
    let base = recent_base();
    for i in 0..5 {
        push(&d, base + i * 10, 1);
    }
    assert_eq!(total_ticks(&d, base), 5);

    // Stopped mid-ingest: pushes are still acknowledged (the log keeps them), queries answer
    // 503 naming the cause, quickly.
    server.stop();
    for i in 5..15 {
        push(&d, base + i * 10, 1);
    }
    let started = Instant::now();
    let (status, body) = d.get(&format!(
        "/render?query={}&from={}&until={}",
        enc("spool.cpu"),
        base - 100,
        base + 1000
    ));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("ClickHouse"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(15), "no hang");

    // Back: everything is delivered.
    server.restart();
    eventually("the spool drains", || total_ticks(&d, base) == 15);

    // Killed with a non-empty spool: delivered after the restart.
    server.stop();
    for i in 15..20 {
        push(&d, base + i * 10, 1);
    }
    d.crash();
    server.restart();
    d.spawn();
    assert_eq!(
        total_ticks(&d, base),
        20,
        "nothing acknowledged is lost, nothing twice"
    );
}

/// Starts `kiln server` on `cfg` expecting it to fail; returns what it printed.
fn failed_start(cfg: &Path, dir: &Path) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.join("failed.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--storage-path")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(cfg)
        .args(["--self-profiling", "false"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            return std::fs::read_to_string(&log).unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kiln started although it should not have");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_credentials_and_a_newer_schema_stop_the_start_by_name() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = write_config(&server, "creds", tmp.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(kiln_storage_clickhouse::test_server::PASSWORD, "wrong");
    std::fs::write(&cfg, text).unwrap();
    let out = failed_start(&cfg, tmp.path());
    assert!(
        out.contains("[storage.clickhouse]") && out.contains("`password`"),
        "{out}"
    );

    let cfg = write_config(&server, "newer", tmp.path(), "");
    let mut d = Daemon::start(tmp.path(), &["--config", cfg.to_str().unwrap()]);
    d.stop();
    server.sql("INSERT INTO newer.schema_version VALUES (999, 'future', now())");
    let out = failed_start(&cfg, tmp.path());
    assert!(out.contains("schema version 999"), "{out}");
}
