//! The `forward` sink end to end, Kiln → Kiln: an edge daemon forwards what it stores to a
//! central daemon with auth on (an API key bound to a tenant); a central daemon that is down
//! for a while gets the queued profiles once it is back.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{agent, enc, Daemon};

/// Creates an API key on the (stopped) central daemon's data directory.
fn create_key(data: &Path, tenant: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "admin", "apikey", "create", "--name", "edge", "--role", "writer",
        ])
        .args([
            "--tenant",
            tenant,
            "--config",
            "/dev/null",
            "--storage-path",
        ])
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

/// The folded tree of `query` over the last hour, sorted, as `headers` see it.
fn folded(d: &Daemon, query: &str, headers: &[(&str, &str)]) -> String {
    let mut req = agent().get(format!(
        "{}/render?query={}&from=now-1h&until=now&format=collapsed",
        d.url,
        enc(query)
    ));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 200, "{body}");
    let mut lines: Vec<&str> = body.lines().collect();
    lines.sort();
    lines.join("\n")
}

fn push(d: &Daemon, name: &str, body: &str) {
    let (s, m) = d.ingest(
        &format!("name={}&from=now-10s&until=now&sampleRate=100", enc(name)),
        "text/plain",
        body.as_bytes(),
    );
    assert_eq!(s, 200, "{m}");
}

/// Waits until `f` holds (at most 30 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_edge_forwards_to_a_central_daemon_with_auth_and_catches_up_after_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let central_dir = dir.path().join("central");
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&central_dir).unwrap();
    std::fs::create_dir_all(&edge_dir).unwrap();
    let key = create_key(&central_dir.join("data"), "team-a");
    let mut central = Daemon::start(&central_dir, &["--auth"]);

    let config = edge_dir.join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "[sinks.central]\ntype = \"forward\"\nurl = \"{}\"\ntenant = \"team-a\"\n\
             timeout = \"2s\"\nmax_backoff = \"500ms\"\n\
             [sinks.central.headers]\nAuthorization = \"Bearer {key}\"\n\
             [pipelines.default]\nsinks = [\"central\"]\n",
            central.url
        ),
    )
    .unwrap();
    let edge = Daemon::start(&edge_dir, &["--config", config.to_str().unwrap()]);

    push(&edge, "shop.cpu{env=prod}", "main;work 70\nmain;idle 30\n");
    let auth = format!("Bearer {key}");
    let headers = [("Authorization", auth.as_str())];
    assert_eq!(folded(&edge, "shop.cpu", &[]), "main;idle 30\nmain;work 70");
    eventually("the profile reaches the central daemon", || {
        folded(&central, "shop.cpu{env=\"prod\"}", &headers) == "main;idle 30\nmain;work 70"
    });

    // The central daemon goes away; the edge keeps accepting and queues.
    central.keep_port = true;
    central.stop();
    push(&edge, "shop.cpu{env=prod}", "main;late 5\n");
    push(&edge, "billing.cpu{env=prod}", "main;bill 9\n");
    std::thread::sleep(Duration::from_secs(2));
    central.spawn();
    eventually("the queued profiles arrive after the outage", || {
        folded(&central, "shop.cpu", &headers) == "main;idle 30\nmain;late 5\nmain;work 70"
            && folded(&central, "billing.cpu", &headers) == "main;bill 9"
    });
    let (_, metrics) = edge.get("/metrics");
    assert!(
        metrics.contains("kiln_sink_errors_total{sink=\"central\"}"),
        "failed attempts are counted: {metrics}"
    );
}
