//! The four component kinds and what the daemon hands them.
//!
//! Decoders and transforms are synchronous: they are pure CPU work over bytes and profiles, and
//! the daemon runs them on its blocking pool. Storage and exporters do I/O and are async.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::labels::Labels;
use crate::model::{Aggregation, Profile, ProfileType};
use crate::selector::Selector;
use crate::tenant::Tenant;
use crate::tree::Tree;

/// The kind of a component, as plugins declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    Decoder,
    Transform,
    Storage,
    Sink,
    Render,
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Decoder => "decoder",
            Self::Transform => "transform",
            Self::Storage => "storage",
            Self::Sink => "sink",
            Self::Render => "render",
        })
    }
}

/// What an ingest request says about its body, besides the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestMeta {
    /// The `format` parameter (`pprof`, `folded`, `lines`, `jfr`, …), if given.
    pub format: Option<String>,
    /// The request's `Content-Type`, if given (multipart bodies carry their boundary here).
    pub content_type: Option<String>,
    /// Application name with any profile-type suffix removed (`myapp` for `myapp.cpu`).
    pub app: String,
    /// The profile-type suffix of the name (`cpu` for `myapp.cpu`), if it had a known one.
    pub type_suffix: Option<String>,
    /// Labels from the `name` parameter plus `service_name`.
    pub labels: Labels,
    /// Window start and end, Unix nanoseconds.
    pub start_ns: i64,
    pub end_ns: i64,
    /// `sampleRate`, when given.
    pub sample_rate: Option<u32>,
    pub spy_name: String,
    /// `units` (OG agents), when given and non-empty.
    pub units: Option<String>,
    /// `aggregationType`, when given and valid.
    pub aggregation: Option<Aggregation>,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not valid for the format: the message says what is wrong.
    #[error("{0}")]
    Malformed(String),
    /// The body decoded but describes something this decoder does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The body inflates past the configured limit.
    #[error("body exceeds {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
}

/// Turns request bodies of one or more formats into profiles.
pub trait Decoder: Send + Sync {
    /// Decodes `body`. Every returned profile passes [`Profile::validate`].
    fn decode(&self, body: &[u8], meta: &IngestMeta) -> Result<Vec<Profile>, DecodeError>;
}

/// Why a transform failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransformError(pub String);

/// Rewrites profiles between decoding and storage (relabel, drop frames, …).
pub trait Transform: Send + Sync {
    fn transform(&self, profiles: Vec<Profile>) -> Result<Vec<Profile>, TransformError>;
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage I/O: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// How an [`StorageError::Io`] message says that storage cannot be reached right now (a
/// database server down), so the API answers 503 with `Retry-After` rather than 500. It stays
/// an `Io` error so that it crosses the native plugin ABI unchanged.
const UNAVAILABLE: &str = "storage unavailable: ";

impl StorageError {
    /// Storage cannot be reached right now; `why` names the cause.
    pub fn unavailable(why: impl std::fmt::Display) -> Self {
        Self::Io(format!("{UNAVAILABLE}{why}"))
    }

    /// Whether this is [`StorageError::unavailable`]: worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Io(m) if m.starts_with(UNAVAILABLE))
    }
}

/// A query over stored profiles: every series matching `selector`, in `[start_ns, end_ns)`.
#[derive(Debug, Clone)]
pub struct Query {
    pub selector: Selector,
    pub start_ns: i64,
    pub end_ns: i64,
}

/// A stored series and what is known about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesInfo {
    pub labels: Labels,
    pub profile_type: ProfileType,
    pub spy_name: String,
    pub sample_rate: u32,
}

/// Values over time: `points[i]` covers `[start_ns + i·step_ns, start_ns + (i+1)·step_ns)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub start_ns: i64,
    pub step_ns: i64,
    pub points: Vec<i64>,
}

/// The result of a merge query: the tree and how many profiles went into it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Merged {
    pub tree: Tree,
    /// Number of stored profiles merged (summed over series).
    pub profiles: u64,
    /// Number of series that contributed.
    pub series: u64,
    /// Stack nodes folded into `other` because the merge reached the storage's query memory
    /// budget; 0 when the tree is exact. Their values are kept, under `other` at the nearest
    /// ancestor that stayed.
    #[serde(default)]
    pub pruned_nodes: u64,
}

impl Merged {
    /// Applies the type's aggregation: for averages, divides by the mean number of profiles per
    /// series, so N pods report the sum of their mean usage.
    pub fn aggregated(self, aggregation: crate::Aggregation) -> Tree {
        self.aggregated_with_pruned(aggregation).0
    }

    /// [`Merged::aggregated`], with [`Merged::pruned_nodes`].
    pub fn aggregated_with_pruned(mut self, aggregation: crate::Aggregation) -> (Tree, u64) {
        if aggregation == crate::Aggregation::Average && self.series > 0 {
            let per_series = (self.profiles as f64 / self.series as f64).round() as i64;
            self.tree.divide(per_series.max(1));
        }
        (self.tree, self.pruned_nodes)
    }
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub chunks_deleted: u64,
}

/// Stored bytes of one service of one tenant at one time level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub tenant: String,
    pub service: String,
    /// The level's resolution (`10s`, `100s`, …).
    pub level: String,
    /// Bytes of its chunks (keys and values as stored, before any page-level compression).
    pub bytes: u64,
    pub chunks: u64,
}

/// What a storage holds, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageUsage {
    /// Whether the storage reports its usage at all (the default implementation does not).
    pub supported: bool,
    /// Bytes the storage accounts for: every entry plus what is shared by a service's levels
    /// (frame and stack dictionaries, series records).
    pub total_bytes: u64,
    /// Bytes its files take on disk, when it has files of its own.
    pub disk_bytes: Option<u64>,
    pub entries: Vec<UsageEntry>,
}

/// Where profiles are kept. One storage backs a pipeline; queries name the storage they read.
///
/// Every read and write names its [`Tenant`]: a tenant sees only what was written under it,
/// and deleting one tenant's service never touches another's (same name, same labels or not).
#[async_trait]
pub trait Storage: Send + Sync {
    /// Accepts profiles of `tenant`. They are durable after the next [`Storage::flush`] at the
    /// latest.
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError>;

    /// Accepts the profiles of write-ahead log record `seq`; records arrive in order.
    ///
    /// A storage that keeps the last `seq` atomically with the data it makes durable reports it
    /// from [`Storage::logged_seq`], so that a replay after a crash skips what it already holds
    /// (exactly once). The default forgets `seq`: a crash between a flush and the daemon's
    /// checkpoint may then replay a record twice.
    ///
    /// The profiles are shared (with sinks, and with the daemon's retry should this fail), so a
    /// storage that only reads them avoids a copy; the default copies them for
    /// [`Storage::write`].
    async fn write_logged(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: Arc<[Profile]>,
    ) -> Result<(), StorageError> {
        let _ = seq;
        self.write(tenant, profiles.to_vec()).await
    }

    /// [`Storage::write_logged`] in the calling thread, which may block: offered by a storage
    /// whose writes are mostly CPU work (local I/O, or a buffer sent over the network now and
    /// then), so that the daemon's applier (a thread of its own) writes each record without
    /// handing it to a thread pool and back. `None` (the default): not offered, and the
    /// applier awaits [`Storage::write_logged`] instead.
    fn write_logged_blocking(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: &[Profile],
    ) -> Option<Result<(), StorageError>> {
        let _ = (seq, tenant, profiles);
        None
    }

    /// The last log record whose profiles are durable here, if this storage keeps track.
    fn logged_seq(&self) -> Option<u64> {
        None
    }

    /// Merges every profile of the selected series of `tenant` in the range into one tree.
    /// Values of average-aggregated types are returned summed, with the count in
    /// [`Merged::profiles`].
    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError>;

    /// Totals over time of the selected series of `tenant`, `step_ns` per point, optionally
    /// one timeline per value of the label `group_by` (absent → `""`).
    async fn select_timeline(
        &self,
        tenant: &Tenant,
        query: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Result<Vec<(String, Timeline)>, StorageError>;

    /// The series of `tenant` matching `selector` (all when `None`) with data in the range.
    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError>;

    /// Makes everything written so far durable.
    async fn flush(&self) -> Result<(), StorageError>;

    /// Deletes data older than the retention of each level, as of `now_ns` (every tenant).
    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError>;

    /// Deletes every series of `service_name` of `tenant`.
    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError>;

    /// Bytes held, per tenant, service and level. The default reports nothing
    /// ([`StorageUsage::supported`] false).
    async fn usage(&self) -> Result<StorageUsage, StorageError> {
        Ok(StorageUsage::default())
    }

    /// While [`StorageUsage::total_bytes`] exceeds `max_bytes`, deletes the oldest data of the
    /// finest level first, then of coarser ones, until it is at most `target_bytes` (below
    /// `max_bytes`, so one pass makes room for a while). The default deletes nothing.
    async fn enforce_size(
        &self,
        max_bytes: u64,
        target_bytes: u64,
    ) -> Result<RetentionReport, StorageError> {
        let _ = (max_bytes, target_bytes);
        Ok(RetentionReport::default())
    }
}

/// An exporter failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExportError(pub String);

/// Receives every batch of profiles a pipeline stores.
#[async_trait]
pub trait SinkExporter: Send + Sync {
    /// `profiles` are borrowed from the batches storage got: several pushes' worth, each
    /// holding only the profiles [`SinkExporter::wants`] accepted.
    async fn export(&self, profiles: &[&Profile]) -> Result<(), ExportError>;

    /// Whether this sink wants `profile` at all. The daemon queues for a sink only the
    /// profiles it wants, so a sink that reads one profile type does not pay for the others.
    fn wants(&self, profile: &Profile) -> bool {
        let _ = profile;
        true
    }

    /// Converts `profiles` (one push's, those the sink wants) into the sink's own form when
    /// they are queued, on the thread that stored them, while they are still in cache. The
    /// daemon then queues what this returns instead of the profiles, which it frees at once,
    /// and hands it to [`SinkExporter::export_prepared`] in the order it was prepared. `None`,
    /// the default: the profiles themselves are queued, for [`SinkExporter::export`].
    fn prepare(&self, profiles: &[&Profile]) -> Option<Prepared> {
        let _ = profiles;
        None
    }

    /// Exports what [`SinkExporter::prepare`] made, oldest first (several pushes' worth).
    /// Called only for a sink whose `prepare` gives something.
    async fn export_prepared(&self, batch: Vec<Prepared>) -> Result<(), ExportError> {
        let _ = batch;
        Err(ExportError("this sink prepares nothing to export".into()))
    }

    /// What [`SinkExporter::prepare`] made last never reaches `export_prepared` (the sink's
    /// queue was full): a sink whose prepared batches build on one another starts over.
    fn prepared_dropped(&self) {}
}

/// Profiles a sink converted into its own form ([`SinkExporter::prepare`]).
pub struct Prepared {
    /// How many profiles it holds, for the daemon's counts.
    pub profiles: usize,
    /// The sink's own form, which its [`SinkExporter::export_prepared`] downcasts.
    pub data: Box<dyn std::any::Any + Send + Sync>,
}

/// What a renderer knows about the tree it renders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenderContext {
    /// A title (`myapp.cpu`).
    pub title: String,
    pub profile_type: ProfileType,
    pub start_ns: i64,
    pub end_ns: i64,
    /// Node budget for visual formats; 0 means no limit.
    pub max_nodes: usize,
    pub sample_rate: u32,
    pub spy_name: String,
}

/// Bytes produced by a renderer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub content_type: String,
    /// File name extension for downloads (`svg`, `pb.gz`).
    pub extension: String,
    pub body: Bytes,
}

/// Turns a merged tree into a file format (`/render?format=NAME`).
#[async_trait]
pub trait RenderExporter: Send + Sync {
    async fn render(&self, tree: &Tree, ctx: &RenderContext) -> Result<Rendered, ExportError>;
}
