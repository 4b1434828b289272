//! Users and UI sessions end to end: login and logout, a new session id on every login,
//! server-side expiry, CSRF on cookie-authenticated writes, the login rate limit, what each
//! role may do, and `kiln admin user …` on the data directory and through the admin API.
//! Passwords never show up in the log.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{agent, enc, Daemon};
use serde_json::Value;

/// `kiln admin user …` on the data directory or with `--server`: (success, stdout, stderr).
fn user_cli(data: &Path, args: &[&str], password: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(["admin", "user"])
        .args(args)
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(data)
        .env_remove("KILN_AUTH_TOKEN")
        .env_remove("KILN_USER_PASSWORD")
        .stdin(Stdio::null());
    if let Some(p) = password {
        cmd.env("KILN_USER_PASSWORD", p);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn add_user(data: &Path, name: &str, role: &str, tenant: Option<&str>, password: &str) {
    let mut args = vec!["add", name, "--role", role];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let (ok, out, err) = user_cli(data, &args, Some(password));
    assert!(ok, "{err}");
    assert!(!out.contains(password) && !err.contains(password));
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `kiln_session` value of Set-Cookie.
    fn session_cookie(&self) -> String {
        let c = self.header("set-cookie").expect("a Set-Cookie header");
        c.strip_prefix("kiln_session=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string()
    }
}

fn call(d: &Daemon, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Resp {
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
    let mut resp = match method {
        "GET" => with_headers!(a.get(&url)).call(),
        "POST" => with_headers!(a.post(&url)).send(body),
        "DELETE" => with_headers!(a.delete(&url)).force_send_body().send(body),
        m => panic!("method {m}"),
    }
    .unwrap();
    Resp {
        status: resp.status().as_u16(),
        headers: resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn login(d: &Daemon, user: &str, password: &str, extra: &[(&str, String)]) -> Resp {
    let mut h = vec![("Content-Type", "application/json".to_string())];
    h.extend(extra.iter().cloned());
    let body = serde_json::json!({ "username": user, "password": password }).to_string();
    call(d, "POST", "/api/login", &h, &body)
}

/// (cookie, CSRF token) of a fresh session.
fn sign_in(d: &Daemon, user: &str, password: &str) -> (String, String) {
    let r = login(d, user, password, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = r.json()["csrf_token"].as_str().unwrap().to_string();
    (r.session_cookie(), token)
}

fn cookie(c: &str) -> (&'static str, String) {
    ("Cookie", format!("kiln_session={c}"))
}

fn push_folded(d: &Daemon, app: &str, headers: &[(&str, String)]) -> Resp {
    call(
        d,
        "POST",
        &format!(
            "/ingest?name={}&format=folded&from=now-10s&until=now",
            enc(&format!("{app}.cpu"))
        ),
        headers,
        "main;work 10\n",
    )
}

fn config(dir: &Path, ttl: &str) -> String {
    let path = dir.join("kiln.toml");
    std::fs::write(
        &path,
        format!("[auth]\nenabled = true\nsession_ttl = \"{ttl}\"\n"),
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn sessions_login_logout_fixation_csrf_roles_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    add_user(&data, "root", "admin", None, "root-password-1");
    add_user(&data, "ed", "editor", Some("t1"), "editor-password-1");
    add_user(&data, "vi", "viewer", Some("t1"), "viewer-password-1");
    let cfg = config(dir.path(), "3s");
    let log = dir.path().join("kiln.log");
    let mut d = Daemon::start(dir.path(), &["--config", &cfg]);
    // Restarted logging to a file, to look for secrets in it (sessions are in memory: none yet).
    d.log = Some(log.clone());
    d.restart();

    // Wrong password, unknown user: the same 401.
    let r = login(&d, "ed", "nope-nope-nope", &[]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("bad_login"))
    );
    assert!(r.header("set-cookie").is_none());
    assert_eq!(login(&d, "ghost", "whatever-1", &[]).status, 401);
    // A malformed body is refused without quoting it back (it may hold a password).
    let json = ("Content-Type", "application/json".to_string());
    let r = call(
        &d,
        "POST",
        "/api/login",
        &[json],
        r#"{"username":"ed","password":918273645}"#,
    );
    assert_eq!(r.status, 400);
    assert!(!r.body.contains("918273645"), "{}", r.body);

    // Cookie attributes; no Secure over plain HTTP.
    let r = login(&d, "ed", "editor-password-1", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let (ed, ed_token) = (
        r.session_cookie(),
        r.json()["csrf_token"].as_str().unwrap().to_string(),
    );

    let s = call(&d, "GET", "/api/session", &[cookie(&ed)], "").json();
    assert_eq!(s["user"], "ed");
    assert_eq!(s["role"], "editor");
    assert_eq!(s["tenant"], "t1");
    assert_eq!(s["can_delete"], true);
    assert_eq!(s["can_admin"], false);
    assert_eq!(call(&d, "GET", "/api/session", &[], "").status, 401);

    // Fixation: a login that comes with a session id gets a new one; the old one is void.
    let r = login(&d, "ed", "editor-password-1", &[cookie(&ed)]);
    let ed2 = r.session_cookie();
    assert_ne!(ed, ed2);
    assert_eq!(
        call(&d, "GET", "/api/session", &[cookie(&ed)], "").status,
        401
    );
    let ed_token2 = r.json()["csrf_token"].as_str().unwrap().to_string();
    assert_ne!(ed_token, ed_token2);
    let (ed, ed_token) = (ed2, ed_token2);

    // CSRF: a cookie write needs the token and this daemon's origin.
    let origin = ("Origin", d.url.clone());
    let token = ("X-CSRF-Token", ed_token.clone());
    let r = push_folded(&d, "web", &[cookie(&ed), origin.clone()]);
    assert_eq!((r.status, r.json()["error"].as_str()), (403, Some("csrf")));
    let r = push_folded(&d, "web", &[cookie(&ed), token.clone()]);
    assert_eq!(r.status, 403, "no Origin or Referer");
    let evil = ("Origin", "http://evil.example".to_string());
    let r = push_folded(&d, "web", &[cookie(&ed), token.clone(), evil]);
    assert_eq!(
        r.status, 403,
        "cross-site POST with a valid cookie and token"
    );
    let wrong = ("X-CSRF-Token", "x".repeat(43));
    assert_eq!(
        push_folded(&d, "web", &[cookie(&ed), origin.clone(), wrong]).status,
        403
    );
    let r = push_folded(&d, "web", &[cookie(&ed), origin.clone(), token.clone()]);
    assert_eq!(r.status, 200, "{}", r.body);
    let referer = ("Referer", format!("{}/?view=explore", d.url));
    let r = push_folded(&d, "web", &[cookie(&ed), referer, token.clone()]);
    assert_eq!(r.status, 200, "{}", r.body);

    // Roles: a viewer reads its tenant only; an editor deletes in its tenant, no admin API.
    let (vi, vi_token) = sign_in(&d, "vi", "viewer-password-1");
    let r = call(&d, "GET", "/api/apps", &[cookie(&vi)], "");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("web"), "{}", r.body);
    let vi_write = [
        cookie(&vi),
        origin.clone(),
        ("X-CSRF-Token", vi_token.clone()),
    ];
    assert_eq!(push_folded(&d, "web", &vi_write).status, 403);
    let del = r#"{"name":"web.cpu"}"#;
    assert_eq!(call(&d, "DELETE", "/api/apps", &vi_write, del).status, 403);
    let r = call(
        &d,
        "GET",
        "/api/apps",
        &[cookie(&vi), ("X-Scope-OrgID", "t2".into())],
        "",
    );
    assert_eq!(r.status, 403);
    assert_eq!(
        call(&d, "GET", "/api/admin/users", &[cookie(&ed)], "").status,
        403
    );
    let ed_write = [cookie(&ed), origin.clone(), token.clone()];
    let r = call(&d, "DELETE", "/api/apps", &ed_write, del);
    assert!(r.status < 300, "{} {}", r.status, r.body);
    // The admin (every tenant) sees the users, without hashes.
    let (root, _) = sign_in(&d, "root", "root-password-1");
    let r = call(&d, "GET", "/api/admin/users", &[cookie(&root)], "");
    assert_eq!(r.status, 200);
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    assert!(!r.body.contains("argon2"), "{}", r.body);

    // Logout: needs this origin; then the cookie no longer works.
    assert_eq!(
        call(&d, "POST", "/api/logout", &[cookie(&vi)], "").status,
        403
    );
    let r = call(
        &d,
        "POST",
        "/api/logout",
        &[cookie(&vi), origin.clone()],
        "",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    let r = call(&d, "GET", "/api/session", &[cookie(&vi)], "");
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("session_expired"))
    );

    // Server-side expiry (session_ttl = 3s).
    std::thread::sleep(Duration::from_millis(3300));
    assert_eq!(
        call(&d, "GET", "/api/session", &[cookie(&ed)], "").status,
        401
    );

    // Login rate limit: 5 failures a minute per user and per address (two were made above),
    // then 429 even with the right password.
    for _ in 0..3 {
        assert_eq!(login(&d, "vi", "bad-password-1", &[]).status, 401);
    }
    let r = login(&d, "vi", "viewer-password-1", &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    // …and per address: this client's failures block other users too.
    assert_eq!(login(&d, "root", "root-password-1", &[]).status, 429);

    d.stop();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for secret in [
        "root-password-1",
        "editor-password-1",
        "viewer-password-1",
        &ed,
        &ed_token,
    ] {
        assert!(!text.contains(secret), "a secret in the log");
    }
    assert!(
        text.contains("login.failed") && text.contains("action=\"login\""),
        "{text}"
    );
}

#[test]
fn users_managed_offline_and_online_reach_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // An admin key for the online CLI, made offline.
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args([
            "admin", "apikey", "create", "--name", "ops", "--role", "admin",
        ])
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    add_user(&data, "first", "viewer", None, "first-password-1");
    let mut d = Daemon::start(dir.path(), &["--auth"]);

    // Offline while running: picked up without a restart.
    add_user(&data, "later", "editor", Some("t9"), "later-password-1");
    let (later, _) = sign_in(&d, "later", "later-password-1");

    // Online, with an admin key.
    let remote = |args: &[&str], password: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args(["admin", "user"])
            .args(args)
            .args(["--server", &d.url, "--auth-token", &key])
            .env_remove("KILN_USER_PASSWORD")
            .stdin(Stdio::null());
        if let Some(p) = password {
            cmd.env("KILN_USER_PASSWORD", p);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = remote(&["add", "net", "--role", "viewer"], Some("net-password-1"));
    assert!(ok, "{err}");
    sign_in(&d, "net", "net-password-1");
    // A generated password is printed once, alone on stdout.
    let (ok, out, err) = remote(&["add", "gen", "--role", "viewer"], None);
    assert!(ok, "{err}");
    sign_in(&d, "gen", out.trim());
    let (ok, out, err) = remote(&["list"], None);
    assert!(ok, "{err}");
    for name in ["first", "later", "net", "gen"] {
        assert!(out.contains(name), "{out}");
    }
    let (ok, _, err) = remote(&["add", "net", "--role", "viewer"], Some("net-password-1"));
    assert!(!ok && err.contains("409"), "{err}");

    // A reset ends the user's sessions; the new password works.
    let (ok, _, err) = remote(&["reset-password", "later"], Some("later-password-2"));
    assert!(ok, "{err}");
    assert_eq!(
        call(&d, "GET", "/api/session", &[cookie(&later)], "").status,
        401
    );
    assert_eq!(login(&d, "later", "later-password-1", &[]).status, 401);
    let (later, _) = sign_in(&d, "later", "later-password-2");
    // Deleted offline: the session ends on its next request.
    let (ok, _, err) = user_cli(&data, &["delete", "later"], None);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        call(&d, "GET", "/api/session", &[cookie(&later)], "").status,
        401
    );
    let (ok, _, err) = remote(&["delete", "net"], None);
    assert!(ok, "{err}");
    assert_eq!(login(&d, "net", "net-password-1", &[]).status, 401);

    // Without the admin key the admin API refuses.
    let r = call(&d, "GET", "/api/admin/users", &[], "");
    assert_eq!(r.status, 401);
    d.stop();
}

#[test]
fn first_start_with_auth_on_creates_admin_with_a_password_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kiln.toml");
    std::fs::write(&cfg, "[auth]\nenabled = false\n").unwrap();
    let log = dir.path().join("kiln.log");
    let mut d = Daemon::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    std::fs::write(&cfg, "[auth]\nenabled = true\n").unwrap();
    d.log = Some(log.clone());
    d.restart();
    let text = std::fs::read_to_string(&log).unwrap();
    let password = text
        .split("with password ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no generated password in the log: {text}"));
    assert!(password.len() >= 16);
    let (admin, _) = sign_in(&d, "admin", password);
    let s = call(&d, "GET", "/api/session", &[cookie(&admin)], "").json();
    assert_eq!(
        (s["role"].as_str(), s["can_admin"].as_bool()),
        (Some("admin"), Some(true))
    );
    // Once: a restart creates nothing and logs no password.
    d.restart();
    let again = std::fs::read_to_string(&log).unwrap();
    assert_eq!(again.matches("with password").count(), 1);
    // /metrics holds no secret either.
    let r = call(&d, "GET", "/metrics", &[cookie(&admin)], "");
    assert_eq!(r.status, 401, "a restart ends sessions");
    let (admin, _) = sign_in(&d, "admin", password);
    let r = call(&d, "GET", "/metrics", &[cookie(&admin)], "");
    assert_eq!(r.status, 200);
    assert!(!r.body.contains(password) && !r.body.contains(&admin));
    d.stop();
}
