//! `kiln ingest FILE…`: pushes profile files to a running daemon.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Files to push (pprof, JFR, folded text…).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Application name, with an optional type suffix (myapp.cpu).
    #[arg(long)]
    pub app: String,
    /// Format: pprof, jfr, folded, lines, speedscope [default: from the file name].
    #[arg(long)]
    pub format: Option<String>,
    /// Daemon URL.
    #[arg(long, default_value = "http://127.0.0.1:4040", env = "KILN_SERVER")]
    pub server: String,
    /// Labels, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// API key sent as a Bearer token.
    #[arg(long, env = "KILN_AUTH_TOKEN")]
    pub auth_token: Option<String>,
    #[command(flatten)]
    pub tls: ClientTls,
}

/// How the CLI reaches an `https://` daemon.
#[derive(clap::Args, Clone, Default)]
pub struct ClientTls {
    /// PEM CA certificates to trust instead of the system's roots (a daemon whose
    /// certificate a private CA signed).
    #[arg(long, env = "KILN_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a daemon with tls.client_ca_file (mutual TLS).
    #[arg(long, env = "KILN_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "KILN_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    /// An HTTP(S) agent trusting `--ca-file` and presenting `--client-cert`, if given.
    pub fn agent(&self, timeout: Option<Duration>) -> anyhow::Result<ureq::Agent> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls = TlsConfig::builder();
        if let Some(path) = &self.ca_file {
            let pem = read(path)?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                bail!("{}: no PEM certificate in the file", path.display());
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let pem = read(cert)?;
            let chain: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if chain.is_empty() {
                bail!("{}: no PEM certificate in the file", cert.display());
            }
            let key = PrivateKey::from_pem(&read(key)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        Ok(ureq::Agent::config_builder()
            .timeout_global(timeout)
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .new_agent())
    }
}

/// The format of a file: the flag, else guessed from its name.
fn format_of(path: &std::path::Path, flag: Option<&str>) -> &'static str {
    if let Some(f) = flag {
        return match f {
            "pprof" => "pprof",
            "jfr" => "jfr",
            "lines" => "lines",
            "speedscope" => "speedscope",
            _ => "folded",
        };
    }
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".jfr") || name.ends_with(".jfr.gz") {
        "jfr"
    } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
        "pprof"
    } else if name.ends_with(".speedscope.json") {
        "speedscope"
    } else {
        "folded"
    }
}

/// Attempts per file when the daemon answers 429 or 503 (it is behind or over a limit).
const ATTEMPTS: u32 = 8;
/// The longest wait between attempts, whatever `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How long to wait before retrying a refused push: `Retry-After` (seconds) if given, else a
/// backoff doubling from 1 s.
fn retry_wait(retry_after: Option<&str>, attempt: u32) -> Duration {
    retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(|| Duration::from_secs(1 << attempt.min(5)))
        .min(MAX_WAIT)
}

pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    if args.files.is_empty() {
        bail!("no files given");
    }
    let mut name = args.app.clone();
    if !args.labels.is_empty() {
        for l in &args.labels {
            if !l.contains('=') {
                bail!("--label {l:?}: expected KEY=VALUE");
            }
        }
        name = format!("{}{{{}}}", name, args.labels.join(","));
    }
    let agent = args.tls.agent(Some(Duration::from_secs(60)))?;
    let bar = ProgressBar::new(args.files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").expect("static template"),
    );
    let mut failures = 0;
    for path in &args.files {
        bar.set_message(path.display().to_string());
        let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let format = format_of(path, args.format.as_deref());
        let url = format!("{}/ingest", args.server.trim_end_matches('/'));
        let send = || {
            let mut req = agent
                .post(&url)
                .query("name", &name)
                .query("format", format)
                .query("spyName", "kiln-cli")
                .header("Content-Type", "application/octet-stream");
            if let Some(t) = &args.auth_token {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            req.send(&body[..])
        };
        let mut result = send();
        for attempt in 1..ATTEMPTS {
            let wait = match &result {
                Ok(resp) if matches!(resp.status().as_u16(), 429 | 503) => retry_wait(
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    attempt,
                ),
                _ => break,
            };
            bar.set_message(format!(
                "{}: daemon busy, retrying in {}s",
                path.display(),
                wait.as_secs()
            ));
            std::thread::sleep(wait);
            result = send();
        }
        match result {
            Ok(resp) if resp.status().is_success() => {}
            Ok(mut resp) => {
                failures += 1;
                let status = resp.status();
                let msg = resp.body_mut().read_to_string().unwrap_or_default();
                bar.println(format!("{}: {status}: {}", path.display(), msg.trim()));
            }
            Err(e) => {
                failures += 1;
                bar.println(format!("{}: {e}", path.display()));
            }
        }
        bar.inc(1);
    }
    bar.finish_with_message("done");
    if failures > 0 {
        bail!("{failures} of {} files were not accepted", args.files.len());
    }
    Ok(())
}

/// `kiln reload`: POST /-/reload.
pub fn reload(server: &str, auth_token: Option<&str>, tls: &ClientTls) -> anyhow::Result<()> {
    let agent = tls.agent(None)?;
    let mut req = agent.post(format!("{}/-/reload", server.trim_end_matches('/')));
    if let Some(t) = auth_token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send_empty()
        .with_context(|| format!("reaching {server}"))?;
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !resp.status().is_success() {
        bail!("reload refused ({}): {}", resp.status(), body.trim());
    }
    eprintln!("reloaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_as_the_daemon_says_within_bounds() {
        assert_eq!(retry_wait(Some("3"), 1), Duration::from_secs(3));
        assert_eq!(retry_wait(Some("3600"), 1), MAX_WAIT);
        assert_eq!(retry_wait(None, 1), Duration::from_secs(2));
        assert_eq!(retry_wait(Some("soon"), 2), Duration::from_secs(4));
        assert_eq!(retry_wait(None, 9), MAX_WAIT);
    }
}
