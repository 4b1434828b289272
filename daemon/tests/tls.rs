//! HTTPS end to end with certificates made here: push and query through the right CA, a
//! client trusting another CA refused, mutual TLS, the certificate reloaded on SIGHUP.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{enc, Daemon};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

/// A CA that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (PEM chain, PEM key).
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

/// Writes a server certificate from `ca` for 127.0.0.1 as `cert.pem` / `key.pem` in `dir`.
fn server_files(dir: &Path, ca: &Ca) -> (PathBuf, PathBuf) {
    let (cert, key) = ca.sign(&["127.0.0.1", "localhost"]);
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

/// An agent trusting `ca` only, presenting `client` (PEM cert, PEM key) if given.
fn agent(ca: &Ca, client: Option<&(String, String)>) -> ureq::Agent {
    let root = Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let mut tls = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&[root]));
    if let Some((cert, key)) = client {
        let cert = Certificate::from_pem(cert.as_bytes()).unwrap();
        let key = PrivateKey::from_pem(key.as_bytes()).unwrap();
        tls = tls.client_cert(Some(ClientCert::new_with_certs(&[cert], key)));
    }
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .tls_config(tls.build())
        .build()
        .new_agent()
}

/// Starts a daemon serving HTTPS with `extra` flags; waits until `client` reaches /healthz.
fn start_https(dir: &Path, extra: &[&str], client: &ureq::Agent) -> Daemon {
    let mut d = Daemon::start_later(dir, extra);
    d.launch();
    d.url = d.url.replacen("http://", "https://", 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{}/healthz", d.url))
        .call()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "kiln did not serve HTTPS");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

fn push(client: &ureq::Agent, d: &Daemon, body: &str) -> Result<u16, ureq::Error> {
    client
        .post(format!(
            "{}/ingest?name={}&from=now-10s&until=now",
            d.url,
            enc("tlsapp.cpu")
        ))
        .send(body.as_bytes())
        .map(|r| r.status().as_u16())
}

fn folded(client: &ureq::Agent, d: &Daemon) -> String {
    let mut r = client
        .get(format!(
            "{}/render?query={}&from=now-1h&until=now&format=collapsed",
            d.url,
            enc("tlsapp.cpu{}")
        ))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.body_mut().read_to_string().unwrap()
}

#[test]
fn https_push_and_query_with_the_right_ca_and_a_wrong_ca_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kiln test CA");
    let (cert, key) = server_files(dir.path(), &ca);
    let good = agent(&ca, None);
    let d = start_https(
        dir.path(),
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
        &good,
    );
    assert_eq!(push(&good, &d, "main;work 7\n").unwrap(), 200);
    assert!(folded(&good, &d).contains("main;work 7"));

    let wrong = agent(&Ca::new("another CA"), None);
    assert!(push(&wrong, &d, "main;evil 1\n").is_err());
    // Plain HTTP to the HTTPS port is not served either.
    let plain = common::agent()
        .get(format!(
            "{}/healthz",
            d.url.replacen("https://", "http://", 1)
        ))
        .call();
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    assert!(!folded(&good, &d).contains("evil"));

    // The CLI trusts --ca-file.
    let ca_file = ca.write(dir.path(), "ca.pem");
    let profile = dir.path().join("p.folded");
    std::fs::write(&profile, "main;cli 3\n").unwrap();
    let run = |ca: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args([
                "ingest",
                "--app",
                "tlsapp.cpu",
                "--server",
                &d.url,
                "--ca-file",
            ])
            .arg(ca)
            .arg(&profile)
            .args(["--config", "/dev/null"])
            .output()
            .unwrap()
    };
    let out = run(&ca_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(folded(&good, &d).contains("main;cli 3"));
    let other = Ca::new("other").write(dir.path(), "other.pem");
    assert!(!run(&other).status.success());

    // `kiln admin … --server` and `kiln reload` too.
    let cli = |args: &[&str], ca: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(args)
            .args(["--server", &d.url, "--ca-file"])
            .arg(ca)
            .args(["--config", "/dev/null"])
            .env_remove("KILN_AUTH_TOKEN")
            .output()
            .unwrap()
    };
    let out = cli(&["admin", "apikey", "list"], &ca_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!cli(&["admin", "apikey", "list"], &other).status.success());
    let out = cli(&["reload"], &ca_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_of_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let (cert, key) = server_files(dir.path(), &server_ca);
    let client_ca_file = client_ca.write(dir.path(), "clients.pem");
    let with_cert = agent(&server_ca, Some(&client_ca.sign(&["agent-1"])));
    let d = start_https(
        dir.path(),
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-client-ca-file",
            client_ca_file.to_str().unwrap(),
        ],
        &with_cert,
    );
    assert_eq!(push(&with_cert, &d, "main;mtls 5\n").unwrap(), 200);
    assert!(folded(&with_cert, &d).contains("main;mtls 5"));

    let without = agent(&server_ca, None);
    assert!(push(&without, &d, "main;anon 1\n").is_err());
    let stranger = agent(&server_ca, Some(&Ca::new("rogue").sign(&["agent-2"])));
    assert!(push(&stranger, &d, "main;rogue 1\n").is_err());
    let tree = folded(&with_cert, &d);
    assert!(!tree.contains("anon") && !tree.contains("rogue"), "{tree}");

    // The CLI presents --client-cert / --client-key.
    let ca_file = server_ca.write(dir.path(), "ca.pem");
    let (c, k) = client_ca.sign(&["cli"]);
    let (cert_file, key_file) = (dir.path().join("cli.pem"), dir.path().join("cli.key"));
    std::fs::write(&cert_file, c).unwrap();
    std::fs::write(&key_file, k).unwrap();
    let profile = dir.path().join("p.folded");
    std::fs::write(&profile, "main;mcli 4\n").unwrap();
    let run = |client: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.args([
            "ingest",
            "--app",
            "tlsapp.cpu",
            "--server",
            &d.url,
            "--ca-file",
        ])
        .arg(&ca_file)
        .arg(&profile)
        .args(["--config", "/dev/null"]);
        if client {
            cmd.arg("--client-cert")
                .arg(&cert_file)
                .arg("--client-key")
                .arg(&key_file);
        }
        cmd.output().unwrap()
    };
    assert!(!run(false).status.success());
    let out = run(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(folded(&with_cert, &d).contains("main;mcli 4"));
}

#[test]
fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::new("first CA");
    let (cert, key) = server_files(dir.path(), &first);
    let old = agent(&first, None);
    let d = start_https(
        dir.path(),
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
        &old,
    );
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &d.pid().to_string()])
            .status()
            .unwrap()
            .success());
    };
    // Every request opens a new connection: the pool would keep the old handshake.
    let fresh = |ca: &Ca| {
        let a = agent(ca, None);
        a.get(format!("{}/healthz", d.url))
            .header("Connection", "close")
            .call()
            .map(|r| r.status().as_u16())
    };

    let second = Ca::new("second CA");
    server_files(dir.path(), &second);
    hup();
    let deadline = Instant::now() + Duration::from_secs(20);
    while fresh(&second).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(fresh(&first).is_err(), "the old certificate is gone");

    // A broken certificate: logged, the second one keeps serving.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fresh(&second).unwrap(), 200);
}

#[test]
fn session_cookies_are_secure_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("kiln test CA");
    let (cert, key) = server_files(dir.path(), &ca);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["admin", "user", "add", "ada", "--role", "viewer"])
        .args(["--config", "/dev/null", "--storage-path"])
        .arg(dir.path().join("data"))
        .env_remove("KILN_AUTH_TOKEN")
        .env("KILN_USER_PASSWORD", "correct horse battery staple")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let client = agent(&ca, None);
    let d = start_https(
        dir.path(),
        &[
            "--auth=true",
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
        &client,
    );
    let r = client
        .post(format!("{}/api/login", d.url))
        .header("Content-Type", "application/json")
        .send(r#"{"username":"ada","password":"correct horse battery staple"}"#)
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(cookie.starts_with("kiln_session="), "{cookie}");
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
}
