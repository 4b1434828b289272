//! Prometheus remote write of the rules' counters (`[metrics_remote_write]`): every `interval`,
//! one snappy-compressed protobuf `WriteRequest` (remote-write 1.0, as Prometheus, Mimir and
//! Grafana Cloud receive it) with the current value of every rule series, POSTed to `url`.
//! Counters are cumulative, so a failed send loses no information: the next one carries the
//! totals. Changing this table takes a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde::Deserialize;

use crate::server::AppState;

/// `[metrics_remote_write]` as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver, e.g. `http://127.0.0.1:9090/api/v1/write`.
    pub url: String,
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra request headers, such as `Authorization` or `X-Scope-OrgID`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl RemoteWriteConfig {
    /// Checks the table; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!(
                "in [metrics_remote_write], key `url`: {:?} is not an http:// or https:// URL",
                self.url
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err("in [metrics_remote_write], key `interval`: must be at least 1s".into());
        }
        if self.timeout.is_zero() {
            return Err("in [metrics_remote_write], key `timeout`: must be above zero".into());
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// The request body for `series` (metric name, labels, value) at `timestamp_ms`: labels sorted
/// by name with `__name__` first, as receivers require.
fn encode(series: Vec<super::SeriesValue>, timestamp_ms: i64) -> Vec<u8> {
    let timeseries = series
        .into_iter()
        .map(|s| {
            let mut labels: Vec<Label> = s
                .labels
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect();
            labels.push(Label {
                name: "__name__".into(),
                value: s.metric,
            });
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            TimeSeries {
                labels,
                samples: vec![Sample {
                    value: s.value,
                    timestamp: timestamp_ms,
                }],
            }
        })
        .collect();
    let raw = WriteRequest { timeseries }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compresses any input")
}

fn post(config: &RemoteWriteConfig, agent: &ureq::Agent, body: Vec<u8>) -> Result<(), String> {
    let mut request = agent
        .post(&config.url)
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    for (name, value) in &config.headers {
        request = request.header(name, value);
    }
    let mut response = request
        .send(&body[..])
        .map_err(|e| format!("POST {}: {e}", config.url))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Err(format!(
        "POST {} answered {status}: {}",
        config.url,
        text.trim()
    ))
}

/// Sends the counters every interval until the daemon stops; does nothing without the table.
pub async fn run(state: Arc<AppState>) {
    let Some(config) = state.config.metrics_remote_write.clone() else {
        return;
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(config.timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let config = Arc::new(config);
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        let Some(rules) = state.metrics.rules() else {
            continue;
        };
        let series = rules.values();
        if series.is_empty() {
            continue;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let body = encode(series, now_ms);
        let (config, agent) = (config.clone(), agent.clone());
        let sent = tokio::task::spawn_blocking(move || post(&config, &agent, body))
            .await
            .unwrap_or_else(|e| Err(format!("remote write task failed: {e}")));
        state.metrics.remote_write(sent.is_ok());
        match sent {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("metrics remote write delivers again");
            }
            Ok(()) => {}
            Err(e) => {
                // One line when it starts failing; the failures metric counts the rest.
                if !failing {
                    tracing::warn!(error = %e, "metrics remote write failed; retrying every interval");
                }
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_request_decompresses_to_sorted_labels_and_one_sample_per_series() {
        let body = encode(
            vec![super::super::SeriesValue {
                metric: "kiln_profile_cpu_seconds_total".into(),
                labels: vec![
                    ("service_name".into(), "api".into()),
                    ("env".into(), "prod".into()),
                ],
                value: 1.5,
            }],
            1_700_000_000_000,
        );
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(&raw[..]).unwrap();
        let s = &request.timeseries[0];
        let names: Vec<&str> = s.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["__name__", "env", "service_name"]);
        assert_eq!(s.labels[0].value, "kiln_profile_cpu_seconds_total");
        assert_eq!(
            s.samples,
            vec![Sample {
                value: 1.5,
                timestamp: 1_700_000_000_000
            }]
        );
    }

    #[test]
    fn bad_tables_name_the_key() {
        let mut c = RemoteWriteConfig {
            url: "prometheus:9090".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
        };
        assert!(c.validate().unwrap_err().contains("key `url`"));
        c.url = "http://127.0.0.1:9090/api/v1/write".into();
        c.interval = Duration::from_millis(10);
        assert!(c.validate().unwrap_err().contains("key `interval`"));
        c.interval = Duration::from_secs(1);
        assert!(c.validate().is_ok());
    }
}
