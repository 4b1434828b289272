//! Native plugins: the perf-script example decoder loaded from a plugins directory and used on
//! /ingest; a sink, a render format and a storage backend as native libraries; the files the
//! host must refuse (wrong ABI, missing symbol, not a library); and a panicking plugin that must
//! not take the daemon down.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::conformance::{answers, ingest_fixture, recent_base};
use common::{config, enc, kiln, Daemon};

/// Builds the plugin crates (a no-op when `cargo build --workspace` already did) and returns
/// the directory holding their libraries.
fn plugin_libs() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "build",
            "-p",
            "kiln-perf-script",
            "-p",
            "kiln-test-plugin-wrong-abi",
            "-p",
            "kiln-test-plugin-old-storage",
            "-p",
            "kiln-test-plugin-panicking",
            "-p",
            "kiln-test-plugin-native-sink",
            "-p",
            "kiln-test-plugin-native-render",
            "-p",
            "kiln-memory-storage",
        ])
        .status()
        .unwrap();
    assert!(status.success(), "building the plugin crates failed");
    // Integration tests run from target/debug/deps; the libraries sit in target/debug.
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn plugins_dir(libs: &Path, dir: &Path, names: &[&str]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for n in names {
        std::fs::copy(libs.join(n), plugins.join(n)).unwrap();
    }
    plugins
}

#[test]
fn perf_script_plugin_decodes_on_ingest() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&libs, dir.path(), &["libkiln_perf_script.so"]);
    let d = Daemon::start(dir.path(), &["--plugins-dir", plugins.to_str().unwrap()]);
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/native-decoder/testdata/perf-script.txt"),
    )
    .unwrap();
    let (s, m) = d.ingest(
        &format!("name={}&format=perf-script", enc("perfapp.cpu")),
        "text/plain",
        &body,
    );
    assert_eq!(s, 200, "{m}");
    let r = d.get_json(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m",
        enc("perfapp.cpu")
    ));
    assert_eq!(r["flamebearer"]["numTicks"], 4);
    assert!(r["flamebearer"]["names"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "sha256_block"));
    let (s, m) = d.ingest(
        &format!("name={}&format=perf-script", enc("perfapp.cpu")),
        "text/plain",
        b"\tdeadbeef orphan (x)\n",
    );
    assert_eq!(s, 400, "{m}");
    assert!(m.contains("line 1"), "{m}");

    let (ok, out) = kiln(&[
        "plugins",
        "list",
        "--config",
        "/dev/null",
        "--plugins-dir",
        plugins.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("perf-script")
            && out.contains("decoder")
            && out.contains("0.1.0")
            && out.contains(" ok"),
        "{out}"
    );
}

#[test]
fn bad_plugin_files_are_refused_naming_file_and_cause() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let wrong = libs.join("libkiln_test_plugin_wrong_abi.so");
    let (ok, out) = kiln(&["plugins", "check", wrong.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("libkiln_test_plugin_wrong_abi.so") && out.contains("ABI version 3"),
        "{out}"
    );
    // A storage plugin from before tenants: refused, saying why and what to do.
    let old = libs.join("libkiln_test_plugin_old_storage.so");
    let (ok, out) = kiln(&["plugins", "check", old.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("libkiln_test_plugin_old_storage.so")
            && out.contains("ABI version 1")
            && out.contains("tenant")
            && out.contains("rebuild"),
        "{out}"
    );
    let text = dir.path().join("notes.so");
    std::fs::write(&text, "not a library").unwrap();
    let (ok, out) = kiln(&["plugins", "check", text.to_str().unwrap()]);
    assert!(
        !ok && out.contains("notes.so") && out.contains("not a loadable library"),
        "{out}"
    );
    // A real shared library that is not a Kiln plugin: this test binary's own libc.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("a libc to try");
    let (ok, out) = kiln(&["plugins", "check", libc]);
    assert!(!ok && out.contains("kiln_plugin_entry"), "{out}");
    // The daemon starts anyway and serves, logging the refusals.
    let plugins = plugins_dir(&libs, dir.path(), &["libkiln_test_plugin_wrong_abi.so"]);
    std::fs::copy(&text, plugins.join("notes.so")).unwrap();
    let d = Daemon::start(dir.path(), &["--plugins-dir", plugins.to_str().unwrap()]);
    let (s, _) = d.get("/healthz");
    assert_eq!(s, 200);
    let (s, m) = d.ingest(
        &format!("name={}&format=future", enc("x.cpu")),
        "text/plain",
        b"a 1\n",
    );
    assert_eq!(s, 400, "a refused plugin provides no format: {m}");
}

#[test]
fn a_panicking_plugin_fails_its_call_only() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&libs, dir.path(), &["libkiln_test_plugin_panicking.so"]);
    let d = Daemon::start(dir.path(), &["--plugins-dir", plugins.to_str().unwrap()]);
    for _ in 0..3 {
        let (s, m) = d.ingest(
            &format!("name={}&format=panicking", enc("p.cpu")),
            "text/plain",
            b"abc",
        );
        assert_eq!(s, 400, "{m}");
        assert!(
            m.contains("panicked") && m.contains("boom on 3 bytes"),
            "{m}"
        );
    }
    let (s, m) = d.ingest(
        &format!("name={}&format=folded", enc("p.cpu")),
        "text/plain",
        b"a;b 2\n",
    );
    assert_eq!(s, 200, "the daemon keeps serving: {m}");
}

#[test]
fn reload_picks_up_plugins_and_keeps_serving_on_a_broken_config() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!("[server]\nplugins_dir = {:?}\n", plugins.to_str().unwrap()),
    )
    .unwrap();
    let d = Daemon::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/native-decoder/testdata/perf-script.txt"),
    )
    .unwrap();
    let push = || {
        d.ingest(
            &format!("name={}&format=perf-script", enc("reload.cpu")),
            "text/plain",
            &body,
        )
    };
    assert_eq!(push().0, 400, "no plugin yet");

    // Drop the plugin in and reload with SIGHUP.
    std::fs::copy(
        libs.join("libkiln_perf_script.so"),
        plugins.join("libkiln_perf_script.so"),
    )
    .unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &d.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while push().0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not load the plugin"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // A broken configuration is refused; the running one keeps serving.
    std::fs::write(&config, "[server]\nplugins_dri = 1\n").unwrap();
    let (ok, out) = kiln(&["reload", "--server", &d.url]);
    assert!(!ok && out.contains("plugins_dri"), "{out}");
    assert_eq!(push().0, 200);
}

#[test]
fn native_sink_and_render_plugins_serve_a_pipeline_and_a_render_format() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(
        &libs,
        dir.path(),
        &[
            "libkiln_test_plugin_native_sink.so",
            "libkiln_test_plugin_native_render.so",
        ],
    );
    let lines = dir.path().join("lines.txt");
    let cfg = config(
        dir.path(),
        &plugins,
        &format!(
            "[sinks.lines]\ntype = \"line-per-profile\"\npath = {lines:?}\n\
             [pipelines.default]\nsinks = [\"lines\"]\n"
        ),
    );
    let d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    for (name, body) in [
        ("nat.cpu", "main;hash 70\nmain;io 30\n"),
        ("nat.cpu", "main;hash 5\n"),
    ] {
        let (s, m) = d.ingest(
            &format!("name={}&format=folded", enc(name)),
            "text/plain",
            body.as_bytes(),
        );
        assert_eq!(s, 200, "{m}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&lines).unwrap_or_default();
        if text.lines().count() == 2 {
            assert_eq!(text, "nat cpu 100\nnat cpu 5\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the sink wrote {text:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let (s, text) = d.get(&format!(
        "/render?query={}&from=now-1h&until=now%2B1m&format=tree-text",
        enc("nat.cpu")
    ));
    assert_eq!(s, 200, "{text}");
    assert_eq!(
        text, "nat.cpu\ntotal 105\n  main 105\n    hash 75\n    io 30\n",
        "children in the tree's order, each with its total"
    );

    // Options the plugin refuses fail the configuration, naming the sink.
    let bad = config(
        dir.path(),
        &plugins,
        "[sinks.lines]\ntype = \"line-per-profile\"\npth = \"x\"\n",
    );
    let (ok, out) = kiln(&["validate", "--config", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("sinks.lines") && out.contains("pth"),
        "{out}"
    );
}

#[test]
fn memory_storage_plugin_answers_like_the_built_in_backend() {
    let libs = plugin_libs();
    let sled_dir = tempfile::tempdir().unwrap();
    let sled = Daemon::start(sled_dir.path(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&libs, dir.path(), &["libkiln_memory_storage.so"]);
    let cfg = config(
        dir.path(),
        &plugins,
        "[storage]\ntype = \"memory\"\n[storage.options]\nmax_profiles = 1000\n",
    );
    let memory = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let base = recent_base();
    ingest_fixture(&sled, base);
    ingest_fixture(&memory, base);

    let expected = answers(&sled, base);
    assert_eq!(expected[0]["numTicks"], 120, "the fixture reached sled");
    let points = expected[1]["samples"].as_array().unwrap();
    assert_eq!(
        (points[100].clone(), points[101].clone()),
        (100.into(), 9.into())
    );
    assert_eq!(answers(&memory, base), expected);

    // Deleting a service goes through the plugin too.
    for d in [&sled, &memory] {
        let r = common::agent()
            .delete(format!("{}/api/apps", d.url))
            .force_send_body()
            .send(r#"{"name":"cart.cpu"}"#)
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let apps = memory.get_json("/api/apps");
    assert_eq!(apps, sled.get_json("/api/apps"));
    assert!(!apps.to_string().contains("cart"), "{apps}");

    let (ok, out) = kiln(&[
        "plugins",
        "list",
        "--config",
        "/dev/null",
        "--plugins-dir",
        plugins.to_str().unwrap(),
    ]);
    assert!(
        ok && out.contains("memory") && out.contains("storage"),
        "{out}"
    );
}

#[test]
fn storage_plugin_mistakes_fail_the_configuration_by_name() {
    let libs = plugin_libs();
    let dir = tempfile::tempdir().unwrap();
    let plugins = plugins_dir(&libs, dir.path(), &["libkiln_memory_storage.so"]);
    let bad_option = config(
        dir.path(),
        &plugins,
        "[storage]\ntype = \"memory\"\n[storage.options]\nmax_profile = 10\n",
    );
    let (ok, out) = kiln(&["validate", "--config", bad_option.to_str().unwrap()]);
    assert!(
        !ok && out.contains("max_profile") && out.contains("kiln.toml"),
        "{out}"
    );

    let unknown = config(dir.path(), &plugins, "[storage]\ntype = \"memroy\"\n");
    let (ok, out) = kiln(&["validate", "--config", unknown.to_str().unwrap()]);
    assert!(
        !ok && out.contains("memroy") && out.contains("memory"),
        "{out}"
    );
}
