//! A 200 means durable: pushes acknowledged before a `kill -9` are all there after a restart,
//! each exactly once — under load from several connections, with large pprof and multi-chunk
//! JFR bodies, over several crash rounds, and when the daemon is killed again while it replays
//! its log.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{agent, enc, testdata, Daemon};

/// A body and how to push it.
struct Fixture {
    query: &'static str,
    content_type: &'static str,
    body: Vec<u8>,
}

fn fixtures() -> Vec<Fixture> {
    let read = |n: &str| std::fs::read(testdata(n)).unwrap();
    // JFR chunks can be concatenated: three chunks make a multi-chunk recording.
    let jfr = read("java-jdk.jfr");
    let multi_chunk_jfr = [jfr.clone(), jfr.clone(), jfr].concat();
    vec![
        Fixture {
            query: "format=pprof",
            content_type: "application/octet-stream",
            body: read("go-cpu.pb.gz"),
        },
        Fixture {
            query: "format=pprof",
            content_type: "application/octet-stream",
            body: read("large-cpu.pb.gz"),
        },
        Fixture {
            query: "format=jfr",
            content_type: "application/octet-stream",
            body: multi_chunk_jfr,
        },
        Fixture {
            query: "format=folded",
            content_type: "text/plain",
            body: read("collapsed.txt"),
        },
    ]
}

fn push(url: &str, app: &str, f: &Fixture) -> Result<u16, String> {
    agent()
        .post(format!("{url}/ingest?name={}&{}", enc(app), f.query))
        .header("Content-Type", f.content_type)
        .send(&f.body[..])
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// Total of every profile type of `app`, by type name.
fn totals(d: &Daemon, app: &str) -> BTreeMap<String, i64> {
    let apps = d.get_json("/api/apps");
    let mut out = BTreeMap::new();
    for a in apps.as_array().unwrap() {
        let name = a["name"].as_str().unwrap();
        let Some(kind) = name.strip_prefix(&format!("{app}.")) else {
            continue;
        };
        if kind.contains('.') {
            continue;
        }
        let r = d.get_json(&format!(
            "/render?query={}&from=now-1h&until=now&format=json",
            enc(name)
        ));
        out.insert(
            kind.to_string(),
            r["flamebearer"]["numTicks"].as_i64().unwrap(),
        );
    }
    out
}

struct Pushed {
    app: String,
    fixture: usize,
    /// `None`: no 200 (refused, or cut off by the crash).
    acked: bool,
}

/// Pushes from `connections` threads until `stop`; each push under its own application.
fn load(
    url: &str,
    round: usize,
    fixtures: &Arc<Vec<Fixture>>,
    connections: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicU64>,
) -> Vec<std::thread::JoinHandle<Vec<Pushed>>> {
    let counter = Arc::new(AtomicU64::new(0));
    (0..connections)
        .map(|_| {
            let (url, fixtures, stop, counter, acked_count) = (
                url.to_string(),
                fixtures.clone(),
                stop.clone(),
                counter.clone(),
                acked.clone(),
            );
            std::thread::spawn(move || {
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed) as usize;
                    let fixture = n % fixtures.len();
                    let app = format!("crash{round}x{n}");
                    let acked = push(&url, &app, &fixtures[fixture]) == Ok(200);
                    if acked {
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    out.push(Pushed {
                        app,
                        fixture,
                        acked,
                    });
                }
                out
            })
        })
        .collect()
}

/// Every acknowledged push is stored exactly once; any other is stored once or not at all.
fn check(d: &Daemon, pushed: &[Pushed], reference: &[BTreeMap<String, i64>]) -> usize {
    let mut acked = 0;
    for p in pushed {
        let got = totals(d, &p.app);
        if p.acked {
            acked += 1;
            assert_eq!(
                got, reference[p.fixture],
                "acknowledged push {} (fixture {}) after the crash",
                p.app, p.fixture
            );
        } else {
            assert!(
                got.is_empty() || got == reference[p.fixture],
                "unacknowledged push {} stored partly or twice: {got:?}",
                p.app
            );
        }
    }
    acked
}

#[test]
fn acknowledged_pushes_survive_kill_9_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let fixtures = Arc::new(fixtures());
    let reference: Vec<BTreeMap<String, i64>> = fixtures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let app = format!("reference{i}");
            assert_eq!(push(&d.url, &app, f), Ok(200));
            let t = totals(&d, &app);
            assert!(!t.is_empty() && t.values().all(|&v| v > 0), "{app}: {t:?}");
            t
        })
        .collect();

    // Kill once some pushes are acknowledged, at moments that differ round to round
    // (deterministic, so a failure reproduces).
    let kill_after = [70u64, 390, 230];
    let mut total_acked = 0;
    let mut all: Vec<Pushed> = Vec::new();
    for (round, &ms) in kill_after.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let threads = load(&d.url, round, &fixtures, 4, &stop, &acked);
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.load(Ordering::Relaxed) < 8 {
            assert!(Instant::now() < deadline, "pushes are not acknowledged");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(ms));
        d.crash();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            all.extend(t.join().unwrap());
        }
        d.spawn();
        total_acked += check(&d, &all, &reference);
    }
    assert!(
        all.iter().filter(|p| p.acked).count() >= 20,
        "too few pushes were acknowledged to prove anything"
    );
    eprintln!(
        "{} pushes, {} acknowledged, all found after 3 crashes ({total_acked} checks)",
        all.len(),
        all.iter().filter(|p| p.acked).count()
    );
}

#[test]
fn a_crash_during_replay_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing is flushed or checkpointed on its own: everything pushed stays in the log, and the
    // log may hold all of it (12 large pushes pass the default backlog bound).
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "[server]\nflush_interval = \"1h\"\n[wal]\nmax_unapplied_age = \"3h\"\nmax_unapplied_bytes = 268435456\nmax_unflushed_bytes = 1073741824\nsegment_bytes = 1048576\n",
    )
    .unwrap();
    let mut d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    d.log = Some(dir.path().join("kiln.log"));
    let fixtures = fixtures();
    let large = &fixtures[1];
    let mut pushed = Vec::new();
    for i in 0..12 {
        let app = format!("replay{i}");
        assert_eq!(push(&d.url, &app, large), Ok(200));
        pushed.push(Pushed {
            app,
            fixture: 1,
            acked: true,
        });
    }
    d.crash();

    // Killed while replaying: once the log says replay started, before it says it finished.
    d.launch();
    let log = d.log.clone().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    while !read_log().contains("replaying the write-ahead log") {
        assert!(
            Instant::now() < deadline,
            "replay never started: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let finished_before_kill = read_log().contains("write-ahead log replayed");
    d.crash();
    assert!(
        !finished_before_kill,
        "replay finished before the kill; the test needs a longer log"
    );

    d.spawn();
    let reference = {
        assert_eq!(push(&d.url, "reference", large), Ok(200));
        totals(&d, "reference")
    };
    let refs = vec![BTreeMap::new(), reference];
    assert_eq!(check(&d, &pushed, &refs), 12);
    let log = read_log();
    assert!(
        log.matches("replaying the write-ahead log").count() == 2,
        "{log}"
    );
}

#[test]
fn a_log_past_half_its_bound_is_flushed_before_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    // Two pushes pass half the bound; the interval alone would not flush for an hour.
    let bound = body.len() * 3;
    std::fs::write(
        &config,
        format!("[server]\nflush_interval = \"1h\"\n[wal]\nmax_unapplied_age = \"3h\"\nmax_unflushed_bytes = {bound}\n"),
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    for app in ["early1.cpu", "early2.cpu"] {
        let (status, text) = d.ingest(
            &format!("name={app}&format=pprof"),
            "application/octet-stream",
            &body,
        );
        assert_eq!(status, 200, "{text}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.metric("kiln_wal_early_flushes_total").unwrap_or(0.0) < 1.0
        || d.metric("kiln_wal_unapplied_bytes") != Some(0.0)
    {
        assert!(
            Instant::now() < deadline,
            "no early flush: {}",
            d.get("/metrics").1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.metric("kiln_wal_early_flushes_total"), Some(1.0));
    // The log has room again: a third push is taken, and all three are stored.
    let (status, text) = d.ingest(
        "name=early3.cpu&format=pprof",
        "application/octet-stream",
        &body,
    );
    assert_eq!(status, 200, "{text}");
    let apps = d.get_json("/api/apps").to_string();
    for app in ["early1.cpu", "early2.cpu", "early3.cpu"] {
        assert!(apps.contains(app), "{app} missing: {apps}");
    }
}

#[test]
fn pushes_are_refused_with_retry_after_while_storage_lags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    // A tiny log bound and no flush for an hour (an early one 5 s after start at the soonest):
    // the second push finds the log full.
    std::fs::write(
        &config,
        "[server]\nflush_interval = \"1h\"\n[wal]\nmax_unapplied_age = \"3h\"\nmax_unflushed_bytes = 1000\n",
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (status, _) = d.ingest(
        "name=bp.cpu&format=pprof",
        "application/octet-stream",
        &body,
    );
    assert_eq!(status, 200);
    let mut r = agent()
        .post(format!("{}/ingest?name=bp2.cpu&format=pprof", d.url))
        .send(&body[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").unwrap().to_str().unwrap(),
        "3600"
    );
    let text = r.body_mut().read_to_string().unwrap();
    assert!(text.contains("max_unflushed_bytes"), "{text}");
    // Nothing of the refused push is stored; the accepted one is queryable right away.
    let apps = d.get_json("/api/apps").to_string();
    assert!(
        apps.contains("\"bp.cpu\"") && !apps.contains("bp2"),
        "{apps}"
    );
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("kiln_ingest_errors_total{cause=\"backpressure\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_ingest_cli_waits_out_backpressure_and_gets_every_file_in() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    // Every push after the first in a flush interval finds the log full (503, Retry-After 2).
    std::fs::write(
        &config,
        "[server]\nflush_interval = \"2s\"\n[wal]\nmax_unapplied_age = \"1h\"\nmax_unflushed_bytes = 1000\n",
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let file = testdata("go-cpu.pb.gz");
    let file = file.to_str().unwrap();
    let (ok, out) = common::kiln(&[
        "ingest", "--server", &d.url, "--app", "cli-bp", file, file, file,
    ]);
    assert!(ok, "{out}");
    let metrics = d.get("/metrics").1;
    let refused = d
        .metric("kiln_ingest_errors_total{cause=\"backpressure\"}")
        .unwrap_or(0.0);
    assert!(
        refused >= 1.0,
        "the CLI met backpressure at least once: {metrics}"
    );
    assert!(
        metrics.contains("kiln_ingest_requests_total 3"),
        "all three accepted in the end: {metrics}"
    );
}

#[test]
fn a_torn_log_tail_is_dropped_and_the_rest_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        "[server]\nflush_interval = \"1h\"\n[wal]\nmax_unapplied_age = \"3h\"\n",
    )
    .unwrap();
    let mut d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    for app in ["torn1.cpu", "torn2.cpu"] {
        let q = format!("name={app}&format=pprof");
        assert_eq!(d.ingest(&q, "application/octet-stream", &body).0, 200);
    }
    d.crash();
    // Half a record at the end, as a crash in the middle of a write leaves it.
    let wal = d.data.join("wal");
    let seg = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 3, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
    std::fs::write(&seg, bytes).unwrap();
    d.spawn();
    let apps = d.get_json("/api/apps").to_string();
    assert!(
        apps.contains("torn1.cpu") && apps.contains("torn2.cpu"),
        "{apps}"
    );
}

#[test]
fn a_clean_stop_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    assert_eq!(
        d.ingest(
            "name=clean.cpu&format=pprof",
            "application/octet-stream",
            &body
        )
        .0,
        200
    );
    d.stop();
    let segments = std::fs::read_dir(d.data.join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert_eq!(
        segments, 0,
        "the log's segments are deleted on a clean stop"
    );
    d.spawn();
    assert!(d.get_json("/api/apps").to_string().contains("clean.cpu"));
    // Sequence numbers go on after the checkpoint: a new push is not taken for a stored one.
    assert_eq!(
        d.ingest(
            "name=clean2.cpu&format=pprof",
            "application/octet-stream",
            &body
        )
        .0,
        200
    );
    d.crash();
    d.spawn();
    assert!(d.get_json("/api/apps").to_string().contains("clean2.cpu"));
}

#[test]
fn a_delete_stays_deleted_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    for app in ["gone.cpu", "kept.cpu"] {
        let q = format!("name={app}&format=pprof");
        assert_eq!(d.ingest(&q, "application/octet-stream", &body).0, 200);
    }
    let r = agent()
        .delete(format!("{}/api/apps", d.url))
        .force_send_body()
        .send(r#"{"name":"gone.cpu"}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    d.crash();
    d.spawn();
    let apps = d.get_json("/api/apps").to_string();
    assert!(
        apps.contains("kept.cpu") && !apps.contains("gone"),
        "{apps}"
    );
}
