//! # kiln-sdk
//!
//! Samples the process's CPU with [pprof-rs](https://docs.rs/pprof) and pushes gzip'd pprof to
//! Kiln's `/ingest` every upload interval — the format Pyroscope's agents use, so it also works
//! against a Pyroscope server.
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

mod tags;
mod tls;
mod upload;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

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

    /// Starts sampling and pushing. Only one agent can sample a process at a time.
    pub fn start(self) -> Result<RunningAgent, Error> {
        let c = self.config;
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(c.sample_rate)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| Error::Profiler(e.to_string()))?;
        let uploader = Uploader::start(
            c.server.clone(),
            c.auth_token.clone(),
            c.max_queued,
            c.tls.clone(),
        );
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let sampler = std::thread::Builder::new()
            .name("kiln-sampler".into())
            .spawn(move || sample_loop(c, guard, stop_rx, uploader))
            .map_err(|e| Error::Profiler(e.to_string()))?;
        Ok(RunningAgent {
            stop: Some(stop_tx),
            sampler: Some(sampler),
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

fn sample_loop(
    c: AgentBuilder,
    mut guard: pprof::ProfilerGuard<'static>,
    stop: mpsc::Receiver<()>,
    uploader: Uploader,
) -> u64 {
    let mut from = SystemTime::now();
    loop {
        let stopping = matches!(
            stop.recv_timeout(c.upload_interval),
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected)
        );
        let until = SystemTime::now();
        match guard.report().build() {
            Ok(report) => {
                for (extra, part) in tags::split_by_tags(report) {
                    let mut all = c.tags.clone();
                    all.extend(extra);
                    match upload::gzip_pprof(&part) {
                        Ok(body) => uploader.enqueue(Upload {
                            name: upload::series_name(&c.app, &all),
                            from,
                            until,
                            sample_rate: c.sample_rate,
                            body,
                        }),
                        Err(e) => log::error!("kiln: encoding the profile failed: {e}"),
                    }
                }
            }
            Err(e) => log::error!("kiln: taking the profile failed: {e}"),
        }
        from = until;
        if stopping {
            drop(guard);
            return uploader.finish(Duration::from_secs(5));
        }
        // A fresh guard per interval resets the sample counts.
        drop(guard);
        guard = match pprof::ProfilerGuardBuilder::default()
            .frequency(c.sample_rate)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
        {
            Ok(g) => g,
            Err(e) => {
                log::error!("kiln: restarting the profiler failed, profiling stops: {e}");
                return uploader.finish(Duration::from_secs(5));
            }
        };
    }
}
