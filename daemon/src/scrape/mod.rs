//! Pull mode: the daemon scrapes pprof endpoints (Go's `net/http/pprof`, godeltaprof) of the
//! targets `[[scrape_configs]]` lists and stores what they serve as if it had been pushed.
//!
//! A discovery loop keeps one task per target running; each task scrapes all the job's
//! profiles once per interval (never two rounds of a target at once), every HTTP request
//! holding a slot of `[scrape] max_concurrent`.

pub mod config;
mod fetch;
mod profiles;
mod targets;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use kiln_plugin_api::{IngestMeta, Tenant, DEFAULT_TENANT};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::durable::Unit;
use crate::server::AppState;
pub use config::{ScrapeConfig, ScrapeSettings};
use fetch::{Client, FetchError};
use profiles::ProfileSpec;
use targets::{FileCache, Target};

/// A job ready to scrape: its configuration, HTTP client, tenant and profiles.
struct Job {
    config: ScrapeConfig,
    client: Client,
    tenant: Tenant,
    profiles: Vec<ProfileSpec>,
}

impl Job {
    fn build(c: &ScrapeConfig, settings: &ScrapeSettings, max_body: u64) -> anyhow::Result<Self> {
        let tenant = Tenant::new(c.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.into()))?;
        Ok(Self {
            client: Client::new(c, settings.max_redirects, max_body)
                .with_context(|| format!("in [[scrape_configs]] job_name {:?}", c.job_name))?,
            tenant,
            profiles: c
                .profiles
                .iter()
                .map(|p| ProfileSpec::resolve(p, &c.profile_paths))
                .collect(),
            config: c.clone(),
        })
    }
}

/// The last scrape of a target, as `/api/targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `up`, `down` or `unknown` (not scraped yet).
    pub health: &'static str,
    /// Unix milliseconds of the last scrape's start.
    pub last_scrape_ms: Option<i64>,
    pub last_scrape_duration_seconds: Option<f64>,
    pub last_error: Option<String>,
}

struct Running {
    job: Arc<Job>,
    health: Arc<Mutex<Health>>,
    task: JoinHandle<()>,
}

/// Every scrape job and target of the daemon.
pub struct Scraper {
    jobs: ArcSwap<Vec<Arc<Job>>>,
    running: Mutex<BTreeMap<Target, Running>>,
    /// `file_sd` files that could not be read, by job.
    discovery_errors: Mutex<BTreeMap<String, Vec<String>>>,
    slots: Arc<Semaphore>,
    changed: Notify,
}

fn build_jobs(config: &Config) -> anyhow::Result<Vec<Arc<Job>>> {
    config
        .scrape_configs
        .iter()
        .map(|c| Job::build(c, &config.scrape, config.server.max_body_bytes).map(Arc::new))
        .collect::<anyhow::Result<_>>()
        .with_context(|| config.path.display().to_string())
}

impl Scraper {
    /// Reads the jobs' certificates and secrets; starts nothing (see [`run`]).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            jobs: ArcSwap::from_pointee(build_jobs(config)?),
            running: Mutex::default(),
            discovery_errors: Mutex::default(),
            slots: Arc::new(Semaphore::new(config.scrape.max_concurrent)),
            changed: Notify::new(),
        })
    }

    /// Swaps in the jobs of a reloaded configuration; targets of changed jobs restart.
    /// `[scrape] max_concurrent` needs a restart.
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        self.jobs.store(Arc::new(build_jobs(config)?));
        self.changed.notify_one();
        Ok(())
    }

    /// Starts tasks for new targets and stops those of targets (or jobs) that went away.
    fn sync(&self, state: &Arc<AppState>, cache: &mut FileCache) {
        let jobs = self.jobs.load_full();
        let mut wanted: BTreeMap<Target, Arc<Job>> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for job in jobs.iter() {
            let (found, errs) = targets::discover(&job.config, cache);
            for e in &errs {
                tracing::warn!(job = %job.config.job_name, error = %e, "scrape target file not read");
            }
            errors.insert(job.config.job_name.clone(), errs);
            for t in found {
                wanted.entry(t).or_insert_with(|| job.clone());
            }
        }
        *self.discovery_errors.lock() = errors;
        let mut running = self.running.lock();
        running.retain(|target, r| {
            let keep = wanted
                .get(target)
                .is_some_and(|j| Arc::ptr_eq(j, &r.job) || j.config == r.job.config);
            if !keep {
                r.task.abort();
            }
            keep
        });
        for (target, job) in wanted {
            if running.contains_key(&target) {
                continue;
            }
            let health = Arc::new(Mutex::new(Health {
                health: "unknown",
                last_scrape_ms: None,
                last_scrape_duration_seconds: None,
                last_error: None,
            }));
            let task = tokio::spawn(target_loop(
                state.clone(),
                job.clone(),
                target.clone(),
                health.clone(),
            ));
            running.insert(target, Running { job, health, task });
        }
    }

    fn refresh_every(&self) -> Duration {
        self.jobs
            .load()
            .iter()
            .flat_map(|j| j.config.file_sd_configs.iter().map(|f| f.refresh_interval))
            .min()
            .unwrap_or(Duration::from_secs(30))
    }

    fn stop_all(&self) {
        for (_, r) in std::mem::take(&mut *self.running.lock()) {
            r.task.abort();
        }
    }
}

/// Keeps the running targets in line with the jobs and their `file_sd` files until aborted.
pub async fn run(state: Arc<AppState>) {
    struct StopOnDrop(Arc<AppState>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.scrape.stop_all();
        }
    }
    let _stop = StopOnDrop(state.clone());
    let mut cache = FileCache::default();
    loop {
        let scraper = &state.scrape;
        // File reads block; they are few and small.
        tokio::task::block_in_place(|| scraper.sync(&state, &mut cache));
        let wait = scraper.refresh_every();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = scraper.changed.notified() => {}
        }
    }
}

/// Scrapes one target every interval until aborted.
async fn target_loop(
    state: Arc<AppState>,
    job: Arc<Job>,
    target: Target,
    health: Arc<Mutex<Health>>,
) {
    let interval = job.config.scrape_interval;
    // Targets start spread over the interval rather than all at once.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    let offset = Duration::from_millis(h.finish() % (interval.as_millis() as u64).max(1));
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The previous body of each cumulative profile and when it was taken.
    let mut previous: HashMap<String, (Bytes, i64)> = HashMap::new();
    let target = Arc::new(target);
    loop {
        tick.tick().await;
        let started = Instant::now();
        let started_ms = crate::time::now_ns() / 1_000_000;
        let mut round = tokio::task::JoinSet::new();
        for spec in &job.profiles {
            let prev = previous.get(&spec.name).cloned();
            let (state, job, target, spec) =
                (state.clone(), job.clone(), target.clone(), spec.clone());
            round.spawn(async move {
                let began = Instant::now();
                let result = scrape_profile(&state, &job, &target, &spec, prev).await;
                let outcome = match &result {
                    Ok(_) => "success",
                    Err(e) => e.outcome(),
                };
                state
                    .metrics
                    .scraped(&job.config.job_name, outcome, began.elapsed());
                (spec.name, result)
            });
        }
        let mut errors = Vec::new();
        while let Some(done) = round.join_next().await {
            match done {
                Ok((name, Ok(Some(kept)))) => {
                    previous.insert(name, kept);
                }
                Ok((_, Ok(None))) => {}
                Ok((name, Err(e))) => errors.push(format!("{name}: {e}")),
                Err(e) => errors.push(format!("scrape task failed: {e}")),
            }
        }
        errors.sort();
        let mut h = health.lock();
        h.health = if errors.is_empty() { "up" } else { "down" };
        h.last_scrape_ms = Some(started_ms);
        h.last_scrape_duration_seconds = Some(started.elapsed().as_secs_f64());
        h.last_error = (!errors.is_empty()).then(|| errors.join("; "));
    }
}

/// Why one profile of one target was not stored.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("not a pprof profile: {0}")]
    Invalid(String),
    #[error("not stored: {0}")]
    Refused(String),
}

impl ScrapeError {
    fn outcome(&self) -> &'static str {
        match self {
            Self::Fetch(FetchError::Timeout(_)) => "timeout",
            Self::Fetch(FetchError::Status { .. }) => "http_status",
            Self::Fetch(FetchError::TooLarge(_)) => "too_large",
            Self::Fetch(FetchError::Http(_)) => "http_error",
            Self::Invalid(_) => "invalid_profile",
            Self::Refused(_) => "refused",
        }
    }
}

/// Pulls one profile and stores it. Returns the body to keep for the next delta of a
/// cumulative profile.
async fn scrape_profile(
    state: &Arc<AppState>,
    job: &Job,
    target: &Target,
    spec: &ProfileSpec,
    prev: Option<(Bytes, i64)>,
) -> Result<Option<(Bytes, i64)>, ScrapeError> {
    let c = &job.config;
    let mut url = format!("{}{}", target.base_url, spec.path);
    let mut timeout = c.scrape_timeout;
    let now = crate::time::now_ns();
    if spec.kind == Some(profiles::ProfileKind::Cpu) {
        let seconds = profiles::cpu_seconds(c.scrape_interval);
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("seconds={seconds}"));
        // The target answers once its profiling window is over.
        timeout += Duration::from_secs(seconds);
    }
    let _slot = state
        .scrape
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| ScrapeError::Refused(e.to_string()))?;
    let client = job.client.clone();
    let fetched = crate::alloc::spawn_blocking_released(move || client.get(&url, timeout));
    // The client enforces the timeout; this guards against a read that ignores it.
    let body = match tokio::time::timeout(timeout + Duration::from_secs(2), fetched).await {
        Ok(Ok(r)) => Bytes::from(r?),
        Ok(Err(e)) => return Err(ScrapeError::Refused(format!("scrape task failed: {e}"))),
        Err(_) => return Err(FetchError::Timeout(timeout).into()),
    };
    drop(_slot);
    let end_ns = crate::time::now_ns();
    let mut start_ns = match spec.kind {
        Some(profiles::ProfileKind::Cpu) => {
            end_ns - (profiles::cpu_seconds(c.scrape_interval) as i64) * 1_000_000_000
        }
        _ => now,
    };
    check_pprof(&body, state.config.server.max_decompressed_bytes)?;

    let cumulative = spec.cumulative();
    let type_config = spec
        .kind
        .and_then(profiles::ProfileKind::sample_type_config);
    // The first scrape of a running total is its own baseline: only its non-cumulative
    // types (in-use memory) are stored.
    let (prev_body, prev_ns) = match &prev {
        Some((b, t)) if cumulative => (Some(b.clone()), *t),
        _ if cumulative => (Some(body.clone()), now),
        _ => (None, start_ns),
    };
    if cumulative {
        start_ns = prev_ns;
    }
    let (unit_body, content_type) = if prev_body.is_some() || type_config.is_some() {
        (
            Bytes::from(profiles::multipart_body(
                &body,
                prev_body.as_deref(),
                type_config,
            )),
            Some(profiles::multipart_content_type()),
        )
    } else {
        (body.clone(), None)
    };
    let service = target
        .labels
        .service_name()
        .unwrap_or(&target.job)
        .to_string();
    let meta = IngestMeta {
        format: Some("pprof".into()),
        content_type,
        app: service,
        type_suffix: None,
        labels: target.labels.clone(),
        start_ns,
        end_ns,
        sample_rate: None,
        spy_name: "scrape".into(),
        units: None,
        aggregation: None,
    };
    let wire_bytes = unit_body.len();
    state
        .limits
        .admit_ingest(&job.tenant, wire_bytes)
        .map_err(|e| ScrapeError::Refused(e.to_string()))?;
    let ingestion = state.ingestion.load_full();
    let pipeline = ingestion.pipelines.route(&meta.app, &meta.labels);
    if !pipeline.accepts("pprof") {
        return Err(ScrapeError::Refused(format!(
            "pipeline {:?} does not accept format \"pprof\"",
            pipeline.name
        )));
    }
    let unit = Unit {
        decoder: "pprof".into(),
        meta,
        body: unit_body,
        route_by_profile: false,
    };
    let accepted = state
        .durable
        .accept(ingestion, &job.tenant, vec![unit])
        .await
        .map_err(|e| ScrapeError::Refused(e.to_string()))?;
    state.metrics.ingested(accepted.profiles, wire_bytes);
    Ok(cumulative.then_some((body, end_ns)))
}

/// Refuses a body that is not a (possibly gzip'd) pprof profile before it reaches the log:
/// a page of HTML can parse as protobuf, but never has the string table pprof requires.
fn check_pprof(body: &[u8], limit: u64) -> Result<(), ScrapeError> {
    use prost::Message;
    if body.is_empty() {
        return Err(ScrapeError::Invalid("empty body".into()));
    }
    let data = kiln_pprof::gunzip_if_needed(body, limit)
        .map_err(|e| ScrapeError::Invalid(e.to_string()))?;
    let p = kiln_pprof::proto::Profile::decode(&data[..])
        .map_err(|e| ScrapeError::Invalid(e.to_string()))?;
    if p.string_table.first().is_none_or(|s| !s.is_empty()) || p.sample_type.is_empty() {
        return Err(ScrapeError::Invalid(
            "no sample types or string table".into(),
        ));
    }
    Ok(())
}

/// One target in `/api/targets`.
#[derive(Serialize)]
struct TargetView {
    job: String,
    url: String,
    labels: BTreeMap<String, String>,
    #[serde(flatten)]
    health: Health,
}

#[derive(Serialize)]
struct TargetsView {
    targets: Vec<TargetView>,
    /// `file_sd` files that could not be read, by job.
    discovery_errors: BTreeMap<String, Vec<String>>,
}

/// `GET /api/targets`: every target and its last scrape.
pub async fn api_targets(State(state): State<Arc<AppState>>) -> Json<impl Serialize> {
    let targets = state
        .scrape
        .running
        .lock()
        .iter()
        .map(|(t, r)| TargetView {
            job: t.job.clone(),
            url: t.base_url.clone(),
            labels: t
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            health: r.health.lock().clone(),
        })
        .collect();
    let discovery_errors = state
        .scrape
        .discovery_errors
        .lock()
        .iter()
        .filter(|(_, e)| !e.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Json(TargetsView {
        targets,
        discovery_errors,
    })
}
