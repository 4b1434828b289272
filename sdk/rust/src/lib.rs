//! # kiln-sdk
//!
//! Samples the process's CPU with its own SIGPROF sampler (Linux) and pushes gzip'd pprof to
//! Kiln's `/ingest` every upload interval — the format Pyroscope's agents use, so it also works
//! against a Pyroscope server.
//!
//! The signal handler only records raw return addresses into a fixed buffer; a reporter thread
//! drains it every second, counts samples by (stack, tags), and names only the distinct addresses
//! from the ELF symbol tables once per report. Function names only: inlined functions show as
//! their caller, and there are no line numbers.
//!
//! ```no_run
//! let agent = kiln_sdk::Agent::builder("http://127.0.0.1:4040", "my-app")
//!     .tags([("env", "prod")])
//!     .build()?;
//! let running = agent.start()?;
//! {
//!     let _tags = kiln_sdk::tag_wrapper([("route", "/pay")]); // this thread, until dropped
//!     // work…
//! }
//! running.stop()?; // takes the last profile and flushes
//! # Ok::<(), kiln_sdk::Error>(())
//! ```
//!
//! Scoped tags are per thread: samples a thread takes while a [`TagGuard`] of it is alive are
//! pushed as a series of their own, with those tags added. Logs go through the `log` crate.
//!
//! If the sampler cannot start (another SIGPROF handler, a platform without it), the agent logs
//! one line and the program runs unprofiled.

mod local;
mod profile;
#[cfg(target_os = "linux")]
mod ring;
#[cfg(target_os = "linux")]
mod sampler;
#[cfg(target_os = "linux")]
mod symbols;
mod tags;
#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
use unsupported::{sampler, symbols};
mod tls;
mod upload;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use local::{AddressNames, LocalProfiler};
pub use tags::{tag_wrapper, TagGuard};
use tls::TlsFiles;
use upload::{Upload, Uploader};

/// What can go wrong starting or stopping the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the profiler could not start: {0}")]
    Profiler(String),
    #[error("the agent thread panicked")]
    Panicked,
}

/// Builds an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    server: String,
    app: String,
    tags: BTreeMap<String, String>,
    sample_rate: i32,
    upload_interval: Duration,
    auth_token: Option<String>,
    max_queued: usize,
    tls_files: TlsFiles,
    tls: Option<ureq::tls::TlsConfig>,
}

impl AgentBuilder {
    /// Static tags added to every profile.
    pub fn tags<K: Into<String>, V: Into<String>>(
        mut self,
        tags: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.tags
            .extend(tags.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Samples per second (default 100).
    pub fn sample_rate(mut self, hz: i32) -> Self {
        self.sample_rate = hz;
        self
    }

    /// How often a profile is pushed (default 10 s).
    pub fn upload_interval(mut self, every: Duration) -> Self {
        self.upload_interval = every;
        self
    }

    /// Sent as `Authorization: Bearer TOKEN`.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// A PEM file of CA certificates trusted for an `https://` server instead of the default
    /// roots (e.g. a private CA).
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_files.ca_file = Some(path.into());
        self
    }

    /// A PEM certificate (chain) and its PEM private key, presented to a daemon that requires
    /// mutual TLS.
    pub fn client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls_files.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Profiles kept while the server is unreachable; beyond it the oldest is dropped (default 64).
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n.max(1);
        self
    }

    pub fn build(mut self) -> Result<Agent, Error> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        };
        if !name_ok(&self.app) {
            return Err(Error::Config(format!(
                "application name {:?} must be [A-Za-z0-9_./-]+",
                self.app
            )));
        }
        if !self.server.starts_with("http://") && !self.server.starts_with("https://") {
            return Err(Error::Config(format!(
                "server {:?} must be an http(s) URL",
                self.server
            )));
        }
        for (k, v) in &self.tags {
            if !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                || v.contains([',', '}'])
            {
                return Err(Error::Config(format!(
                    "tag {k}={v} cannot be carried in a series name"
                )));
            }
        }
        if !(1..=1000).contains(&self.sample_rate) {
            return Err(Error::Config("sample rate must be 1..=1000 Hz".into()));
        }
        self.tls = self.tls_files.load()?;
        Ok(Agent { config: self })
    }
}

/// A configured, not yet running agent.
#[derive(Debug, Clone)]
pub struct Agent {
    config: AgentBuilder,
}

impl Agent {
    pub fn builder(server: impl Into<String>, app: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            server: server.into().trim_end_matches('/').to_string(),
            app: app.into(),
            tags: BTreeMap::new(),
            sample_rate: 100,
            upload_interval: Duration::from_secs(10),
            auth_token: None,
            max_queued: 64,
            tls_files: TlsFiles::default(),
            tls: None,
        }
    }

    /// Starts sampling and pushing. Only one agent can sample a process at a time; if the
    /// sampler cannot start for another reason, this logs it and the agent runs without samples.
    pub fn start(self) -> Result<RunningAgent, Error> {
        let c = self.config;
        let sampler = match sampler::Sampler::start(c.sample_rate) {
            Ok(s) => Some(s),
            Err(e @ sampler::StartError::AlreadyRunning) => {
                return Err(Error::Profiler(e.to_string()))
            }
            Err(e) => {
                log::warn!("kiln: {e}; the program runs unprofiled");
                None
            }
        };
        let uploader = Uploader::start(
            c.server.clone(),
            c.auth_token.clone(),
            c.max_queued,
            c.tls.clone(),
        );
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let reporter = std::thread::Builder::new()
            .name("kiln-reporter".into())
            .spawn(move || report_loop(c, sampler, stop_rx, uploader))
            .map_err(|e| Error::Profiler(e.to_string()))?;
        Ok(RunningAgent {
            stop: Some(stop_tx),
            sampler: Some(reporter),
        })
    }
}

/// A running agent; [`RunningAgent::stop`] (or dropping it) takes the last profile and flushes.
pub struct RunningAgent {
    stop: Option<mpsc::Sender<()>>,
    sampler: Option<JoinHandle<u64>>,
}

impl RunningAgent {
    /// Stops sampling, pushes what is left (up to 5 s) and returns.
    pub fn stop(mut self) -> Result<(), Error> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        drop(self.stop.take());
        match self.sampler.take() {
            Some(h) => h.join().map(|_| ()).map_err(|_| Error::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// How often the reporter empties the sample buffer into its counts.
const DRAIN_EVERY: Duration = Duration::from_secs(1);

fn report_loop(
    c: AgentBuilder,
    sampler: Option<sampler::Sampler>,
    stop: mpsc::Receiver<()>,
    uploader: Uploader,
) -> u64 {
    let mut counts = profile::Aggregate::default();
    let mut symbols = symbols::Symbolizer::new();
    let mut from = SystemTime::now();
    let mut next_report = Instant::now() + c.upload_interval;
    loop {
        let wait = next_report
            .saturating_duration_since(Instant::now())
            .min(DRAIN_EVERY);
        let stopping = matches!(
            stop.recv_timeout(wait),
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected)
        );
        if let Some(s) = &sampler {
            if stopping {
                s.stop();
            }
            s.drain(|stack, tag| counts.add(stack, tag));
        }
        if !stopping && Instant::now() < next_report {
            continue;
        }
        let until = SystemTime::now();
        let lost = counts.dropped + sampler.as_ref().map_or(0, |s| s.take_dropped());
        if lost > 0 {
            log::warn!("kiln: {lost} samples dropped (sample buffer or stack table full)");
        }
        report(&c, &mut counts, &mut symbols, from, until, &uploader);
        tags::forget_unused();
        from = until;
        // After a stall (a suspended machine), the next report is one interval from now.
        next_report = (next_report + c.upload_interval).max(Instant::now());
        if stopping {
            drop(sampler);
            return uploader.finish(Duration::from_secs(5));
        }
    }
}

/// Names, encodes and queues the samples counted since the last report: one profile per tag set.
fn report(
    c: &AgentBuilder,
    counts: &mut profile::Aggregate,
    symbols: &mut symbols::Symbolizer,
    from: SystemTime,
    until: SystemTime,
    uploader: &Uploader,
) {
    if counts.is_empty() {
        return;
    }
    symbols.refresh();
    let duration = until.duration_since(from).unwrap_or_default();
    for (tag_set, stacks) in counts.take_by_tag() {
        let mut all = c.tags.clone();
        all.extend(tags::tags_of(tag_set));
        let pprof = profile::encode(&stacks, symbols, c.sample_rate, from, duration);
        match upload::gzip(&pprof) {
            Ok(body) => uploader.enqueue(Upload {
                name: upload::series_name(&c.app, &all),
                from,
                until,
                sample_rate: c.sample_rate,
                body,
            }),
            Err(e) => log::error!("kiln: compressing the profile failed: {e}"),
        }
    }
}
