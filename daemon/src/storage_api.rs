//! `GET /api/storage`: what storage holds per tenant, service and level, the disk, and the
//! limits on both; and retention by size, which the retention loop runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use kiln_plugin_api::UsageEntry;
use serde::Serialize;

use crate::api_error::ApiError;
use crate::auth::Principal;
use crate::server::AppState;

/// Bytes and chunks of a group of entries.
#[derive(Debug, Default, Serialize)]
pub struct Sum {
    pub bytes: u64,
    pub chunks: u64,
}

#[derive(Debug, Serialize)]
pub struct ServiceUsage {
    pub tenant: String,
    pub service: String,
    pub bytes: u64,
    pub chunks: u64,
}

#[derive(Debug, Serialize)]
pub struct StorageReport {
    /// False for a storage that does not report usage (a native plugin without it).
    pub supported: bool,
    /// `all` for a principal that may act for every tenant, else `tenant`: the entries are
    /// then the caller's tenant's only.
    pub scope: &'static str,
    pub tenant: String,
    /// Bytes storage holds as it accounts them, every tenant (what `max_disk_bytes` bounds).
    pub total_bytes: u64,
    /// Bytes its files take on disk (follows `total_bytes` with a lag).
    pub disk_bytes: Option<u64>,
    /// Free bytes on the data directory's filesystem.
    pub disk_free_bytes: Option<u64>,
    pub max_disk_bytes: u64,
    pub min_free_disk_bytes: u64,
    /// Sum of the visible entries.
    pub visible_bytes: u64,
    pub entries: Vec<UsageEntry>,
    pub services: Vec<ServiceUsage>,
    /// Per level, over the visible entries, finest first.
    pub levels: Vec<(String, Sum)>,
}

pub async fn usage(
    State(state): State<Arc<AppState>>,
    principal: Principal,
) -> Result<Json<StorageReport>, ApiError> {
    let usage = state.storage.usage().await?;
    let tenant = principal.tenant.as_str().to_string();
    let entries: Vec<UsageEntry> = usage
        .entries
        .into_iter()
        .filter(|e| principal.all_tenants || e.tenant == tenant)
        .collect();
    let mut services: BTreeMap<(&str, &str), Sum> = BTreeMap::new();
    let mut levels: Vec<(String, Sum)> = Vec::new();
    for e in &entries {
        let s = services.entry((&e.tenant, &e.service)).or_default();
        s.bytes += e.bytes;
        s.chunks += e.chunks;
        // Entries come finest level first within each service: keep that order.
        let at = match levels.iter().position(|(l, _)| *l == e.level) {
            Some(i) => i,
            None => {
                levels.push((e.level.clone(), Sum::default()));
                levels.len() - 1
            }
        };
        levels[at].1.bytes += e.bytes;
        levels[at].1.chunks += e.chunks;
    }
    let services = services
        .into_iter()
        .map(|((tenant, service), s)| ServiceUsage {
            tenant: tenant.to_string(),
            service: service.to_string(),
            bytes: s.bytes,
            chunks: s.chunks,
        })
        .collect();
    let disk = state.durable.disk();
    Ok(Json(StorageReport {
        supported: usage.supported,
        scope: if principal.all_tenants {
            "all"
        } else {
            "tenant"
        },
        tenant,
        total_bytes: usage.total_bytes,
        disk_bytes: usage.disk_bytes,
        disk_free_bytes: disk.measure().map(|(free, _)| free),
        max_disk_bytes: state.config.storage.max_disk_bytes,
        min_free_disk_bytes: disk.floor(),
        visible_bytes: entries.iter().map(|e| e.bytes).sum(),
        entries,
        services,
        levels,
    }))
}

/// Retention by size, after retention by age: past `storage.max_disk_bytes`, down to 90 % of
/// it, so that one pass makes room for a while instead of trimming a bucket per pass.
pub async fn size_retention(state: &AppState) {
    let max = state.config.storage.max_disk_bytes;
    if max > 0 {
        match state.storage.enforce_size(max, max - max / 10).await {
            Ok(r) if r.chunks_deleted > 0 => {
                state.metrics.size_retention_deleted(r.chunks_deleted);
                tracing::info!(
                    chunks = r.chunks_deleted,
                    max_disk_bytes = max,
                    "retention by size"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention by size failed"),
        }
    }
    match state.storage.usage().await {
        Ok(u) if u.supported => state.metrics.storage_size(u.total_bytes, u.disk_bytes),
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "measuring storage failed"),
    }
}
