//! Storage limits end to end, on a real daemon and real profiles: retention by size
//! (`storage.max_disk_bytes`) shrinks what storage holds, oldest finest data first; the free-disk
//! floor (`storage.min_free_disk_bytes`) refuses every push path with 507 when the filesystem
//! really fills up, keeps what it holds, and takes pushes again once space is back;
//! `/api/storage` reports what was pushed per service and level, forgets what was deleted, and
//! shows a tenant only its own data.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{agent, enc, testdata, Daemon};
use serde_json::Value;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Pushes the Go CPU fixture as `app` at `t` (seconds).
fn push_cpu(d: &Daemon, app: &str, t: i64, headers: &[(&str, String)]) -> (u16, String) {
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let mut req = agent()
        .post(format!(
            "{}/ingest?name={}&from={t}&until={}&format=pprof",
            d.url,
            enc(app),
            t + 10
        ))
        .header("Content-Type", "application/octet-stream");
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut r = req.send(&body[..]).unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn get(d: &Daemon, path: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut req = agent().get(format!("{}{path}", d.url));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut r = req.call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn storage(d: &Daemon) -> Value {
    d.get_json("/api/storage")
}

/// `(chunks, bytes)` of one service's level in an `/api/storage` answer.
fn level(report: &Value, service: &str, level: &str) -> (u64, u64) {
    report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == service && e["level"] == level)
        .map(|e| (e["chunks"].as_u64().unwrap(), e["bytes"].as_u64().unwrap()))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

fn ticks(d: &Daemon, query: &str, from: i64, until: i64) -> u64 {
    let r = d.get_json(&format!(
        "/render?query={}&from={from}&until={until}",
        enc(query)
    ));
    r["flamebearer"]["numTicks"].as_u64().unwrap()
}

/// Bytes of the files under `dir`, as allocated on disk.
fn du(dir: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(dir).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn config(dir: &Path, rest: &str) -> String {
    let path = dir.join("kiln.toml");
    std::fs::write(&path, rest).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn size_retention_deletes_the_oldest_finest_data_and_shrinks_storage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "[storage]\nretention_interval = \"1s\"\n");
    let mut d = Daemon::start(dir.path(), &["--config", &cfg]);
    // An hour of real CPU profiles, one every 20 s, from a 1000 s boundary two hours ago.
    let t0 = (now_s() - 7200) / 1000 * 1000;
    let pushes = 180;
    for i in 0..pushes {
        let (s, m) = push_cpu(&d, "sized.cpu", t0 + i * 20, &[]);
        assert_eq!(s, 200, "{m}");
    }
    let whole = |d: &Daemon| ticks(d, "sized.cpu", t0, now_s() + 60);
    let all_ticks = whole(&d);
    assert!(all_ticks > 0);
    let oldest_ticks = ticks(&d, "sized.cpu", t0, t0 + 10);
    assert_eq!(oldest_ticks * pushes as u64, all_ticks);
    let before = storage(&d);
    let total = before["total_bytes"].as_u64().unwrap();
    let (fine_chunks, fine_bytes) = level(&before, "sized", "10s");
    let coarse_before = level(&before, "sized", "1000s").0;
    assert_eq!(fine_chunks % pushes as u64, 0, "{before}");
    assert!(
        fine_bytes > total / 2,
        "the 10 s level holds most: {before}"
    );
    d.stop();
    let du_before = du(&d.data);

    // A bound a third of the 10 s level must go to meet (90 % of it is the target).
    let max = total - fine_bytes / 4;
    let max_arg = max.to_string();
    let mut d = Daemon::start(
        dir.path(),
        &["--config", &cfg, "--max-disk-bytes", &max_arg],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let after = loop {
        let r = storage(&d);
        if r["total_bytes"].as_u64().unwrap() <= max {
            break r;
        }
        assert!(Instant::now() < deadline, "still over {max}: {r}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let left = after["total_bytes"].as_u64().unwrap();
    assert!(
        left <= max - max / 10,
        "down to 90 % of the bound: {left} > {max}"
    );
    assert_eq!(after["max_disk_bytes"].as_u64(), Some(max));
    let (fine_left, _) = level(&after, "sized", "10s");
    assert!(
        fine_left < fine_chunks && fine_left > 0,
        "part of the 10 s level went: {fine_chunks} → {fine_left}"
    );
    assert_eq!(
        level(&after, "sized", "1000s").0,
        coarse_before,
        "coarser levels are untouched while the finest can give"
    );
    // Oldest first: the newest 10 s bucket is still readable at 10 s resolution, and the whole
    // hour still reads the same from the coarser levels.
    let last = t0 + (pushes - 1) * 20;
    assert!(ticks(&d, "sized.cpu", last, last + 10) > 0);
    assert_eq!(whole(&d), all_ticks, "nothing lost at coarser resolution");
    // A time whose 10 s chunk went reads the 1000 s bucket around it (fifty pushes), not
    // nothing.
    assert_eq!(ticks(&d, "sized.cpu", t0, t0 + 10), 50 * oldest_ticks);
    let deleted = d
        .metric("kiln_storage_size_retention_deleted_chunks_total")
        .unwrap();
    assert!(deleted > 0.0);
    assert!(d.metric("kiln_storage_bytes").unwrap() > 0.0);
    // Pushes keep working under the bound.
    assert_eq!(push_cpu(&d, "sized.cpu", now_s() - 30, &[]).0, 200);
    d.stop();
    // What the files take: sled frees space by rewriting segments, so the directory follows the
    // accounted bytes with a lag (docs/storage.md); printed for the record.
    let du_after = du(&d.data);
    eprintln!(
        "accounted {total} → {left} bytes (bound {max}); directory {du_before} → {du_after} bytes"
    );
}

/// Free bytes for unprivileged writers on the filesystem of `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).unwrap();
    s.f_bavail * s.f_frsize
}

/// Takes `bytes` of real disk (allocated blocks, not a sparse file).
fn fill(path: &Path, bytes: u64) {
    let f = std::fs::File::create(path).unwrap();
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, bytes).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn below_the_disk_floor_every_push_path_gets_507_and_nothing_is_lost() {
    // Under the target directory, on the build's disk: /tmp may be a tmpfs in memory.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    const GIB: u64 = 1 << 30;
    let free = free_bytes(dir.path());
    assert!(
        free > 3 * GIB,
        "the test needs 3 GiB free on the filesystem of {} ({free} bytes free)",
        dir.path().display()
    );
    // The floor 1 GiB under what is free now; filling 2 GiB crosses it with a margin for
    // whatever else writes to this disk meanwhile.
    let floor = free - GIB;
    let floor_arg = floor.to_string();
    let d = Daemon::start(dir.path(), &["--min-free-disk-bytes", &floor_arg]);
    // On a 10 s boundary: the second push below lands in the next 10 s bucket.
    let t = (now_s() - 120) / 10 * 10;
    assert_eq!(push_cpu(&d, "floor.cpu", t, &[]).0, 200);
    let before = ticks(&d, "floor.cpu", t - 10, t + 20);
    assert!(before > 0);

    let filler = dir.path().join("filler");
    fill(&filler, 2 * GIB);
    // /ingest
    let (s, m) = push_cpu(&d, "floor.cpu", t + 10, &[]);
    assert_eq!(s, 507, "{m}");
    let body: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(body["error"], "disk_full");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("storage.min_free_disk_bytes"),
        "{m}"
    );
    // Connect push: 507, Connect code resource_exhausted.
    let raw = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let json = serde_json::json!({"series": [{
        "labels": [{"name": "service_name", "value": "floor"}, {"name": "__name__", "value": "process_cpu"}],
        "samples": [{"rawProfile": base64::engine::general_purpose::STANDARD.encode(&raw)}]
    }]});
    let mut r = agent()
        .post(format!("{}/push.v1.PusherService/Push", d.url))
        .header("Content-Type", "application/json")
        .send(json.to_string())
        .unwrap();
    let status = r.status().as_u16();
    let connect: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(status, 507, "{connect}");
    assert_eq!(connect["code"], "resource_exhausted", "{connect}");
    // OTLP
    let mut r = agent()
        .post(format!("{}/v1development/profiles", d.url))
        .header("Content-Type", "application/json")
        .send("{}")
        .unwrap();
    assert_eq!(r.status().as_u16(), 507);
    assert!(r
        .body_mut()
        .read_to_string()
        .unwrap()
        .contains("min_free_disk_bytes"));
    // The gauge shows the cause, the counter the refusals; reads still work, data intact.
    let gauge = d.metric("kiln_storage_disk_free_bytes").unwrap();
    assert!(gauge < floor as f64, "{gauge} ≥ {floor}");
    let refused = d
        .metric("kiln_storage_writes_refused_total{cause=\"min_free_disk_bytes\"}")
        .unwrap();
    assert_eq!(refused, 3.0);
    assert_eq!(ticks(&d, "floor.cpu", t - 10, t + 20), before);
    let report = storage(&d);
    assert!(report["disk_free_bytes"].as_u64().unwrap() < floor);
    assert_eq!(report["min_free_disk_bytes"].as_u64(), Some(floor));

    // Space back: pushes are taken again, and what was there before is still there.
    std::fs::remove_file(&filler).unwrap();
    let (s, m) = push_cpu(&d, "floor.cpu", t + 10, &[]);
    assert_eq!(s, 200, "{m}");
    assert_eq!(ticks(&d, "floor.cpu", t - 10, t + 5), before);
    assert_eq!(ticks(&d, "floor.cpu", t - 10, t + 20), 2 * before);
    assert!(d.metric("kiln_storage_disk_free_bytes").unwrap() >= floor as f64);
}

#[test]
fn api_storage_reports_what_was_pushed_per_service_and_level_and_forgets_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    // Four pushes of `a` in four 10 s buckets of one 1000 s bucket, one of `b`.
    let t0 = (now_s() - 3600) / 1000 * 1000;
    for t in [t0, t0 + 10, t0 + 100, t0 + 110] {
        assert_eq!(push_cpu(&d, "a.cpu", t, &[]).0, 200);
    }
    assert_eq!(push_cpu(&d, "b.cpu", t0, &[]).0, 200);
    let apps = d.get_json("/api/apps");
    let series_of = |app: &str| {
        apps.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["name"].as_str().unwrap().starts_with(&format!("{app}.")))
            .count() as u64
    };
    let (sa, sb) = (series_of("a"), series_of("b"));
    assert!(sa > 0 && sb > 0);
    let r = storage(&d);
    assert_eq!(r["supported"], true);
    assert_eq!(r["scope"], "all");
    assert_eq!(level(&r, "a", "10s").0, 4 * sa, "{r}");
    assert_eq!(level(&r, "a", "1000s").0, sa, "{r}");
    assert_eq!(level(&r, "a", "100000s").0, sa, "{r}");
    assert_eq!(level(&r, "b", "10s").0, sb, "{r}");
    assert_eq!(level(&r, "b", "1000s").0, sb, "{r}");
    let entries_bytes: u64 = r["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(r["visible_bytes"].as_u64(), Some(entries_bytes));
    assert!(r["total_bytes"].as_u64().unwrap() > entries_bytes);
    assert!(r["disk_bytes"].as_u64().unwrap() > 0);
    assert!(r["disk_free_bytes"].as_u64().unwrap() > 0);
    let services = r["services"].as_array().unwrap();
    let a = services.iter().find(|s| s["service"] == "a").unwrap();
    let a_bytes: u64 = ["10s", "1000s", "100000s"]
        .iter()
        .map(|l| level(&r, "a", l).1)
        .sum();
    assert_eq!(a["bytes"].as_u64(), Some(a_bytes));

    let mut resp = agent()
        .delete(format!("{}/api/apps", d.url))
        .force_send_body()
        .send(r#"{"name":"a.cpu"}"#)
        .unwrap();
    assert!(
        resp.status().is_success(),
        "{}",
        resp.body_mut().read_to_string().unwrap()
    );
    let after = storage(&d);
    assert_eq!(level(&after, "a", "10s"), (0, 0), "{after}");
    assert!(after["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["service"] != "a"));
    assert_eq!(level(&after, "b", "10s"), level(&r, "b", "10s"));
    assert!(after["total_bytes"].as_u64() < r["total_bytes"].as_u64());
}

/// `kiln admin apikey create` on the data directory; the key is stdout's only line.
fn create_key(data: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["admin", "apikey", "create", "--name", name, "--role", role])
        .args(extra)
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(data)
        .env_remove("KILN_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn api_storage_shows_a_tenant_its_own_data_and_an_admin_every_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = create_key(&data, "root", "admin", &[]);
    let w1 = create_key(&data, "w1", "writer", &["--tenant", "t1"]);
    let w2 = create_key(&data, "w2", "writer", &["--tenant", "t2"]);
    let r1 = create_key(&data, "r1", "reader", &["--tenant", "t1"]);
    let d = Daemon::start(dir.path(), &["--auth"]);
    let bearer = |k: &str| ("Authorization", format!("Bearer {k}"));
    let t = now_s() - 60;
    assert_eq!(push_cpu(&d, "one.cpu", t, &[bearer(&w1)]).0, 200);
    assert_eq!(push_cpu(&d, "two.cpu", t, &[bearer(&w2)]).0, 200);

    let (s, m) = get(&d, "/api/storage", &[]);
    assert_eq!(s, 401, "{m}");
    let (s, m) = get(&d, "/api/storage", &[bearer("kiln_not-a-key")]);
    assert_eq!(s, 401, "{m}");

    let (s, m) = get(&d, "/api/storage", &[bearer(&r1)]);
    assert_eq!(s, 200, "{m}");
    let mine: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(mine["scope"], "tenant");
    assert_eq!(mine["tenant"], "t1");
    let tenants: Vec<&str> = mine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenant"].as_str().unwrap())
        .collect();
    assert!(!tenants.is_empty());
    assert!(tenants.iter().all(|&t| t == "t1"), "{mine}");
    assert!(mine["services"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["service"] == "one"));
    // A key of one tenant cannot name another.
    let (s, _) = get(
        &d,
        "/api/storage",
        &[bearer(&r1), ("X-Scope-OrgID", "t2".into())],
    );
    assert_eq!(s, 403);

    let (s, m) = get(&d, "/api/storage", &[bearer(&root)]);
    assert_eq!(s, 200, "{m}");
    let all: Value = serde_json::from_str(&m).unwrap();
    assert_eq!(all["scope"], "all");
    let mut services: Vec<(&str, &str)> = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant"].as_str().unwrap(),
                s["service"].as_str().unwrap(),
            )
        })
        .collect();
    services.sort();
    assert_eq!(services, vec![("t1", "one"), ("t2", "two")]);
    assert!(all["visible_bytes"].as_u64() > mine["visible_bytes"].as_u64());
}
