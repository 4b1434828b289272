//! Wasm plugins end to end: the example sink and render plugins loaded from a plugins directory,
//! the sandbox (granted directory, allow-listed webhook), faults (trap, endless loop, unbounded
//! allocation) failing only their call and disabling a plugin that keeps faulting, and the
//! files and configurations the daemon must refuse.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{config, enc, kiln, Daemon};

const GUESTS: &[(&str, &str)] = &[
    ("examples/wasm-exporter-rust", "kiln_top_functions.wasm"),
    ("examples/wasm-render", "kiln_render_dot.wasm"),
    ("tests/wasm/faulty", "kiln_test_faulty.wasm"),
    ("tests/wasm/future-version", "kiln_test_future_version.wasm"),
    ("tests/wasm/sink-v0-2", "kiln_test_sink_v0_2.wasm"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the guest crates for wasm32-wasip2 (incremental: a no-op when up to date) and returns
/// the directory holding the components.
fn guests() -> PathBuf {
    let target = root().join("target/wasm-guests");
    for (dir, _) in GUESTS {
        let status = Command::new(env!("CARGO"))
            .current_dir(root().join(dir))
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--quiet",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building the Wasm guest {dir} failed");
    }
    target.join("wasm32-wasip2/release")
}

/// A plugins directory under `dir` holding the named components.
fn plugins_dir(dir: &Path, names: &[&str]) -> PathBuf {
    let built = guests();
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for n in names {
        std::fs::copy(built.join(n), plugins.join(n)).unwrap();
    }
    plugins
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FOLDED: &[u8] = b"main;hash 70\nmain;alloc 20\nmain;io 10\n";

fn ingest_folded(d: &Daemon, name: &str) {
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc(name)),
        "text/plain",
        FOLDED,
    );
    assert_eq!(s, 200, "{m}");
}

/// Accepts HTTP POSTs on a free port and hands their bodies over.
fn webhook() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .unwrap();
            let _ = tx.send(String::from_utf8(body).unwrap());
        }
    });
    (url, rx)
}

#[test]
fn sink_plugin_writes_into_its_granted_dir_and_posts_to_an_allowed_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_top_functions.wasm"]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let (url, posted) = webhook();
    let cfg = config(
        dir.path(),
        &plugins,
        &format!(
            r#"
[sinks.top]
type = "top-functions"
top = 2
[sinks.top.sandbox]
dir = {out:?}

[sinks.hook]
type = "top-functions"
webhook = "{url}"
[sinks.hook.sandbox]
http_allow = ["{url}"]

[sinks.forbidden]
type = "top-functions"
webhook = "{url}"

[pipelines.default]
sinks = ["top", "hook", "forbidden"]
"#
        ),
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    ingest_folded(&d, "shop.cpu{env=e2e}");

    let file = out.join("top-functions.jsonl");
    wait_for("the sink's file", || file.exists());
    let text = std::fs::read_to_string(&file).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["service"], "shop");
    assert_eq!(line["type"], "cpu");
    assert_eq!(line["labels"]["env"], "e2e");
    assert_eq!(line["total"], 100);
    let top = line["top"].as_array().unwrap();
    assert_eq!(top.len(), 2, "{line}");
    assert_eq!(top[0]["function"], "hash");
    assert_eq!(top[0]["self"], 70);
    assert_eq!(top[1]["function"], "alloc");
    // What the sink's calls cost is counted.
    let cpu = d
        .metric("kiln_plugin_cpu_seconds_total{plugin=\"top-functions\"}")
        .expect("the plugin's CPU is exported");
    assert!(cpu > 0.0 && cpu < 60.0, "{cpu}");

    // The allow-listed webhook receives the same line; the sink without the grant is refused.
    let body = posted.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(body.contains("\"function\":\"hash\""), "{body}");
    wait_for("the refused webhook to count as a sink error", || {
        d.metric("kiln_sink_errors_total{sink=\"forbidden\"}") == Some(1.0)
    });
    assert!(posted.recv_timeout(Duration::from_millis(500)).is_err());
    // Nothing escapes the granted directory.
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn render_plugin_is_served_as_a_render_format() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_render_dot.wasm"]);
    let cfg = config(dir.path(), &plugins, "[plugins.dot]\nnode_fraction = 0.0\n");
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    ingest_folded(&d, "graph.cpu");

    let query = format!(
        "/render?query={}&from=now-1h&until=now%2B1m&format=dot",
        enc("graph.cpu")
    );
    let mut r = common::agent()
        .get(format!("{}{query}", d.url))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
    let disposition = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.body_mut().read_to_string().unwrap();
    assert!(
        content_type.starts_with("text/vnd.graphviz"),
        "{content_type}"
    );
    assert!(disposition.contains("graph.cpu.dot"), "{disposition}");
    assert!(body.starts_with("digraph \"graph.cpu\""), "{body}");
    assert!(body.contains("hash\\nself 70 (70.0%)"), "{body}");
    // main calls hash, alloc and io: three edges weighted by their totals.
    assert_eq!(body.matches(" -> ").count(), 3, "{body}");
    assert!(body.contains("[label=\"70\""), "{body}");

    // Unknown formats list the plugin among the available ones.
    let (s, m) = d.get(&query.replace("format=dot", "format=nope"));
    assert_eq!(s, 400);
    assert!(m.contains("dot"), "{m}");
}

#[test]
fn faults_fail_only_their_call_and_a_plugin_that_keeps_faulting_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_test_faulty.wasm"]);
    let cfg = config(
        dir.path(),
        &plugins,
        r#"
[plugins.faulty.sandbox]
timeout = "300ms"
max_memory_mb = 32
max_consecutive_faults = 3
"#,
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let faulty = |body: &str| {
        d.ingest(
            &format!("name={}&format=faulty", enc("faults.cpu")),
            "text/plain",
            body.as_bytes(),
        )
    };
    let fault_count = |kind: &str| {
        d.metric(&format!(
            "kiln_plugin_faults_total{{plugin=\"faulty\",kind=\"{kind}\"}}"
        ))
    };

    assert_eq!(faulty("ok").0, 200);
    let (s, m) = faulty("trap");
    assert_eq!(s, 400);
    assert!(m.contains("trap fault"), "{m}");
    assert_eq!(faulty("ok").0, 200, "the instance is rebuilt after a trap");

    let started = Instant::now();
    let (s, m) = faulty("loop");
    assert_eq!(s, 400);
    assert!(m.contains("timeout"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(faulty("ok").0, 200);

    let (s, m) = faulty("grow");
    assert_eq!(s, 400);
    assert!(m.contains("memory"), "{m}");
    assert_eq!(faulty("ok").0, 200);

    // A plugin's own error is the request's problem, not a fault.
    let (s, m) = faulty("error");
    assert_eq!(s, 400);
    assert!(m.contains("asked to fail"), "{m}");
    // Output that breaks the model is refused like any decoder's, without counting as a fault.
    let (s, m) = faulty("badstack");
    assert_eq!(s, 400);
    assert!(m.contains("past the 1 stack entries"), "{m}");

    assert_eq!(fault_count("trap"), Some(1.0));
    assert_eq!(fault_count("timeout"), Some(1.0));
    assert_eq!(fault_count("memory"), Some(1.0));

    // Three faults in a row disable it; other formats keep working.
    for _ in 0..3 {
        assert_eq!(faulty("trap").0, 400);
    }
    let (s, m) = faulty("ok");
    assert_eq!(s, 400);
    assert!(m.contains("disabled"), "{m}");
    assert_eq!(
        d.metric("kiln_plugin_disabled{plugin=\"faulty\"}"),
        Some(1.0)
    );
    ingest_folded(&d, "healthy.cpu");
    let r = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc("faults.cpu")
    ));
    assert_eq!(
        r["flamebearer"]["numTicks"], 4,
        "every ok profile is stored"
    );

    // A reload starts a fresh instance.
    let (ok, out) = kiln(&["reload", "--server", &d.url]);
    assert!(ok, "{out}");
    assert_eq!(faulty("ok").0, 200);
    assert_eq!(d.metric("kiln_plugin_disabled{plugin=\"faulty\"}"), None);
}

#[test]
fn refused_plugin_files_name_the_file_and_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(
        dir.path(),
        &["kiln_test_future_version.wasm", "kiln_top_functions.wasm"],
    );
    std::fs::write(plugins.join("notes.wasm"), "not a component").unwrap();
    let cfg = config(dir.path(), &plugins, "");

    let (ok, out) = kiln(&["plugins", "list", "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    let line = |file: &str| {
        out.lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not listed:\n{out}"))
            .to_string()
    };
    let future = line("kiln_test_future_version.wasm");
    assert!(
        future.contains("refused")
            && future.contains("kiln:plugin@0.4.0")
            && future.contains("kiln:plugin@0.3.0"),
        "{future}"
    );
    let notes = line("notes.wasm");
    assert!(
        notes.contains("refused") && notes.contains("not a WebAssembly component"),
        "{notes}"
    );
    let good = line("kiln_top_functions.wasm");
    assert!(
        good.contains("top-functions")
            && good.contains("sink")
            && good.contains("wasm")
            && good.ends_with("ok"),
        "{good}"
    );

    let (ok, out) = kiln(&[
        "plugins",
        "check",
        plugins
            .join("kiln_test_future_version.wasm")
            .to_str()
            .unwrap(),
    ]);
    assert!(!ok);
    assert!(out.contains("kiln:plugin@0.3.0"), "{out}");

    // The daemon starts with the good plugin despite the refused ones.
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    ingest_folded(&d, "still.cpu");
}

#[test]
fn plugin_configuration_errors_name_file_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_top_functions.wasm"]);
    let validate = |rest: &str| {
        let cfg = config(dir.path(), &plugins, rest);
        kiln(&["validate", "--config", cfg.to_str().unwrap()])
    };

    let (ok, out) = validate("[sinks.top]\ntype = \"top-functions\"\ntopp = 3\n");
    assert!(!ok);
    assert!(
        out.contains("kiln.toml") && out.contains("[sinks.top]") && out.contains("topp"),
        "{out}"
    );

    let (ok, out) =
        validate("[sinks.top]\ntype = \"top-functions\"\n[sinks.top.sandbox]\nmemory = 1\n");
    assert!(!ok);
    assert!(
        out.contains("[sinks.top.sandbox]") && out.contains("memory"),
        "{out}"
    );

    let (ok, out) = validate(
        "[sinks.top]\ntype = \"top-functions\"\n[sinks.top.sandbox]\ndir = \"/no/such/dir\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains("sinks.top") && out.contains("/no/such/dir"),
        "{out}"
    );

    let (ok, out) =
        validate("[sinks.top]\ntype = \"top-functionz\"\n[pipelines.default]\nsinks = [\"top\"]\n");
    assert!(!ok);
    assert!(
        out.contains("[sinks.top]")
            && out.contains("top-functionz")
            && out.contains("top-functions"),
        "{out}"
    );

    let (ok, out) = validate("[sinks.top]\ntype = \"top-functions\"\ntop = 5\n");
    assert!(ok, "{out}");
}

#[test]
fn reload_with_a_broken_plugin_keeps_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_top_functions.wasm"]);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let cfg = config(
        dir.path(),
        &plugins,
        &format!(
            "[sinks.top]\ntype = \"top-functions\"\n[sinks.top.sandbox]\ndir = {out:?}\n[pipelines.default]\nsinks = [\"top\"]\n"
        ),
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let file = out.join("top-functions.jsonl");
    let lines = || {
        std::fs::read_to_string(&file)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    ingest_folded(&d, "before.cpu");
    wait_for("the first line", || lines() == 1);

    // The plugin file is overwritten with garbage: the reload is refused and says why.
    std::fs::write(plugins.join("kiln_top_functions.wasm"), b"\0asm garbage").unwrap();
    let (ok, msg) = kiln(&["reload", "--server", &d.url]);
    assert!(!ok);
    assert!(msg.contains("top-functions"), "{msg}");

    // The running instance keeps serving.
    ingest_folded(&d, "after.cpu");
    wait_for("the second line", || lines() == 2);
}

#[test]
fn a_sink_gets_only_the_types_it_asked_for_and_pushes_batched_within_batch_wait() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(dir.path(), &["kiln_top_functions.wasm"]);
    let (url, posted) = webhook();
    // The plugin refuses unknown options, so this also shows `batch_wait` never reaches it.
    let cfg = config(
        dir.path(),
        &plugins,
        &format!(
            r#"
[sinks.hook]
type = "top-functions"
types = ["cpu"]
webhook = "{url}"
batch_wait = "3s"
[sinks.hook.sandbox]
http_allow = ["{url}"]

[pipelines.default]
sinks = ["hook"]
"#
        ),
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let body = std::fs::read(root().join("testdata/go-cpu.pb.gz")).unwrap();
    let start = Instant::now();
    for pod in ["a", "b", "c"] {
        let (s, m) = d.ingest(
            &format!(
                "name={}&format=pprof",
                enc(&format!("batched{{pod={pod}}}"))
            ),
            "application/octet-stream",
            &body,
        );
        assert_eq!(s, 200, "{m}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "pushes too slow for this check"
    );
    // Each push stores two profile types; the sink asked for `cpu` only. The three pushes,
    // well within the wait, reach it as one call: one POST of three lines.
    let posted_body = posted.recv_timeout(Duration::from_secs(20)).unwrap();
    let lines: Vec<serde_json::Value> = posted_body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{posted_body}");
    assert!(lines.iter().all(|l| l["type"] == "cpu"), "{posted_body}");
    let mut pods: Vec<_> = lines
        .iter()
        .map(|l| l["labels"]["pod"].as_str().unwrap().to_string())
        .collect();
    pods.sort();
    assert_eq!(pods, ["a", "b", "c"]);
    assert!(posted.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn a_batch_wait_on_a_transform_or_past_its_bound_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (table, want) in [
        (
            "[transforms.t]\ntype = \"relabel\"\nbatch_wait = \"1s\"\n",
            "in [transforms.t], key `batch_wait`",
        ),
        (
            "[sinks.s]\ntype = \"log\"\nbatch_wait = \"1h\"\n",
            "in [sinks.s], key `batch_wait`: at most 10s",
        ),
        (
            "[sinks.s]\ntype = \"log\"\nbatch_wait = \"soon\"\n",
            "batch_wait",
        ),
    ] {
        let cfg = dir.path().join("kiln.toml");
        std::fs::write(&cfg, table).unwrap();
        let (ok, err) = kiln(&["validate", "--config", cfg.to_str().unwrap()]);
        assert!(!ok, "{table} was accepted");
        assert!(err.contains(want), "{table}: {err}");
    }
}

#[test]
fn the_types_of_one_pprof_reach_sinks_of_every_contract_version_whole() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(
        dir.path(),
        &["kiln_top_functions.wasm", "kiln_test_sink_v0_2.wasm"],
    );
    let (new, old) = (dir.path().join("new"), dir.path().join("old"));
    std::fs::create_dir(&new).unwrap();
    std::fs::create_dir(&old).unwrap();
    let cfg = config(
        dir.path(),
        &plugins,
        &format!(
            r#"
[sinks.top]
type = "top-functions"
top = 5
[sinks.top.sandbox]
dir = {new:?}

[sinks.old]
type = "sink-v0-2"
[sinks.old.sandbox]
dir = {old:?}

[pipelines.default]
sinks = ["top", "old"]
"#
        ),
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let body = std::fs::read(root().join("testdata/go-cpu.pb.gz")).unwrap();
    let (s, m) = d.ingest("name=pair&format=pprof", "application/octet-stream", &body);
    assert_eq!(s, 200, "{m}");

    // A 0.3.0 sink gets the second type without the stacks it shares with the first, and
    // reads them from the profile before it: the same functions, each CPU time 10 ms a sample.
    let lines = |file: &Path| {
        std::fs::read_to_string(file)
            .map(|t| t.lines().map(String::from).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let top_file = new.join("top-functions.jsonl");
    wait_for("both types in the 0.3.0 sink's file", || {
        lines(&top_file).len() == 2
    });
    let by_type = |ty: &str| -> serde_json::Value {
        lines(&top_file)
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["type"] == ty)
            .unwrap_or_else(|| panic!("no {ty} line: {:?}", lines(&top_file)))
    };
    // Pyroscope's names for a Go CPU pprof's two types: the samples, and their CPU time.
    let (samples, cpu) = (by_type("cpu"), by_type("cpu_nanoseconds"));
    let (samples_top, cpu_top) = (
        samples["top"].as_array().unwrap(),
        cpu["top"].as_array().unwrap(),
    );
    assert_eq!(samples_top.len(), 5, "{samples}");
    assert_eq!(cpu_top.len(), 5, "{cpu}");
    for (s, c) in samples_top.iter().zip(cpu_top) {
        assert_eq!(s["function"], c["function"], "{samples} / {cpu}");
        assert_eq!(
            s["self"].as_i64().unwrap() * 10_000_000,
            c["self"].as_i64().unwrap()
        );
    }
    assert_eq!(
        samples["total"].as_i64().unwrap() * 10_000_000,
        cpu["total"].as_i64().unwrap()
    );

    // A 0.2.0 sink still loads, and gets every profile with its frames and stacks.
    let old_file = old.join("profiles.txt");
    wait_for("both types in the 0.2.0 sink's file", || {
        lines(&old_file).len() == 2
    });
    let fields = |ty: &str| -> Vec<i64> {
        let line = lines(&old_file)
            .into_iter()
            .find(|l| l.starts_with(&format!("{ty} ")))
            .unwrap_or_else(|| panic!("no {ty} line: {:?}", lines(&old_file)));
        line.split(' ')
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect()
    };
    let (s, c) = (fields("cpu"), fields("cpu_nanoseconds"));
    assert_eq!(s[0], samples["total"].as_i64().unwrap());
    assert_eq!(c[0], s[0] * 10_000_000);
    assert!(s[1] > 0 && s[2] > 0 && s[3] >= s[2], "{s:?}");
    assert_eq!(
        s[1..],
        c[1..],
        "frames, samples and stack entries: {s:?} / {c:?}"
    );
    let old_plugin = plugins.join("kiln_test_sink_v0_2.wasm");
    let (ok, out) = kiln(&["plugins", "check", old_plugin.to_str().unwrap()]);
    assert!(
        ok && out.contains("(sink), WIT kiln:plugin@0.2.0: ok"),
        "{out}"
    );
}
