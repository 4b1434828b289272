//! End to end: the real daemon on a free loopback port, real Go profiles from `testdata/`,
//! answers cross-checked against `go tool pprof` reading the same files.

mod common;

use std::collections::BTreeMap;

use common::{enc, go_pprof_top, multipart, testdata, Daemon};
use serde_json::Value;

fn functions(render: &Value) -> BTreeMap<String, (i64, i64)> {
    render["functions"]
        .as_array()
        .expect("functions array")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                (f["self"].as_i64().unwrap(), f["total"].as_i64().unwrap()),
            )
        })
        .collect()
}

fn render(d: &Daemon, query: &str) -> Value {
    d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc(query)
    ))
}

#[test]
fn go_profiles_render_what_go_tool_pprof_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let heap = std::fs::read(testdata("go-heap.pb.gz")).unwrap();
    // The CPU profile as the Go agent sends it (multipart, no format), the heap raw.
    let (body, ct) = multipart(&cpu, None);
    let (status, msg) = d.ingest(
        &format!("name={}&spyName=gospy", enc("goapp.cpu{env=e2e}")),
        &ct,
        &body,
    );
    assert_eq!(status, 200, "{msg}");
    let (status, msg) = d.ingest(
        &format!("name={}&format=pprof", enc("goapp{env=e2e}")),
        "application/octet-stream",
        &heap,
    );
    assert_eq!(status, 200, "{msg}");

    let r = render(&d, r#"goapp.cpu{env="e2e"}"#);
    assert_eq!(r["flamebearer"]["numTicks"], 1017);
    assert_eq!(r["metadata"]["spyName"], "gospy");
    assert_eq!(r["metadata"]["units"], "samples");
    assert_eq!(r["flamebearer"]["names"][0], "total");
    let ours = functions(&r);
    let theirs = go_pprof_top(&testdata("go-cpu.pb.gz"), "samples");
    assert_eq!(
        ours, theirs,
        "every function's self and total must match go tool pprof"
    );
    let timeline_total: i64 = r["timeline"]["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(timeline_total, 1017);

    for index in ["inuse_objects", "alloc_objects"] {
        let r = render(&d, &format!("goapp.{index}"));
        assert_eq!(
            functions(&r),
            go_pprof_top(&testdata("go-heap.pb.gz"), index),
            "{index}"
        );
    }
    let r = render(&d, "goapp.inuse_space");
    assert_eq!(r["metadata"]["units"], "bytes");
    assert!(r["flamebearer"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "main.allocWork"));

    let apps = d.get_json("/api/apps");
    let names: Vec<&str> = apps
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for n in ["goapp.cpu", "goapp.alloc_space", "goapp.inuse_objects"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        d.get_json(&format!(
            "/label-values?label=env&query={}",
            enc("goapp.cpu")
        )),
        serde_json::json!(["e2e"])
    );
    let labels = d.get_json(&format!("/labels?query={}", enc("goapp.cpu")));
    assert!(labels.as_array().unwrap().iter().any(|l| l == "env"));
    let values = d.get_json("/label-values?label=__name__");
    assert!(values.as_array().unwrap().iter().any(|l| l == "goapp.cpu"));
}

#[test]
fn selectors_filter_series() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    for (env, body) in [
        ("prod", "main;work 10\n"),
        ("dev", "main;play 3\n"),
        ("test", "main;check 1\n"),
    ] {
        let (s, m) = d.ingest(
            &format!(
                "name={}&format=folded",
                enc(&format!("sel.cpu{{env={env}}}"))
            ),
            "text/plain",
            body.as_bytes(),
        );
        assert_eq!(s, 200, "{m}");
    }
    let total = |q: &str| render(&d, q)["flamebearer"]["numTicks"].as_i64().unwrap();
    assert_eq!(total("sel.cpu"), 14);
    assert_eq!(total(r#"sel.cpu{env="prod"}"#), 10);
    assert_eq!(total(r#"sel.cpu{env!="prod"}"#), 4);
    assert_eq!(total(r#"sel.cpu{env=~"pr.*|te.*"}"#), 11);
    assert_eq!(total(r#"sel.cpu{env!~"d.*"}"#), 11);
    assert_eq!(
        total(r#"process_cpu:samples:count:cpu:nanoseconds{service_name="sel",env="dev"}"#),
        3
    );
    let r = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m&groupBy=env",
        enc("sel.cpu")
    ));
    let groups = r["groups"].as_object().unwrap();
    assert_eq!(groups.len(), 3);
}

#[test]
fn restart_returns_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (s, m) = d.ingest(
        &format!("name={}&format=pprof", enc("restart.cpu")),
        "application/octet-stream",
        &cpu,
    );
    assert_eq!(s, 200, "{m}");
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc("restart.cpu{v=2}")),
        "text/plain",
        b"a;b 5\n",
    );
    assert_eq!(s, 200, "{m}");
    let before = render(&d, "restart.cpu");
    d.restart();
    let after = render(&d, "restart.cpu");
    assert_eq!(before["flamebearer"], after["flamebearer"]);
    assert_eq!(before["functions"], after["functions"]);
    assert_eq!(after["flamebearer"]["numTicks"], 1022);
    // Ingest keeps working on top of the reloaded dictionaries.
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc("restart.cpu{v=2}")),
        "text/plain",
        b"a;b 5\na;c 1\n",
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(render(&d, "restart.cpu")["flamebearer"]["numTicks"], 1028);
}

/// The status the daemon answers to a POST of `length` bytes, read while the body is still being
/// written (as curl does): the daemon answers 413 once it has read past its limit and closes
/// without reading the rest, so a client that reads only after writing everything would find
/// its connection reset instead.
fn status_of_oversized_post(d: &Daemon, path: &str, length: usize) -> u16 {
    use std::io::{Read, Write};
    let address = d.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/octet-stream\r\n\
         content-length: {length}\r\n\r\n"
    );
    let sender = std::thread::spawn(move || {
        // Fails with a broken pipe once the daemon has answered and closed: expected.
        let _ = writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&vec![0u8; length]));
    });
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut status_line = [0u8; 12];
    stream.read_exact(&mut status_line).unwrap();
    sender.join().unwrap();
    let line = String::from_utf8_lossy(&status_line).into_owned();
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"))
}

#[test]
fn bad_input_is_refused_and_harms_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--max-body-bytes", "200000"]);
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (s, _) = d.ingest(
        &format!("name={}&format=pprof", enc("safe.cpu")),
        "application/octet-stream",
        &cpu,
    );
    assert_eq!(s, 200);
    let good = render(&d, "safe.cpu");

    let cases: Vec<(String, &str, Vec<u8>, u16, &str)> = vec![
        (
            "format=pprof".into(),
            "application/octet-stream",
            cpu.clone(),
            400,
            "name",
        ),
        (
            format!("name={}&format=pprof", enc("a b")),
            "application/octet-stream",
            cpu.clone(),
            400,
            "name",
        ),
        (
            format!("name={}&format=pprof", enc("safe{k}")),
            "application/octet-stream",
            cpu.clone(),
            400,
            "=",
        ),
        (
            format!("name={}&format=pprof", enc("safe.cpu")),
            "application/octet-stream",
            vec![],
            400,
            "empty",
        ),
        (
            format!("name={}&format=nope", enc("safe.cpu")),
            "text/plain",
            b"a 1".to_vec(),
            400,
            "unknown format",
        ),
        (
            format!("name={}&format=pprof", enc("safe.cpu")),
            "application/octet-stream",
            b"\x1f\x8b\x08\x00garbage".to_vec(),
            400,
            "gzip",
        ),
        (
            format!("name={}&format=pprof", enc("safe.cpu")),
            "application/octet-stream",
            cpu[..cpu.len() / 2].to_vec(),
            400,
            "gzip",
        ),
        (
            format!("name={}&format=pprof", enc("safe.cpu")),
            "application/octet-stream",
            b"\x0a\xff\xff\xff".to_vec(),
            400,
            "pprof",
        ),
        (
            format!("name={}&format=folded", enc("safe.cpu")),
            "text/plain",
            b"a;b notanumber\n".to_vec(),
            400,
            "line 1",
        ),
        (
            format!(
                "name={}&format=pprof&from=2000000000&until=1000000000",
                enc("safe.cpu")
            ),
            "application/octet-stream",
            cpu.clone(),
            400,
            "after",
        ),
        (
            format!("name={}&format=pprof&from=yesterday", enc("safe.cpu")),
            "application/octet-stream",
            cpu.clone(),
            400,
            "not a time",
        ),
        (
            format!("name={}", enc("safe.cpu")),
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nz\r\n--x--\r\n".to_vec(),
            400,
            "profile",
        ),
    ];
    for (query, ct, body, status, needle) in cases {
        let (s, m) = d.ingest(&query, ct, &body);
        assert_eq!(s, status, "{query}: {m}");
        assert!(
            m.contains(needle),
            "{query}: message {m:?} should mention {needle:?}"
        );
    }
    // Over max_body_bytes.
    assert_eq!(
        status_of_oversized_post(&d, "/ingest?name=safe.cpu&format=pprof", 300_000),
        413
    );

    // A gzip bomb: small on the wire, 100 MiB inflated (limit 64 MiB).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gz, &vec![0u8; 100 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 200_000);
    let (s, m) = d.ingest(
        &format!("name={}&format=pprof", enc("safe.cpu")),
        "application/octet-stream",
        &bomb,
    );
    assert_eq!(s, 413, "{m}");

    for q in ["", "safe.cpu{", "safe.cpu{env=~\"(\"}", "a b"] {
        let (s, m) = d.get(&format!("/render?query={}", enc(q)));
        assert_eq!(s, 400, "query {q:?}: {m}");
    }
    let (s, _) = d.get("/render?query=safe.cpu&from=now&until=now-1h");
    assert_eq!(s, 400);
    let (s, _) = d.get("/render?query=safe.cpu&format=gif");
    assert_eq!(s, 400);
    let (s, _) = d.get("/label-values");
    assert_eq!(s, 400);

    assert_eq!(render(&d, "safe.cpu")["functions"], good["functions"]);
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("kiln_ingest_errors_total{cause=\"malformed\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kiln_ingested_profiles_total 2"),
        "{metrics}"
    );
}

#[test]
fn pipelines_route_and_relabel() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        r#"
[transforms.ci_env]
type = "relabel"
add = { env = "ci" }
drop = ["secret"]

[pipelines.ci]
match_app = "ci-.*"
transforms = ["ci_env"]
decoders = ["folded"]

[pipelines.default]
"#,
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc("ci-build.cpu{secret=x}")),
        "text/plain",
        b"a 1\n",
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        d.get_json(&format!(
            "/label-values?label=env&query={}",
            enc("ci-build.cpu")
        )),
        serde_json::json!(["ci"])
    );
    assert_eq!(
        d.get_json("/label-values?label=secret"),
        serde_json::json!([])
    );
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (s, m) = d.ingest(
        &format!("name={}&format=pprof", enc("ci-build.cpu")),
        "application/octet-stream",
        &cpu,
    );
    assert_eq!(s, 400, "the ci pipeline only accepts folded: {m}");
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc("other.cpu{secret=x}")),
        "text/plain",
        b"a 1\n",
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        d.get_json("/label-values?label=secret"),
        serde_json::json!(["x"])
    );
}

#[test]
fn bad_config_stops_startup_naming_file_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_nodse = 5\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.toml") && err.contains("[server]") && err.contains("max_nodse"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["validate", "--config", "/nonexistent/kiln.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn ingest_cli_pushes_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "ingest", "--app", "cli.cpu", "--label", "via=cli", "--server", &d.url,
        ])
        .arg(testdata("go-cpu.pb.gz"))
        .arg(testdata("collapsed.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = render(&d, r#"cli.cpu{via="cli"}"#);
    assert!(r["flamebearer"]["numTicks"].as_i64().unwrap() > 1017);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "ingest", "--app", "cli.cpu", "--format", "pprof", "--server", &d.url,
        ])
        .arg(testdata("collapsed.txt"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a rejected file makes the command fail"
    );
}

#[test]
fn self_profiling_shows_the_daemon_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--self-profiling", "true"]);
    // Keep the daemon a little busy so the profiler has samples to take.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    let body = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    loop {
        let (s, _) = d.ingest(
            &format!("name={}&format=pprof", enc("load.cpu")),
            "application/octet-stream",
            &body,
        );
        assert_eq!(s, 200);
        let apps = d.get_json("/api/apps");
        let has = |name: &str| apps.as_array().unwrap().iter().any(|a| a["name"] == name);
        if has("kiln.server.cpu") && has("kiln.server.inuse_space") {
            for app in ["kiln.server.cpu", "kiln.server.inuse_space"] {
                let r = render(&d, app);
                assert!(r["flamebearer"]["numTicks"].as_i64().unwrap() > 0, "{app}");
                // Frames are the daemon's own functions, named (not bare addresses).
                let names = r["flamebearer"]["names"].as_array().unwrap();
                assert!(
                    names
                        .iter()
                        .any(|n| n.as_str().is_some_and(|n| n.contains("kiln"))),
                    "{app}: no function of the daemon in its own profile: {names:?}"
                );
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kiln.server.cpu and inuse_space never both appeared: {apps}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn diff_and_pprof_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let (s, _) = d.ingest(
        &format!("name={}&format=folded", enc("diff.cpu{side=left}")),
        "text/plain",
        b"foo;bar 100\n",
    );
    assert_eq!(s, 200);
    let (s, _) = d.ingest(
        &format!("name={}&format=folded", enc("diff.cpu{side=right}")),
        "text/plain",
        b"foo;bar 50\nfoo;baz 50\n",
    );
    assert_eq!(s, 200);
    let r = d.get_json(&format!(
        "/render-diff?leftQuery={}&rightQuery={}&leftFrom=now-1h&leftUntil=now%2B1m&rightFrom=now-1h&rightUntil=now%2B1m",
        enc(r#"diff.cpu{side="left"}"#),
        enc(r#"diff.cpu{side="right"}"#)
    ));
    assert_eq!(r["metadata"]["format"], "double");
    assert_eq!(
        (r["leftTicks"].as_i64(), r["rightTicks"].as_i64()),
        (Some(100), Some(100))
    );
    assert_eq!(r["flamebearer"]["levels"][2].as_array().unwrap().len(), 14);
    let (s, m) = d.get("/render-diff?leftQuery=diff.cpu&rightQuery=diff.alloc_space");
    assert_eq!(s, 200, "a side without data is an empty side: {m}");

    // The pprof export opens with go tool pprof and holds the same totals.
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (s, _) = d.ingest(
        &format!("name={}&format=pprof", enc("export.cpu")),
        "application/octet-stream",
        &cpu,
    );
    assert_eq!(s, 200);
    let (s, bytes) = d.get_bytes(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m&format=pprof",
        enc("export.cpu")
    ));
    assert_eq!(s, 200);
    let file = dir.path().join("export.pb.gz");
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(
        go_pprof_top(&file, "0"),
        go_pprof_top(&testdata("go-cpu.pb.gz"), "samples")
    );
}

#[test]
fn every_export_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let (s, _) = d.ingest(
        &format!("name={}&format=pprof", enc("fmt.cpu")),
        "application/octet-stream",
        &cpu,
    );
    assert_eq!(s, 200);
    let get = |format: &str| {
        let (s, body) = d.get_bytes(&format!(
            "/render?query={}&from=now-1h&until=now%2B1m&format={format}",
            enc("fmt.cpu")
        ));
        assert_eq!(s, 200, "{format}");
        body
    };
    let folded = String::from_utf8(get("collapsed")).unwrap();
    let sum: i64 = folded
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, 1017);
    let ss: Value = serde_json::from_slice(&get("speedscope")).unwrap();
    assert_eq!(ss["profiles"][0]["type"], "sampled");
    let svg = String::from_utf8(get("svg")).unwrap();
    assert!(svg.contains("crypto/sha256.block"));
    assert!(get("png").starts_with(b"\x89PNG"));
    let html = String::from_utf8(get("html")).unwrap();
    assert!(
        html.contains("crypto/sha256.block")
            && !html.contains("/*KILN_DATA*/")
            && !html.contains("/*KILN_FLAMEGRAPH_JS*/")
    );
    let (s, body) = d.get(&format!(
        "/render-diff?leftQuery={q}&rightQuery={q}&format=html",
        q = enc("fmt.cpu")
    ));
    assert_eq!(s, 200);
    assert!(body.contains("\"leftTicks\""));
}

#[test]
fn jfr_recordings_raw_and_multipart() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let jfr = std::fs::read(testdata("java-jdk.jfr")).unwrap();
    let (s, m) = d.ingest(
        &format!(
            "name={}&format=jfr&spyName=javaspy",
            enc("javaapp{env=e2e}")
        ),
        "application/octet-stream",
        &jfr,
    );
    assert_eq!(s, 200, "{m}");
    let r = render(&d, "javaapp.cpu");
    assert!(
        r["flamebearer"]["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "Workload.hashWork"),
        "{}",
        r["flamebearer"]["names"]
    );
    let apps = d.get_json("/api/apps");
    for t in [
        "javaapp.cpu",
        "javaapp.alloc_sample_bytes",
        "javaapp.lock_duration",
    ] {
        assert!(
            apps.as_array().unwrap().iter().any(|a| a["name"] == t),
            "{t} missing from {apps}"
        );
    }
    let (s, m) = d.ingest(
        &format!("name={}&format=jfr", enc("javaapp")),
        "application/octet-stream",
        &jfr[..jfr.len() / 2],
    );
    assert_eq!(s, 400, "{m}");
    let body = [
        b"--b\r\nContent-Disposition: form-data; name=\"jfr\"; filename=\"jfr\"\r\n\r\n".to_vec(),
        jfr.clone(),
        b"\r\n--b--\r\n".to_vec(),
    ]
    .concat();
    let (s, m) = d.ingest(
        &format!("name={}&format=jfr", enc("javamp")),
        "multipart/form-data; boundary=b",
        &body,
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(
        render(&d, "javamp.cpu")["flamebearer"]["numTicks"],
        r["flamebearer"]["numTicks"]
    );
}

#[test]
fn a_query_over_its_memory_budget_says_what_it_folded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    // The floor of the budget: 1,024 nodes per tree.
    std::fs::write(&config, "[storage]\nquery_budget_bytes = 1\n").unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut folded = String::from("main;hot;loop 1000000\n");
    for i in 0..3000 {
        folded.push_str(&format!("main;leaf{i} {}\n", i + 1));
    }
    let (status, body) = d.ingest(
        "name=wide.cpu&format=folded",
        "text/plain",
        folded.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    let expected = 1_000_000 + (1..=3000).sum::<i64>();

    let r = agent_get(&d, "/render?query=wide.cpu&from=now-1h&until=now%2B1m");
    let pruned: u64 =
        r.0.expect("a pruned answer carries kiln-pruned-nodes")
            .parse()
            .unwrap();
    assert!(pruned > 1900, "{pruned} nodes folded");
    let body: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(body["pruned"]["nodes"].as_u64(), Some(pruned));
    assert_eq!(body["pruned"]["limit"], "storage.query_budget_bytes");
    assert_eq!(
        body["flamebearer"]["numTicks"].as_i64(),
        Some(expected),
        "totals stay exact"
    );
    let f = functions(&body);
    assert_eq!(f["loop"], (1_000_000, 1_000_000));
    assert!(
        f.contains_key("other"),
        "{:?}",
        f.keys().take(5).collect::<Vec<_>>()
    );

    // Other formats say it in the header.
    let (header, _) = agent_get(
        &d,
        "/render?query=wide.cpu&from=now-1h&until=now%2B1m&format=collapsed",
    );
    assert_eq!(header.as_deref(), Some(pruned.to_string().as_str()));
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains("kiln_queries_pruned_total 2"), "{metrics}");

    // A narrow service within the budget is exact and unmarked.
    let (status, _) = d.ingest(
        "name=narrow.cpu&format=folded",
        "text/plain",
        b"main;a 5\nmain;b 7\n",
    );
    assert_eq!(status, 200);
    let (header, body) = agent_get(&d, "/render?query=narrow.cpu&from=now-1h&until=now%2B1m");
    assert_eq!(header, None);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert!(body["pruned"].is_null());
    assert_eq!(body["flamebearer"]["numTicks"].as_i64(), Some(12));
}

/// GET returning the `kiln-pruned-nodes` header and the body.
fn agent_get(d: &Daemon, path: &str) -> (Option<String>, String) {
    let mut r = common::agent()
        .get(format!("{}{path}", d.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let header = r
        .headers()
        .get("kiln-pruned-nodes")
        .map(|v| v.to_str().unwrap().to_string());
    (header, r.body_mut().read_to_string().unwrap())
}

#[test]
fn dictionaries_leave_memory_past_their_budget_and_answers_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(&config, "[storage]\ndictionary_cache_bytes = 0\n").unwrap();
    let mut d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    for i in 0..5 {
        let body = format!("main;svc{i}_work {}\nmain;idle 1\n", 10 * (i + 1));
        let (status, text) = d.ingest(
            &format!("name=dict{i}.cpu&format=folded"),
            "text/plain",
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{text}");
    }
    let check = |d: &Daemon| {
        for i in 0..5 {
            let f = functions(&render(d, &format!("dict{i}.cpu")));
            assert_eq!(f[&format!("svc{i}_work")], (10 * (i + 1), 10 * (i + 1)));
            assert_eq!(f["idle"], (1, 1));
        }
    };
    check(&d);
    // Each flush leaves no dictionary resident; the queries read them back.
    let metric = |d: &Daemon, name: &str| -> f64 {
        d.metric(name)
            .unwrap_or_else(|| panic!("{name} missing: {}", d.get("/metrics").1))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&d, "kiln_storage_dictionary_evictions_total") < 5.0 {
        assert!(std::time::Instant::now() < deadline, "no evictions");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(metric(&d, "kiln_storage_dictionary_loads_total") >= 5.0);
    d.restart();
    check(&d);
    assert!(metric(&d, "kiln_storage_dictionary_loads_total") >= 5.0);
}

#[test]
fn grafana_pyroscope_paths_answer_the_same_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let (status, body) = d.ingest(
        "name=legacy.cpu%7Benv%3Dprod%7D&format=folded",
        "text/plain",
        b"main;a 3\nmain;b 4\n",
    );
    assert_eq!(status, 200, "{body}");
    let q = format!("query={}&from=now-1h&until=now%2B1m", enc("legacy.cpu"));
    let ours = d.get_json(&format!("/render?{q}"));
    let theirs = d.get_json(&format!("/pyroscope/render?{q}"));
    assert_eq!(ours["flamebearer"], theirs["flamebearer"]);
    assert_eq!(theirs["flamebearer"]["numTicks"], 7);
    let diff = d.get_json(&format!(
        "/pyroscope/render-diff?leftQuery={0}&rightQuery={0}&leftFrom=now-1h&leftUntil=now%2B1m&rightFrom=now-1h&rightUntil=now%2B1m",
        enc("legacy.cpu")
    ));
    assert_eq!(diff["leftTicks"], 7);
    let labels = d.get_json("/pyroscope/labels?query=legacy.cpu").to_string();
    assert!(labels.contains("env"), "{labels}");
    let values = d
        .get_json("/pyroscope/label-values?label=env&query=legacy.cpu")
        .to_string();
    assert!(values.contains("prod"), "{values}");
}

#[test]
fn chunks_packed_with_a_trained_compression_dictionary_answer_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let cpu = std::fs::read(testdata("go-cpu.pb.gz")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Enough chunks to train the service's dictionary (256 KiB of them), then more packed
    // with it: each push in a 10 s bucket of its own, over five hours.
    let push = |d: &Daemon, i: u64| {
        let from = now - 20_000 + i * 60;
        let (status, text) = d.ingest(
            &format!(
                "name={}&format=pprof&from={from}&until={}",
                enc(&format!("zdict.cpu{{pod=p{}}}", i % 10)),
                from + 10
            ),
            "application/octet-stream",
            &cpu,
        );
        assert_eq!(status, 200, "{text}");
    };
    for i in 0..200 {
        push(&d, i);
    }
    // The flush after these trains it; the pushes after that are packed with it.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    for i in 200..300 {
        push(&d, i);
    }
    let total = |d: &Daemon| {
        let r = d.get_json(&format!(
            "/render?query={}&from=now-6h&until=now",
            enc("zdict.cpu")
        ));
        r["flamebearer"]["numTicks"].as_i64().unwrap()
    };
    let before = total(&d);
    assert!(before > 0);
    d.restart();
    assert_eq!(
        d.metric("kiln_storage_compression_dictionary_bytes"),
        Some(0.0),
        "nothing sampled or prepared before the first use"
    );
    assert_eq!(total(&d), before);
    // Reading the chunks packed with it prepared the dictionary (zstd's tables, tens to
    // hundreds of KB with the dictionary's size): nothing else fills the gauge without writes.
    let prepared = d
        .metric("kiln_storage_compression_dictionary_bytes")
        .unwrap();
    assert!(prepared > 10_000.0, "{prepared}");
}
