//! Tenants and API keys end to end: every endpoint × every bad credential gets the right
//! 401/403 with a body saying why and changes nothing; tenants never see each other's data;
//! keys created on the data directory reach a running daemon; a replay after `kill -9` keeps
//! each push's tenant; keys never show up in logs or metrics.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{agent, enc, Daemon};
use serde_json::Value;

/// `kiln admin apikey …` on the data directory: (success, stdout, stderr).
fn admin(data: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["admin", "apikey"])
        .args(args)
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(data)
        .env_remove("KILN_AUTH_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Creates a key offline; the key is stdout's only line.
fn create_key(data: &Path, name: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    let (ok, out, err) = admin(data, &args);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds the key alone: {out:?}");
    assert!(lines[0].starts_with("kiln_"), "{out}");
    assert!(!err.contains(lines[0]), "the key is not repeated on stderr");
    lines[0].to_string()
}

fn key_id(data: &Path, name: &str) -> String {
    let (ok, out, err) = admin(data, &["list"]);
    assert!(ok, "{err}");
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key {name} in {out}"))
        .to_string()
}

/// One request: method, path and query, headers, body → status and body.
fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let url = format!("{}{path}", d.url);
    let a = agent();
    macro_rules! with_headers {
        ($r:expr) => {{
            let mut r = $r;
            for (k, v) in headers {
                r = r.header(*k, v.as_str());
            }
            r
        }};
    }
    let resp = match method {
        "GET" => with_headers!(a.get(&url)).call(),
        "POST" => with_headers!(a.post(&url)).send(body),
        "DELETE" => with_headers!(a.delete(&url)).force_send_body().send(body),
        m => panic!("method {m}"),
    };
    let mut resp = resp.unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

type Headers = Vec<(&'static str, String)>;

fn bearer(key: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {key}"))
}

fn basic(user: &str, key: &str) -> (&'static str, String) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"));
    ("Authorization", format!("Basic {b64}"))
}

fn org(tenant: &str) -> (&'static str, String) {
    ("X-Scope-OrgID", tenant.to_string())
}

/// Pushes `stack value` lines as app `app` (folded).
fn push(d: &Daemon, app: &str, headers: &[(&str, String)], body: &str) -> (u16, String) {
    call(
        d,
        "POST",
        &format!(
            "/ingest?name={}&from=now-10s&until=now",
            enc(&format!("{app}.cpu"))
        ),
        headers,
        body.as_bytes(),
    )
}

/// The folded tree of `app.cpu` over the last hour as `headers` see it.
fn folded(d: &Daemon, app: &str, headers: &[(&str, String)]) -> String {
    let (s, body) = call(
        d,
        "GET",
        &format!(
            "/render?query={}&from=now-1h&until=now&format=collapsed",
            enc(&format!("{app}.cpu"))
        ),
        headers,
        b"",
    );
    assert_eq!(s, 200, "{body}");
    let mut lines: Vec<&str> = body.lines().collect();
    lines.sort();
    lines.join("\n")
}

fn apps(d: &Daemon, headers: &[(&str, String)]) -> Vec<String> {
    let (s, body) = call(d, "GET", "/api/apps", headers, b"");
    assert_eq!(s, 200, "{body}");
    let v: Vec<Value> = serde_json::from_str(&body).unwrap();
    v.iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

/// Every endpoint: method, path, body, the access it needs.
fn endpoints() -> Vec<(&'static str, String, Vec<u8>, &'static str)> {
    let q = |s: &str| enc(s);
    vec![
        (
            "POST",
            format!("/ingest?name={}", q("matrix.cpu")),
            b"main;a 1\n".to_vec(),
            "write",
        ),
        (
            "POST",
            format!("/pyroscope/ingest?name={}", q("matrix.cpu")),
            b"main;a 1\n".to_vec(),
            "write",
        ),
        (
            "POST",
            "/push.v1.PusherService/Push".into(),
            br#"{"series":[]}"#.to_vec(),
            "write",
        ),
        (
            "POST",
            "/v1development/profiles".into(),
            b"{}".to_vec(),
            "write",
        ),
        (
            "GET",
            format!("/render?query={}", q("seed.cpu")),
            vec![],
            "read",
        ),
        (
            "GET",
            format!("/render?query={}&format=pprof", q("seed.cpu")),
            vec![],
            "read",
        ),
        (
            "GET",
            format!("/render-diff?leftQuery={0}&rightQuery={0}", q("seed.cpu")),
            vec![],
            "read",
        ),
        ("GET", "/labels".into(), vec![], "read"),
        (
            "GET",
            "/label-values?label=service_name".into(),
            vec![],
            "read",
        ),
        ("GET", "/api/apps".into(), vec![], "read"),
        ("GET", "/api/storage".into(), vec![], "read"),
        ("GET", "/metrics".into(), vec![], "read"),
        (
            "DELETE",
            "/api/apps".into(),
            br#"{"name":"seed.cpu"}"#.to_vec(),
            "admin",
        ),
        ("POST", "/-/reload".into(), vec![], "admin"),
        ("GET", "/api/admin/apikeys".into(), vec![], "admin"),
        (
            "POST",
            "/api/admin/apikeys".into(),
            br#"{"name":"sneaky","role":"admin"}"#.to_vec(),
            "admin",
        ),
        (
            "DELETE",
            "/api/admin/apikeys/000000000000".into(),
            vec![],
            "admin",
        ),
    ]
}

#[test]
fn every_endpoint_refuses_every_bad_credential_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let writer_a = create_key(&data, "writer-a", "writer", &["--tenant", "team-a"]);
    let reader_a = create_key(&data, "reader-a", "reader", &["--tenant", "team-a"]);
    let writer_b = create_key(&data, "writer-b", "writer", &["--tenant", "team-b"]);
    let admin_b = create_key(&data, "admin-b", "admin", &["--tenant", "team-b"]);
    let revoked = create_key(&data, "gone", "admin", &["--tenant", "team-a"]);
    let (ok, _, err) = admin(&data, &["revoke", &key_id(&data, "gone")]);
    assert!(ok && err.contains("revoked"), "{err}");
    let expired = create_key(
        &data,
        "brief",
        "admin",
        &["--tenant", "team-a", "--expires", "1s"],
    );
    let root = create_key(&data, "root", "admin", &[]);

    let log = dir.path().join("kiln.log");
    let mut d = Daemon::start(dir.path(), &["--auth"]);
    // Started with inherited stderr; restarted logging to a file, to look for keys in it.
    d.log = Some(log.clone());
    d.restart();

    // Seed: team-a's app, pushed with Basic auth (the key as password), as the Python and
    // Rust agents send it.
    let (s, body) = push(&d, "seed", &[basic("team-a", &writer_a)], "main;seed 5\n");
    assert_eq!(s, 200, "{body}");
    let seeded = folded(&d, "seed", &[bearer(&reader_a)]);
    assert_eq!(seeded, "main;seed 5");
    std::thread::sleep(Duration::from_millis(1100)); // the 1 s key is expired by now
    let keys_before = admin(&data, &["list"]).1;
    assert!(keys_before.contains("expired") && keys_before.contains("revoked"));

    let cases: Vec<(&str, Headers, &str)> = vec![
        ("no credential", vec![], "unauthenticated"),
        (
            "malformed header",
            vec![("Authorization", "Token abc".into())],
            "malformed_credentials",
        ),
        (
            "empty bearer",
            vec![("Authorization", "Bearer".into())],
            "malformed_credentials",
        ),
        (
            "unknown key",
            vec![bearer("kiln_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
            "unknown_key",
        ),
        ("revoked key", vec![bearer(&revoked)], "revoked_key"),
        ("expired key", vec![bearer(&expired)], "expired_key"),
        ("reader key", vec![bearer(&reader_a)], "forbidden"),
        ("writer key", vec![bearer(&writer_a)], "forbidden"),
        (
            "another tenant's key",
            vec![bearer(&writer_b), org("team-a")],
            "tenant_mismatch",
        ),
        (
            "another tenant's admin",
            vec![bearer(&admin_b), org("team-a")],
            "tenant_mismatch",
        ),
        (
            "bad tenant header",
            vec![bearer(&writer_a), org("a/b")],
            "bad_tenant",
        ),
    ];
    let mut checked = 0;
    for (method, path, body, needs) in endpoints() {
        for (case, headers, cause) in &cases {
            // A reader may read, a writer may read and write: those are not refusals.
            let allowed = match *case {
                "reader key" => needs == "read",
                "writer key" => needs != "admin",
                _ => false,
            };
            if allowed {
                continue;
            }
            let (status, text) = call(&d, method, &path, headers, &body);
            let expected = match *cause {
                "forbidden" | "tenant_mismatch" => 403,
                "bad_tenant" => 400,
                _ => 401,
            };
            assert_eq!(status, expected, "{method} {path} with {case}: {text}");
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{method} {path} with {case}: not JSON: {text}"));
            let message = v["message"].as_str().unwrap_or("");
            assert!(message.len() > 10, "{method} {path} with {case}: {text}");
            if path.starts_with("/push.v1.") {
                let code = match status {
                    401 => "unauthenticated",
                    403 => "permission_denied",
                    _ => "invalid_argument",
                };
                assert_eq!(v["code"], code, "{method} {path} with {case}: {text}");
            } else {
                assert_eq!(v["error"], *cause, "{method} {path} with {case}: {text}");
            }
            for key in [&writer_a, &reader_a, &writer_b, &revoked, &expired, &root] {
                assert!(!text.contains(key.as_str()), "a key in a response: {text}");
            }
            checked += 1;
        }
    }
    assert!(checked > 120, "{checked}");

    // Nothing was stored, deleted or created.
    assert_eq!(folded(&d, "seed", &[bearer(&reader_a)]), seeded);
    for tenant in ["team-a", "team-b", "anonymous"] {
        let listed = apps(&d, &[bearer(&root), org(tenant)]);
        assert!(
            !listed.iter().any(|a| a.starts_with("matrix")),
            "{tenant}: {listed:?}"
        );
    }
    let keys_after = admin(&data, &["list"]).1;
    assert_eq!(keys_before, keys_after);
    assert!(!keys_after.contains("sneaky"));

    // Refusals are counted by cause and tenant; /metrics needs a reader key and shows no key.
    let (s, metrics) = call(&d, "GET", "/metrics", &[bearer(&reader_a)], b"");
    assert_eq!(s, 200);
    assert!(
        metrics.contains(r#"kiln_auth_refused_total{cause="unauthenticated",tenant=""}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kiln_auth_refused_total{cause="forbidden",tenant="team-a"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kiln_auth_refused_total{cause="tenant_mismatch",tenant="team-b"}"#),
        "{metrics}"
    );
    let (s, _) = call(&d, "GET", "/healthz", &[], b"");
    assert_eq!(s, 200, "/healthz stays open");
    let (s, _) = call(&d, "GET", "/", &[], b"");
    assert_eq!(s, 200, "the UI's page stays open");

    // The right keys work: a writer pushes with Bearer, an admin deletes its tenant's app.
    let (s, body) = push(&d, "ok", &[bearer(&writer_b)], "main;ok 3\n");
    assert_eq!(s, 200, "{body}");
    let (s, body) = call(
        &d,
        "DELETE",
        "/api/apps",
        &[bearer(&root), org("team-a")],
        br#"{"name":"seed.cpu"}"#,
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(folded(&d, "seed", &[bearer(&reader_a)]), "");
    assert_eq!(folded(&d, "ok", &[bearer(&writer_b)]), "main;ok 3");

    d.stop();
    let logged = std::fs::read_to_string(&log).unwrap();
    for key in [
        &writer_a, &reader_a, &writer_b, &admin_b, &revoked, &expired, &root,
    ] {
        assert!(!logged.contains(key.as_str()), "a key in the log");
    }
    assert!(
        logged.contains("app.delete") && logged.contains("team-a"),
        "the delete is audited: {logged}"
    );
}

#[test]
fn tenants_with_the_same_app_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    // Auth off: X-Scope-OrgID selects the tenant, as Grafana Pyroscope's multi-tenant mode.
    let d = Daemon::start(dir.path(), &[]);
    for (tenant, body) in [("team-a", "main;a 10\n"), ("team-b", "main;b 20\n")] {
        let (s, m) = push(&d, "shop{env=prod}", &[org(tenant)], body);
        assert_eq!(s, 200, "{m}");
    }
    let (s, m) = push(&d, "shop{env=prod}", &[], "main;anon 1\n");
    assert_eq!(s, 200, "{m}");
    assert_eq!(folded(&d, "shop", &[org("team-a")]), "main;a 10");
    assert_eq!(folded(&d, "shop", &[org("team-b")]), "main;b 20");
    assert_eq!(folded(&d, "shop", &[]), "main;anon 1");
    assert_eq!(folded(&d, "shop", &[org("team-c")]), "");
    assert_eq!(apps(&d, &[org("team-c")]), Vec::<String>::new());
    assert_eq!(apps(&d, &[org("team-a")]), vec!["shop.cpu".to_string()]);
    let (_, labels) = call(&d, "GET", "/label-values?label=env", &[org("team-c")], b"");
    assert_eq!(labels.trim(), "[]");
    let (_, labels) = call(&d, "GET", "/label-values?label=env", &[org("team-b")], b"");
    assert_eq!(labels.trim(), r#"["prod"]"#);
    let (s, m) = call(&d, "GET", "/labels", &[org("bad tenant")], b"");
    assert_eq!(s, 400, "{m}");
    assert!(m.contains("bad_tenant"), "{m}");

    // Deleting team-a's app leaves team-b's and the default tenant's.
    let (s, m) = call(
        &d,
        "DELETE",
        "/api/apps",
        &[org("team-a")],
        br#"{"name":"shop.cpu"}"#,
    );
    assert_eq!(s, 200, "{m}");
    assert_eq!(folded(&d, "shop", &[org("team-a")]), "");
    assert_eq!(folded(&d, "shop", &[org("team-b")]), "main;b 20");
    assert_eq!(folded(&d, "shop", &[]), "main;anon 1");
}

#[test]
fn a_replay_after_kill_9_keeps_each_push_under_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &[]);
    let (s, m) = push(&d, "svc", &[org("team-b")], "main;b 7\n");
    assert_eq!(s, 200, "{m}");
    d.crash();
    d.spawn();
    assert_eq!(folded(&d, "svc", &[org("team-b")]), "main;b 7");
    assert_eq!(folded(&d, "svc", &[]), "");
    assert_eq!(folded(&d, "svc", &[org("team-a")]), "");
}

#[test]
fn keys_created_while_the_daemon_runs_work_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = create_key(&data, "root", "admin", &[]);
    let d = Daemon::start(dir.path(), &["--auth"]);

    // Offline, on the data directory, while the daemon runs.
    let key = create_key(&data, "late", "writer", &["--tenant", "t1"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, m) = push(&d, "late", &[bearer(&key)], "main;x 1\n");
        if s == 200 {
            break;
        }
        assert_eq!(s, 401, "{m}");
        assert!(
            Instant::now() < deadline,
            "the new key was never accepted: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(folded(&d, "late", &[bearer(&key)]), "main;x 1");

    // Through the admin API with `--server` and an admin key.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "admin", "apikey", "create", "--name", "remote", "--role", "reader",
        ])
        .args(["--tenant", "t1", "--server", &d.url, "--auth-token", &root])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let remote = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(remote.starts_with("kiln_"), "{remote}");
    assert_eq!(folded(&d, "late", &[bearer(&remote)]), "main;x 1");
    let (s, _) = push(&d, "late", &[bearer(&remote)], "main;x 1\n");
    assert_eq!(s, 403, "a reader key may not push");
    // Without the admin key the admin API refuses.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["admin", "apikey", "list", "--server", &d.url])
        .env_remove("KILN_AUTH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    // A revoke on the data directory reaches the running daemon too.
    let (ok, _, err) = admin(&data, &["revoke", &key_id(&data, "late")]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, m) = push(&d, "late", &[bearer(&key)], "main;x 1\n");
        if s == 401 {
            assert!(m.contains("revoked"), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "the revoked key kept working");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The admin API lists keys without secrets.
    let (s, listed) = call(&d, "GET", "/api/admin/apikeys", &[bearer(&root)], b"");
    assert_eq!(s, 200);
    assert!(
        listed.contains("\"late\"") && listed.contains("revoked"),
        "{listed}"
    );
    for k in [&root, &key, &remote] {
        assert!(!listed.contains(k.as_str()));
    }
}
