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
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .new_agent();
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
pub fn reload(server: &str, auth_token: Option<&str>) -> anyhow::Result<()> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
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
