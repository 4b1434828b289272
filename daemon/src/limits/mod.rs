//! Limits that keep the daemon alive: per tenant (ingest rate, series, labels, stacks,
//! samples) and per daemon (concurrent queries, query timeout, header and body read
//! timeouts). Every refusal names its limit (`limits.NAME`) in the answer and is counted in
//! `kiln_limit_refused_total{limit,tenant}`.

mod bucket;
pub mod http;
pub mod shape;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use arc_swap::ArcSwap;
use axum::http::StatusCode;
use kiln_plugin_api::{Labels, ProfileType, Storage, Tenant};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use bucket::Bucket;

/// Limits each tenant gets unless `[limits.tenants.NAME]` overrides them. 0 means no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantLimits {
    pub ingest_bytes_per_second: u64,
    pub ingest_burst_bytes: u64,
    pub max_series: u64,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    pub max_label_count: usize,
    pub max_stack_depth: usize,
    pub max_samples_per_profile: usize,
}

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            ingest_bytes_per_second: 256 << 20,
            ingest_burst_bytes: 1 << 30,
            max_series: 100_000,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_label_count: 64,
            max_stack_depth: 2048,
            max_samples_per_profile: 1_000_000,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Push body bytes (as received) per second and tenant: 429 + `Retry-After` past it.
    pub ingest_bytes_per_second: u64,
    /// Bytes a tenant may push at once above the rate.
    pub ingest_burst_bytes: u64,
    /// Distinct series (labels + profile type) per tenant; pushes adding more get 429.
    pub max_series: u64,
    pub max_label_name_length: usize,
    pub max_label_value_length: usize,
    /// Labels per series, `service_name` included.
    pub max_label_count: usize,
    /// Deeper stacks keep their leaf-side frames under a `[truncated]` root frame.
    pub max_stack_depth: usize,
    /// (stack, value) pairs per profile; more is refused with 400.
    pub max_samples_per_profile: usize,
    /// Queries (render, labels, apps…) running at once; more get 429 + `Retry-After`.
    pub max_concurrent_queries: usize,
    /// A query taking longer is answered 503.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Time to receive a request's headers (and the TLS handshake); the connection is closed
    /// past it. Also how long an idle keep-alive connection stays open.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time to receive a request's body: 408 past it.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Per-tenant overrides of the per-tenant limits.
    pub tenants: BTreeMap<String, TenantOverride>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let t = TenantLimits::default();
        Self {
            ingest_bytes_per_second: t.ingest_bytes_per_second,
            ingest_burst_bytes: t.ingest_burst_bytes,
            max_series: t.max_series,
            max_label_name_length: t.max_label_name_length,
            max_label_value_length: t.max_label_value_length,
            max_label_count: t.max_label_count,
            max_stack_depth: t.max_stack_depth,
            max_samples_per_profile: t.max_samples_per_profile,
            max_concurrent_queries: 64,
            query_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(60),
            tenants: BTreeMap::new(),
        }
    }
}

/// `[limits.tenants.NAME]`: what differs for one tenant.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantOverride {
    pub ingest_bytes_per_second: Option<u64>,
    pub ingest_burst_bytes: Option<u64>,
    pub max_series: Option<u64>,
    pub max_label_name_length: Option<usize>,
    pub max_label_value_length: Option<usize>,
    pub max_label_count: Option<usize>,
    pub max_stack_depth: Option<usize>,
    pub max_samples_per_profile: Option<usize>,
}

impl LimitsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, d) in [
            ("query_timeout", self.query_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
        ] {
            if d.is_zero() {
                bail!("in [limits], key `{key}`: must be greater than zero");
            }
        }
        if self.max_concurrent_queries == 0 {
            bail!("in [limits], key `max_concurrent_queries`: must be at least 1");
        }
        for name in self.tenants.keys() {
            Tenant::new(name).map_err(|e| anyhow::anyhow!("in [limits.tenants.{name}]: {e}"))?;
        }
        let mut tables = vec![("[limits]".to_string(), self.for_tenant(""))];
        for name in self.tenants.keys() {
            tables.push((format!("[limits.tenants.{name}]"), self.for_tenant(name)));
        }
        for (table, t) in tables {
            if t.ingest_bytes_per_second > 0 && t.ingest_burst_bytes == 0 {
                bail!("in {table}, key `ingest_burst_bytes`: must be greater than zero when ingest_bytes_per_second is set");
            }
            if t.max_stack_depth == 1 {
                bail!("in {table}, key `max_stack_depth`: must be 0 (no limit) or at least 2 (the marker frame and one frame)");
            }
        }
        Ok(())
    }

    /// The limits of `tenant`: the defaults with its overrides.
    pub fn for_tenant(&self, tenant: &str) -> TenantLimits {
        let o = self.tenants.get(tenant).cloned().unwrap_or_default();
        TenantLimits {
            ingest_bytes_per_second: o
                .ingest_bytes_per_second
                .unwrap_or(self.ingest_bytes_per_second),
            ingest_burst_bytes: o.ingest_burst_bytes.unwrap_or(self.ingest_burst_bytes),
            max_series: o.max_series.unwrap_or(self.max_series),
            max_label_name_length: o
                .max_label_name_length
                .unwrap_or(self.max_label_name_length),
            max_label_value_length: o
                .max_label_value_length
                .unwrap_or(self.max_label_value_length),
            max_label_count: o.max_label_count.unwrap_or(self.max_label_count),
            max_stack_depth: o.max_stack_depth.unwrap_or(self.max_stack_depth),
            max_samples_per_profile: o
                .max_samples_per_profile
                .unwrap_or(self.max_samples_per_profile),
        }
    }
}

/// A request refused by a limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    /// `limits.NAME`: the answer's `error` and the metrics label.
    pub limit: &'static str,
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl LimitError {
    pub(crate) fn new(limit: &'static str, status: StatusCode, message: String) -> Self {
        Self {
            limit,
            status,
            message,
            retry_after: None,
        }
    }

    pub fn invalid(name: &str, message: String) -> Self {
        Self::new(limit_name(name), StatusCode::BAD_REQUEST, message)
    }
}

/// `limits.NAME` as a static string, for labels and bodies.
fn limit_name(name: &str) -> &'static str {
    match name {
        "ingest_bytes_per_second" => "limits.ingest_bytes_per_second",
        "max_series" => "limits.max_series",
        "max_label_name_length" => "limits.max_label_name_length",
        "max_label_value_length" => "limits.max_label_value_length",
        "max_label_count" => "limits.max_label_count",
        "max_samples_per_profile" => "limits.max_samples_per_profile",
        "max_concurrent_queries" => "limits.max_concurrent_queries",
        "query_timeout" => "limits.query_timeout",
        "body_read_timeout" => "limits.body_read_timeout",
        _ => "limits",
    }
}

impl From<LimitError> for crate::api_error::ApiError {
    fn from(e: LimitError) -> Self {
        Self {
            status: e.status,
            cause: e.limit,
            message: e.message,
            retry_after: e.retry_after,
        }
    }
}

/// The series a tenant has, as hashes of labels and profile type.
#[derive(Default)]
struct SeriesSet {
    /// Filled from storage once, at the tenant's first push since start.
    seeded: bool,
    keys: HashSet<u64>,
}

fn series_key(labels: &Labels, profile_type: &ProfileType) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for (k, v) in labels.iter() {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    profile_type.hash(&mut h);
    h.finish()
}

/// The limits of a running daemon and the state they keep.
pub struct Limits {
    config: ArcSwap<LimitsConfig>,
    buckets: Mutex<HashMap<Tenant, Bucket>>,
    series: Mutex<HashMap<Tenant, SeriesSet>>,
    /// Query slots; sized at start (a change needs a restart).
    pub queries: Arc<Semaphore>,
    metrics: Metrics,
}

impl Limits {
    pub fn new(config: &LimitsConfig, metrics: Metrics) -> Self {
        Self {
            config: ArcSwap::from_pointee(config.clone()),
            buckets: Mutex::default(),
            series: Mutex::default(),
            queries: Arc::new(Semaphore::new(config.max_concurrent_queries)),
            metrics,
        }
    }

    pub fn config(&self) -> Arc<LimitsConfig> {
        self.config.load_full()
    }

    /// Takes the per-tenant limits of a reloaded configuration.
    pub fn reload(&self, config: &LimitsConfig) {
        self.config.store(Arc::new(config.clone()));
    }

    pub fn for_tenant(&self, tenant: &Tenant) -> TenantLimits {
        self.config.load().for_tenant(tenant.as_str())
    }

    /// Counts a refusal and passes it on.
    pub fn refused(&self, e: LimitError, tenant: &str) -> LimitError {
        self.metrics.limit_refused(e.limit, tenant);
        e
    }

    /// Admits `bytes` of pushed body for `tenant`, or answers 429 with `Retry-After`.
    pub fn admit_ingest(&self, tenant: &Tenant, bytes: usize) -> Result<(), LimitError> {
        let l = self.for_tenant(tenant);
        if l.ingest_bytes_per_second == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let bucket = buckets
            .entry(tenant.clone())
            .or_insert_with(|| Bucket::new(l.ingest_burst_bytes, now));
        bucket
            .take(
                bytes as u64,
                l.ingest_bytes_per_second,
                l.ingest_burst_bytes,
                now,
            )
            .map_err(|wait| {
                let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
                let e = LimitError {
                    retry_after: Some(secs),
                    ..LimitError::new(
                        "limits.ingest_bytes_per_second",
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "tenant {tenant} pushes more than limits.ingest_bytes_per_second = {} (burst {}); retry after {secs}s",
                            l.ingest_bytes_per_second, l.ingest_burst_bytes
                        ),
                    )
                };
                self.refused(e, tenant.as_str())
            })
    }

    /// Loads the series `tenant` already has in storage, once per start, so
    /// `limits.max_series` holds across restarts.
    pub async fn seed_series(&self, tenant: &Tenant, storage: &dyn Storage) {
        if self.for_tenant(tenant).max_series == 0
            || self.series.lock().get(tenant).is_some_and(|s| s.seeded)
        {
            return;
        }
        let known = match storage.series(tenant, None, 0, i64::MAX).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "listing series for limits.max_series; counting from this push on");
                Vec::new()
            }
        };
        let mut all = self.series.lock();
        let set = all.entry(tenant.clone()).or_default();
        set.seeded = true;
        set.keys
            .extend(known.iter().map(|s| series_key(&s.labels, &s.profile_type)));
    }

    /// Drops what is known of `tenant`'s series, after some of them were deleted: its next push
    /// counts them again from storage. A push admitted but not yet stored while that happens is
    /// counted again when its series next pushes, so the count may lag by those series.
    pub fn forget_series(&self, tenant: &Tenant) {
        self.series.lock().remove(tenant);
    }

    /// As [`Self::forget_series`] for every tenant, after a retention pass removed data.
    pub fn forget_all_series(&self) {
        self.series.lock().clear();
    }

    /// Checks and shapes the profiles of one push before anything of it is kept: labels and
    /// sample counts (400), new series past `max_series` (429), deep stacks truncated.
    pub fn admit_profiles(
        &self,
        tenant: &Tenant,
        batches: &mut [crate::durable::Batch],
    ) -> Result<(), LimitError> {
        let l = self.for_tenant(tenant);
        let profiles = || batches.iter().flat_map(|b| b.profiles.iter());
        for p in profiles() {
            shape::check(&l, p).map_err(|e| self.refused(e, tenant.as_str()))?;
        }
        if l.max_series > 0 {
            let mut all = self.series.lock();
            let set = all.entry(tenant.clone()).or_default();
            let fresh: HashSet<u64> = profiles()
                .map(|p| series_key(&p.labels, &p.profile_type))
                .filter(|k| !set.keys.contains(k))
                .collect();
            if !fresh.is_empty() && (set.keys.len() + fresh.len()) as u64 > l.max_series {
                let e = LimitError {
                    retry_after: Some(60),
                    ..LimitError::new(
                        "limits.max_series",
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "tenant {tenant} has {} series; this push adds {} and limits.max_series = {}: new series are refused, existing ones accepted",
                            set.keys.len(),
                            fresh.len(),
                            l.max_series
                        ),
                    )
                };
                return Err(self.refused(e, tenant.as_str()));
            }
            set.keys.extend(fresh);
        }
        let cut = truncate(batches, l.max_stack_depth);
        if cut > 0 {
            self.metrics.stacks_truncated(tenant.as_str(), cut);
        }
        Ok(())
    }
}

/// Truncates the deep stacks of a push (also on replay, so a replayed push is stored as it
/// was acknowledged while `max_stack_depth` is unchanged).
pub fn truncate(batches: &mut [crate::durable::Batch], max_stack_depth: usize) -> u64 {
    batches
        .iter_mut()
        .flat_map(|b| b.profiles.iter_mut())
        .map(|p| shape::truncate_stacks(p, max_stack_depth))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_overrides_replace_only_what_they_name() {
        let mut c = LimitsConfig::default();
        c.tenants.insert(
            "big".into(),
            TenantOverride {
                max_series: Some(5),
                ..Default::default()
            },
        );
        assert_eq!(c.for_tenant("big").max_series, 5);
        assert_eq!(
            c.for_tenant("big").max_label_count,
            TenantLimits::default().max_label_count
        );
        assert_eq!(c.for_tenant("other"), TenantLimits::default());
        assert!(c.validate().is_ok());
        c.tenants.insert("a/b".into(), TenantOverride::default());
        assert!(c.validate().is_err());
    }
}
