//! `type = "forward"` sink: pushes what a pipeline stores on to another Pyroscope-compatible
//! server over the Connect push API (`/push.v1.PusherService/Push`), one pprof per profile.
//!
//! The sink only encodes and queues; a background task sends. The queue is bounded in
//! requests and bytes: what does not fit is dropped and counted
//! (`kiln_sink_dropped_profiles_total{sink}`), so a slow or absent server never holds up
//! ingest. 429, 5xx and connection errors are retried with exponential backoff, in order;
//! other refusals drop the request (counted in `kiln_sink_errors_total{sink}`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kiln_plugin_api::{ExportError, Profile, SinkExporter};
use kiln_pprof::push::{LabelPair, PushRequest, RawProfileSeries, RawSample};
use prost::Message;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::metrics::Metrics;

mod pprof;

/// `[sinks.NAME]` options of `type = "forward"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// Base URL of the receiving server (`http://central:4040`).
    pub url: String,
    /// Extra request headers (e.g. `Authorization = "Bearer …"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `X-Scope-OrgID`.
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub basic_auth: Option<BasicAuth>,
    /// Per request.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Requests waiting to be sent before new ones are dropped.
    #[serde(default = "default_queue_items")]
    pub max_queue_items: usize,
    /// Bytes of encoded requests waiting to be sent before new ones are dropped.
    #[serde(default = "default_queue_bytes")]
    pub max_queue_bytes: usize,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_queue_items() -> usize {
    10_000
}
fn default_queue_bytes() -> usize {
    64 << 20
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

impl ForwardConfig {
    pub fn check(&self, table: &str) -> anyhow::Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            anyhow::bail!(
                "in [{table}], key `url`: {:?} is not an http:// or https:// URL",
                self.url
            );
        }
        if self.max_queue_items == 0 || self.max_queue_bytes == 0 {
            anyhow::bail!(
                "in [{table}], key `max_queue_items`/`max_queue_bytes`: must be at least 1"
            );
        }
        Ok(())
    }
}

/// One encoded push and how many profiles it carries.
struct Request {
    body: Vec<u8>,
    profiles: usize,
}

#[derive(Default)]
struct Queue {
    requests: VecDeque<Request>,
    bytes: usize,
    sender_started: bool,
}

pub struct ForwardSink {
    name: String,
    config: ForwardConfig,
    queue: Arc<Mutex<Queue>>,
    wake: Arc<Notify>,
    metrics: Metrics,
}

impl ForwardSink {
    pub fn new(name: &str, config: ForwardConfig, metrics: Metrics) -> Self {
        Self {
            name: name.to_string(),
            config,
            queue: Arc::default(),
            wake: Arc::default(),
            metrics,
        }
    }
}

/// The Connect push body for `profiles`: one series per profile, labelled as stored plus the
/// profile type's `__name__`.
pub fn push_request<'a>(profiles: impl IntoIterator<Item = &'a Profile>) -> Vec<u8> {
    let series = profiles
        .into_iter()
        .map(|p| {
            let mut labels: Vec<LabelPair> =
                p.labels.iter().map(|(k, v)| LabelPair::new(k, v)).collect();
            labels.push(LabelPair::new("__name__", &p.profile_type.metric));
            if !p.meta.spy_name.is_empty() && p.labels.get("pyroscope_spy").is_none() {
                labels.push(LabelPair::new("pyroscope_spy", &p.meta.spy_name));
            }
            RawProfileSeries {
                labels,
                samples: vec![RawSample {
                    raw_profile: pprof::encode_profile(p),
                    id: String::new(),
                }],
            }
        })
        .collect();
    PushRequest { series }.encode_to_vec()
}

#[async_trait::async_trait]
impl SinkExporter for ForwardSink {
    async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError> {
        if profiles.is_empty() {
            return Ok(());
        }
        let body = push_request(profiles.iter().copied());
        let mut q = self.queue.lock().expect("not poisoned");
        if q.requests.len() >= self.config.max_queue_items
            || q.bytes + body.len() > self.config.max_queue_bytes
        {
            drop(q);
            self.metrics.sink_dropped(&self.name, profiles.len());
            tracing::warn!(sink = %self.name, profiles = profiles.len(), "forward queue full; profiles dropped");
            return Ok(());
        }
        q.bytes += body.len();
        q.requests.push_back(Request {
            body,
            profiles: profiles.len(),
        });
        if !q.sender_started {
            q.sender_started = true;
            tokio::spawn(send_loop(
                self.name.clone(),
                self.config.clone(),
                Arc::downgrade(&self.queue),
                self.wake.clone(),
                self.metrics.clone(),
            ));
        }
        drop(q);
        self.wake.notify_one();
        Ok(())
    }
}

/// What became of one attempt.
enum Outcome {
    Sent,
    /// Worth retrying (429, 5xx, connection error).
    Retry(String),
    /// Refused for good (other 4xx).
    Refused(String),
}

/// Sends queued requests in order until the sink is dropped (a reload) and its queue drained
/// or abandoned.
async fn send_loop(
    name: String,
    config: ForwardConfig,
    queue: std::sync::Weak<Mutex<Queue>>,
    wake: Arc<Notify>,
    metrics: Metrics,
) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build(),
    );
    let url = format!(
        "{}/push.v1.PusherService/Push",
        config.url.trim_end_matches('/')
    );
    let config = Arc::new(config);
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(q) = queue.upgrade() else { return };
        let next = q
            .lock()
            .expect("not poisoned")
            .requests
            .front()
            .map(|r| (r.body.clone(), r.profiles));
        drop(q);
        let Some((body, profiles)) = next else {
            tokio::select! {
                _ = wake.notified() => {}
                // Notices a dropped sink even without new work.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        let (agent2, url2, config2) = (agent.clone(), url.clone(), config.clone());
        let outcome = tokio::task::spawn_blocking(move || send(&agent2, &url2, &config2, body))
            .await
            .unwrap_or_else(|e| Outcome::Retry(e.to_string()));
        match outcome {
            Outcome::Sent => backoff = Duration::from_millis(100),
            Outcome::Refused(why) => {
                metrics.sink_error(&name);
                tracing::warn!(sink = %name, profiles, error = %why, "forward refused; profiles dropped");
            }
            Outcome::Retry(why) => {
                metrics.sink_error(&name);
                tracing::warn!(sink = %name, profiles, error = %why, retry_in = ?backoff, "forward failed; will retry");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(config.max_backoff);
                continue;
            }
        }
        if let Some(q) = queue.upgrade() {
            let mut q = q.lock().expect("not poisoned");
            if let Some(r) = q.requests.pop_front() {
                q.bytes -= r.body.len();
            }
        }
    }
}

fn send(agent: &ureq::Agent, url: &str, config: &ForwardConfig, body: Vec<u8>) -> Outcome {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/proto")
        .header("Connect-Protocol-Version", "1");
    if let Some(t) = &config.tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    if let Some(b) = &config.basic_auth {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", b.username, b.password));
        req = req.header("Authorization", format!("Basic {token}"));
    }
    for (k, v) in &config.headers {
        req = req.header(k, v);
    }
    match req.send(&body[..]) {
        Ok(mut r) => {
            let status = r.status().as_u16();
            if (200..300).contains(&status) {
                return Outcome::Sent;
            }
            let text = r.body_mut().read_to_string().unwrap_or_default();
            let why = format!("HTTP {status}: {}", text.trim());
            if status == 429 || status >= 500 {
                Outcome::Retry(why)
            } else {
                Outcome::Refused(why)
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}
