//! A throwaway ClickHouse for tests: a plain process in a temporary directory, its own config,
//! free loopback ports, logs in that directory.
//!
//! By default it is `clickhouse-server` from the `PATH` (Debian's package, 18.16). With
//! `KILN_TEST_CLICKHOUSE=chdb` it is a current release instead: chDB's embedded engine behind
//! `test-server/chdb_http.py`, which serves the HTTP interface Kiln uses (needs `python3` with
//! the `chdb-core` package; `KILN_TEST_PYTHON` names another interpreter). The same tests then
//! check that Kiln's SQL holds on both.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user tests connect as, and its password.
pub const USER: &str = "kiln";
pub const PASSWORD: &str = "kiln-test-password";

/// What serves the tests' ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `clickhouse-server` (Debian's 18.16).
    Server,
    /// A current release: chDB behind `test-server/chdb_http.py`.
    Chdb,
}

impl Engine {
    /// From `KILN_TEST_CLICKHOUSE`: `chdb`, or unset / `server`.
    pub fn from_env() -> Self {
        match std::env::var("KILN_TEST_CLICKHOUSE").as_deref() {
            Ok("chdb") => Self::Chdb,
            Ok("") | Ok("server") | Err(_) => Self::Server,
            Ok(other) => panic!("KILN_TEST_CLICKHOUSE={other:?}: expected `server` or `chdb`"),
        }
    }
}

pub struct TestServer {
    pub engine: Engine,
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub http_port: u16,
    tcp_port: u16,
    interserver_port: u16,
    /// The HTTPS port, when started with a certificate ([`TestServer::start_tls`]).
    pub https_port: Option<u16>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl TestServer {
    /// Starts a server and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts a server that also serves HTTPS with the certificate and key given as PEM (the
    /// plain port stays, for the readiness check and [`TestServer::sql`]).
    pub fn start_tls(certificate_pem: &str, key_pem: &str) -> Self {
        Self::start_with(Some((certificate_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut s = Self {
            engine: Engine::from_env(),
            dir,
            child: None,
            http_port: free_port(),
            tcp_port: free_port(),
            interserver_port: free_port(),
            https_port: tls.map(|_| free_port()),
        };
        if let Some((certificate, key)) = tls {
            std::fs::write(s.dir().join("server.crt"), certificate).expect("writing server.crt");
            std::fs::write(s.dir().join("server.key"), key).expect("writing server.key");
        }
        s.write_config();
        s.spawn();
        s
    }

    /// `https://127.0.0.1:PORT`, when started with [`TestServer::start_tls`].
    pub fn https_url(&self) -> Option<String> {
        self.https_port.map(|p| format!("https://127.0.0.1:{p}"))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `[storage]` section using this server and `database`.
    pub fn storage_toml(&self, database: &str) -> String {
        format!(
            "[storage]\ntype = \"clickhouse\"\n[storage.clickhouse]\nurl = \"{}\"\ndatabase = \"{database}\"\nuser = \"{USER}\"\npassword = \"{PASSWORD}\"\n",
            self.url()
        )
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let p = |name: &str| -> PathBuf { d.join(name) };
        for sub in ["data", "tmp", "user_files", "format_schemas"] {
            std::fs::create_dir_all(p(sub)).expect("creating the server's directories");
        }
        // No DH parameters file: the certificates tests make are ECDSA, for ECDHE.
        let https = match self.https_port {
            Some(port) => format!(
                "<https_port>{port}</https_port>\n  <openSSL><server>\
                 <certificateFile>{}</certificateFile><privateKeyFile>{}</privateKeyFile>\
                 <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>\
                 <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols></server></openSSL>",
                p("server.crt").display(),
                p("server.key").display()
            ),
            None => String::new(),
        };
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{log}</log><errorlog>{err}</errorlog></logger>
  <http_port>{http}</http_port>
  <tcp_port>{tcp}</tcp_port>
  <interserver_http_port>{inter}</interserver_http_port>
  {https}
  <listen_host>127.0.0.1</listen_host>
  <path>{data}/</path>
  <tmp_path>{tmp}/</tmp_path>
  <user_files_path>{files}/</user_files_path>
  <format_schema_path>{schemas}/</format_schema_path>
  <users_config>{users}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>5368709</mark_cache_size>
  <uncompressed_cache_size>8388608</uncompressed_cache_size>
</yandex>
"#,
            log = p("server.log").display(),
            err = p("error.log").display(),
            http = self.http_port,
            tcp = self.tcp_port,
            inter = self.interserver_port,
            data = p("data").display(),
            tmp = p("tmp").display(),
            files = p("user_files").display(),
            schemas = p("format_schemas").display(),
            users = p("users.xml").display(),
        );
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users>
    <{USER}><password>{PASSWORD}</password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></{USER}>
  </users>
  <quotas><default></default></quotas>
</yandex>
"#
        );
        std::fs::write(p("config.xml"), config).expect("writing config.xml");
        std::fs::write(p("users.xml"), users).expect("writing users.xml");
    }

    fn command(&self) -> Command {
        let d = self.dir.path();
        match self.engine {
            Engine::Server => {
                let mut c = Command::new("clickhouse-server");
                c.arg(format!("--config-file={}", d.join("config.xml").display()));
                c
            }
            Engine::Chdb => {
                let python = std::env::var("KILN_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
                let mut c = Command::new(python);
                c.arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/test-server/chdb_http.py"
                ))
                .arg(format!("--port={}", self.http_port))
                .arg(format!("--path={}", d.join("data").display()))
                .arg(format!("--user={USER}"))
                .arg(format!("--password={PASSWORD}"));
                if let Some(port) = self.https_port {
                    c.arg(format!("--https-port={port}"))
                        .arg(format!("--cert={}", d.join("server.crt").display()))
                        .arg(format!("--key={}", d.join("server.key").display()));
                }
                c
            }
        }
    }

    fn spawn(&mut self) {
        let out = std::fs::File::create(self.dir.path().join("stdout.log")).expect("log file");
        // chDB would read the server's `config.xml` from its working directory.
        let cwd = match self.engine {
            Engine::Server => self.dir.path().to_path_buf(),
            Engine::Chdb => self.dir.path().join("tmp"),
        };
        let child = self
            .command()
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {:?} ({e}): install Debian's clickhouse-server package, or for \
                     KILN_TEST_CLICKHOUSE=chdb python3 with chdb-core",
                    self.engine
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        loop {
            if let Ok(r) = agent.get(format!("{}/ping", self.url())).call() {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .expect("spawned")
                .try_wait()
                .ok()
                .flatten()
            {
                let log = |name: &str| {
                    std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
                };
                panic!(
                    "{:?} exited at start ({status}); its log: {}{}",
                    self.engine,
                    log("error.log"),
                    log("stdout.log")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not answer on {} within 60 s",
                self.engine,
                self.url()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (SIGKILL: as abrupt as a crash); its data stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP), as a server stalled on its disk: connections are still
    /// accepted by the kernel, nothing answers. [`TestServer::resume`] thaws it.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([format!("-{name}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Runs `sql` as the test user; panics on error. Returns the answer as text.
    pub fn sql(&self, sql: &str) -> String {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut r = agent
            .post(format!("{}/", self.url()))
            .query("user", USER)
            .query("password", PASSWORD)
            .send(sql.as_bytes())
            .expect("ClickHouse answers");
        let status = r.status();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(status, 200, "{sql}: {text}");
        text
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}
