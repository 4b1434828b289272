//! What a 200 means: the push is on disk.
//!
//! Every push (`/ingest`, Connect, OTLP) goes the same way:
//!
//! 1. Refused with 507 while the disk is below `storage.min_free_disk_bytes` ([`DiskGuard`]),
//!    and with 503 + `Retry-After` while storage lags too far behind the log
//!    (`wal.max_unapplied_bytes` of decoded profiles in memory, `wal.max_unflushed_bytes` of
//!    log not checkpointed, `wal.max_unapplied_age`): backpressure instead of a backlog.
//! 2. Decoded and transformed, so bad input is refused before anything is kept.
//! 3. Appended to the write-ahead log; the call returns once an fsync covers it (concurrent
//!    pushes share fsyncs). Only then is it acknowledged.
//! 4. One applier task writes the profiles to storage in log order. Queries wait until it has
//!    caught up with every acknowledged push ([`ReadAfterAck`]).
//! 5. The flush loop makes storage durable, then checkpoints the log up to what it covered, so
//!    the log holds about one flush interval of pushes. A log that reaches half its bound asks
//!    for the next flush early ([`Durability::flush_wanted`]).
//!
//! At start-up, what the checkpoint does not cover is decoded again and written before the
//! daemon listens. Storage that records the last applied record atomically with its data
//! (sled) makes replay exactly-once; others may see a record twice if the daemon died between
//! their flush and the checkpoint.

pub mod record;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use kiln_plugin_api::{
    DecodeError, Merged, Profile, Query, RetentionReport, Selector, SeriesInfo, Storage,
    StorageError, StorageUsage, Tenant, Timeline,
};
use kiln_wal::{Wal, WalError};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

pub use record::Unit;

use crate::config::Config;
use crate::disk::{DiskFull, DiskGuard};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::server::Ingestion;

/// Profiles of one push bound for one pipeline.
pub struct Batch {
    pub pipeline: Arc<Pipeline>,
    pub profiles: Vec<Profile>,
}

/// Why a push's bodies could not be turned into profiles.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("format {0:?} has no decoder in this daemon")]
    UnknownDecoder(String),
    #[error("{decoder}: {source}")]
    Decode {
        decoder: String,
        #[source]
        source: DecodeError,
    },
    #[error("transform failed: {0}")]
    Transform(String),
}

/// Decodes, routes and transforms the bodies of one push. Blocking (decoders are synchronous).
pub fn decode_units(ingestion: &Ingestion, units: &[Unit]) -> Result<Vec<Batch>, UnitError> {
    let mut batches: Vec<Batch> = Vec::new();
    let mut add = |pipeline: Arc<Pipeline>, profile: Profile| match batches
        .iter_mut()
        .find(|b| Arc::ptr_eq(&b.pipeline, &pipeline))
    {
        Some(b) => b.profiles.push(profile),
        None => batches.push(Batch {
            pipeline,
            profiles: vec![profile],
        }),
    };
    for unit in units {
        let decoder = ingestion
            .decoders
            .get(&unit.decoder)
            .ok_or_else(|| UnitError::UnknownDecoder(unit.decoder.clone()))?;
        let profiles =
            decoder
                .decode(&unit.body, &unit.meta)
                .map_err(|source| UnitError::Decode {
                    decoder: unit.decoder.clone(),
                    source,
                })?;
        if unit.route_by_profile {
            for p in profiles {
                let pipeline = ingestion
                    .pipelines
                    .route(p.labels.service_name().unwrap_or(""), &p.labels);
                add(pipeline, p);
            }
        } else {
            let pipeline = ingestion.pipelines.route(&unit.meta.app, &unit.meta.labels);
            for p in profiles {
                add(pipeline.clone(), p);
            }
        }
    }
    for b in &mut batches {
        let profiles = std::mem::take(&mut b.profiles);
        b.profiles = b
            .pipeline
            .transform(profiles)
            .map_err(UnitError::Transform)?;
        for p in &b.profiles {
            p.validate()
                .map_err(|e| UnitError::Transform(format!("invalid profile: {e}")))?;
        }
    }
    Ok(batches)
}

/// Why a push was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// A per-tenant limit refused the push (nothing of it was kept).
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
    /// Storage lags the log by more than the configured bound: retry later.
    #[error("{why}; retry after {}s", retry_after.as_secs())]
    Behind { why: String, retry_after: Duration },
    /// Free disk is below `storage.min_free_disk_bytes`: nothing of the push was kept.
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
    #[error(transparent)]
    Log(#[from] WalError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("ingest task failed: {0}")]
    Task(String),
}

/// What a push stored.
pub struct Accepted {
    pub profiles: usize,
}

struct Applied {
    seq: u64,
    tenant: Tenant,
    /// Shared with the sinks, and kept for a retry while storage fails.
    profiles: Arc<[Profile]>,
    /// [`decoded_bytes`] of `profiles`.
    bytes: u64,
}

/// Estimated memory of a decoded profile: its strings, frames, stacks and labels.
fn decoded_bytes(p: &Profile) -> u64 {
    let frames: usize = p
        .frames
        .iter()
        .map(|f| f.function.len() + f.file.len() + 64)
        .sum();
    let samples: usize = p.samples.iter().map(|s| s.stack.len() * 4 + 40).sum();
    (frames + samples + p.labels.len() * 64 + 256) as u64
}

/// Logged pushes whose profiles storage has not yet made durable, oldest first.
#[derive(Default)]
struct Backlog {
    records: Mutex<VecDeque<(u64, u64, Instant)>>,
    bytes: AtomicU64,
    /// Estimated bytes of decoded profiles handed to the applier and not yet in storage: what
    /// the backlog holds in memory (a compressed push decodes to many times its size).
    queued: AtomicU64,
}

impl Backlog {
    /// Adds a logged record; returns the bytes now logged and not checkpointed.
    fn push(&self, seq: u64, bytes: u64) -> u64 {
        self.records.lock().push_back((seq, bytes, Instant::now()));
        self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// Drops what the checkpoint `seq` covers.
    fn checkpointed(&self, seq: u64) {
        let mut r = self.records.lock();
        while r.front().is_some_and(|&(s, _, _)| s <= seq) {
            let (_, bytes, _) = r.pop_front().expect("front exists");
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    fn oldest_age(&self) -> Duration {
        self.records
            .lock()
            .front()
            .map(|&(_, _, t)| t.elapsed())
            .unwrap_or_default()
    }
}

/// The write-ahead log, the applier feeding storage from it, and the backlog bound.
pub struct Durability {
    wal: Option<Arc<Wal>>,
    storage: Arc<dyn Storage>,
    applier: std::sync::mpsc::Sender<Applied>,
    /// Every logged record up to this one is in storage (not necessarily durable there).
    applied: watch::Receiver<u64>,
    backlog: Arc<Backlog>,
    max_unapplied_bytes: u64,
    max_unflushed_bytes: u64,
    /// `wal.compress`: LZ4 on bodies not compressed already.
    compress_log: bool,
    max_unapplied_age: Duration,
    retry_after: Duration,
    /// Notified when the log passes half of `max_unflushed_bytes`.
    flush_wanted: Arc<Notify>,
    metrics: Metrics,
    limits: Arc<crate::limits::Limits>,
    disk: Arc<DiskGuard>,
}

impl Durability {
    /// Opens the log, replays what its checkpoint does not cover into `storage` and starts the
    /// applier. Call from a blocking thread inside the runtime (replay waits on storage).
    pub fn start(
        config: &Config,
        storage: Arc<dyn Storage>,
        ingestion: &Ingestion,
        metrics: Metrics,
        limits: Arc<crate::limits::Limits>,
    ) -> anyhow::Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut disk_paths = vec![config.storage.path.clone()];
        if config.wal.enabled && !config.wal_dir().starts_with(&config.storage.path) {
            disk_paths.push(config.wal_dir());
        }
        let disk = Arc::new(DiskGuard::new(
            disk_paths,
            config.storage.min_free_disk_bytes,
        ));
        let wal = if config.wal.enabled {
            let dir = config.wal_dir();
            let (wal, recovery) = Wal::open(kiln_wal::WalConfig {
                dir: dir.clone(),
                segment_bytes: config.wal.segment_bytes,
                sync: true,
            })
            .with_context(|| format!("opening the write-ahead log in {}", dir.display()))?;
            if recovery.dropped_bytes > 0 {
                tracing::warn!(
                    bytes = recovery.dropped_bytes,
                    "write-ahead log: dropped a torn or damaged tail (pushes that were never acknowledged)"
                );
            }
            let wal = Arc::new(wal);
            // Storage may know later records than the log (its directory removed by hand).
            wal.advance_past(storage.logged_seq().unwrap_or(0));
            replay(
                &wal,
                recovery,
                storage.as_ref(),
                ingestion,
                config,
                &metrics,
            )?;
            Some(wal)
        } else {
            tracing::warn!("the write-ahead log is off (wal.enabled = false): a crash loses pushes acknowledged since the last flush");
            None
        };
        let start = wal.as_ref().map(|w| w.durable_seq()).unwrap_or(0);
        let (applied_tx, applied) = watch::channel(start);
        let backlog = Arc::new(Backlog::default());
        let applier = Applier {
            storage: storage.clone(),
            applied: applied_tx,
            backlog: backlog.clone(),
            metrics: metrics.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        std::thread::Builder::new()
            .name("kiln-applier".into())
            .spawn(move || applier.run(rx))
            .context("starting the applier thread")?;
        Ok(Arc::new(Self {
            wal,
            storage,
            applier: tx,
            applied,
            backlog,
            max_unapplied_bytes: config.wal.max_unapplied_bytes,
            max_unflushed_bytes: config.wal.max_unflushed_bytes,
            compress_log: config.wal.compress,
            flush_wanted: Arc::new(Notify::new()),
            max_unapplied_age: config.wal.max_unapplied_age,
            retry_after: config.server.flush_interval.max(Duration::from_secs(1)),
            metrics,
            limits,
            disk,
        }))
    }

    /// The free-disk floor pushes are checked against.
    pub fn disk(&self) -> &DiskGuard {
        &self.disk
    }

    /// Refuses new pushes while free disk is below the floor.
    fn check_disk(&self) -> Result<(), AcceptError> {
        let checked = self.disk.check();
        if let Some(free) = self.disk.last_free() {
            self.metrics.disk_free(free);
        }
        checked.map_err(|e| {
            self.metrics.storage_write_refused("min_free_disk_bytes");
            e.into()
        })
    }

    /// Refuses new pushes while storage is too far behind the log.
    pub fn check_backlog(&self) -> Result<(), AcceptError> {
        let bytes = self.backlog.bytes.load(Ordering::Relaxed);
        let queued = self.backlog.queued.load(Ordering::Relaxed);
        let why = if queued > self.max_unapplied_bytes {
            format!(
                "storage is {queued} bytes of decoded pushes behind (wal.max_unapplied_bytes = {})",
                self.max_unapplied_bytes
            )
        } else if bytes > self.max_unflushed_bytes {
            format!(
                "the write-ahead log holds {bytes} bytes not yet flushed to storage (wal.max_unflushed_bytes = {})",
                self.max_unflushed_bytes
            )
        } else {
            let age = self.backlog.oldest_age();
            if age <= self.max_unapplied_age {
                return Ok(());
            }
            format!(
                "storage is {:.1}s behind (wal.max_unapplied_age = {:?})",
                age.as_secs_f64(),
                self.max_unapplied_age
            )
        };
        Err(AcceptError::Behind {
            why,
            retry_after: self.retry_after,
        })
    }

    /// Decodes `units`, logs them with their tenant and hands their profiles to storage;
    /// returns once the push is durable. Sinks of each pipeline get the profiles too.
    pub async fn accept(
        self: &Arc<Self>,
        ingestion: Arc<Ingestion>,
        tenant: &Tenant,
        units: Vec<Unit>,
    ) -> Result<Accepted, AcceptError> {
        // Before anything is decoded or logged: a refused push leaves no trace.
        self.check_disk()?;
        self.check_backlog()?;
        self.limits.seed_series(tenant, self.storage.as_ref()).await;
        let this = self.clone();
        let logged_tenant = tenant.clone();
        // Runs to completion even if the client goes away: a logged record always reaches the
        // applier.
        let (for_sinks, unlogged, stored) = crate::alloc::spawn_blocking_released(move || {
            let mut batches = decode_units(&ingestion, &units)?;
            this.limits.admit_profiles(&logged_tenant, &mut batches)?;
            if !ingestion.rules.is_empty() {
                for p in batches.iter().flat_map(|b| &b.profiles) {
                    ingestion.rules.observe(p);
                }
            }
            // Each pipeline's share of the push, for its sinks.
            let mut sink_ranges = Vec::new();
            let mut profiles = Vec::new();
            for b in batches {
                let start = profiles.len();
                profiles.extend(b.profiles);
                if b.pipeline.has_sinks() {
                    sink_ranges.push((b.pipeline, start..profiles.len()));
                }
            }
            let stored = profiles.len();
            if this.wal.is_none() && sink_ranges.is_empty() {
                return Ok::<_, AcceptError>((Vec::new(), Some(profiles), stored));
            }
            // Storage and sinks read the same profiles: no copy per sink.
            let profiles: Arc<[Profile]> = profiles.into();
            let for_sinks: Vec<_> = sink_ranges
                .into_iter()
                .map(|(pipeline, range)| pipeline.select_for_sinks(&profiles, range))
                .collect();
            let Some(wal) = &this.wal else {
                return Ok((for_sinks, Some(profiles.to_vec()), stored));
            };
            let payload = record::encode(&logged_tenant, &units, this.compress_log);
            let bytes = payload.iter().map(|p| p.len() as u64).sum::<u64>();
            let decoded = profiles.iter().map(decoded_bytes).sum();
            let (applier, backlog) = (this.applier.clone(), this.backlog.clone());
            let (flush_wanted, flush_from) =
                (this.flush_wanted.clone(), this.max_unflushed_bytes / 2);
            wal.append_then(payload, move |seq| {
                if backlog.push(seq, bytes) > flush_from {
                    flush_wanted.notify_one();
                }
                backlog.queued.fetch_add(decoded, Ordering::Relaxed);
                let _ = applier.send(Applied {
                    seq,
                    tenant: logged_tenant,
                    profiles,
                    bytes: decoded,
                });
            })?;
            Ok((for_sinks, None, stored))
        })
        .await
        .map_err(|e| AcceptError::Task(e.to_string()))??;
        if let Some(profiles) = unlogged {
            self.storage.write(tenant, profiles).await?;
        }
        for copies in for_sinks {
            copies.deliver();
        }
        self.metrics
            .wal_backlog(self.backlog.bytes.load(Ordering::Relaxed));
        Ok(Accepted { profiles: stored })
    }

    /// Resolves when the log has passed half of `wal.max_unflushed_bytes` since the last such
    /// call: the flush loop should not wait for its interval. Under a load of large pushes (raw
    /// JFR recordings) one interval's log can exceed the bound while storage keeps up.
    pub async fn flush_wanted(&self) {
        self.flush_wanted.notified().await
    }

    /// Waits (at most `timeout`) until storage holds every acknowledged push.
    pub async fn caught_up(&self, timeout: Duration) -> bool {
        let Some(wal) = &self.wal else { return true };
        let target = wal.durable_seq();
        let mut rx = self.applied.clone();
        tokio::time::timeout(timeout, rx.wait_for(|&s| s >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The final flush of a clean shutdown: after it nothing is left to replay, and the log's
    /// segments are deleted.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.flush().await?;
        if let Some(wal) = self.wal.clone() {
            tokio::task::spawn_blocking(move || wal.close())
                .await
                .map_err(|e| StorageError::Io(e.to_string()))?
                .map_err(|e| StorageError::Io(e.to_string()))?;
        }
        Ok(())
    }

    /// Makes storage durable and checkpoints the log up to what that covered.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let covered = *self.applied.borrow();
        self.storage.flush().await?;
        if let Some(wal) = &self.wal {
            if covered > 0 {
                let wal = wal.clone();
                let done = tokio::task::spawn_blocking(move || wal.checkpoint(covered))
                    .await
                    .map_err(|e| StorageError::Io(e.to_string()))?;
                if let Err(e) = done {
                    tracing::error!(error = %e, "write-ahead log checkpoint failed");
                }
                self.backlog.checkpointed(covered);
            }
            let stats = wal.stats();
            self.metrics.wal_disk_bytes(stats.disk_bytes);
        }
        self.metrics
            .wal_backlog(self.backlog.bytes.load(Ordering::Relaxed));
        Ok(())
    }
}

/// Feeds storage from the log, in log order, on a thread of its own: a storage that writes in
/// the caller's thread ([`Storage::write_logged_blocking`]) gets each record without a hand-off
/// to a thread pool and back per push.
struct Applier {
    storage: Arc<dyn Storage>,
    applied: watch::Sender<u64>,
    backlog: Arc<Backlog>,
    metrics: Metrics,
    runtime: tokio::runtime::Handle,
}

impl Applier {
    /// Returns once every sender is gone (the daemon is stopping).
    fn run(self, rx: std::sync::mpsc::Receiver<Applied>) {
        while let Ok(Applied {
            seq,
            tenant,
            profiles,
            bytes,
        }) = rx.recv()
        {
            // The record is in the log: keep trying rather than lose it. While this fails the
            // backlog grows and pushes are refused with 503.
            let mut delay = Duration::from_millis(100);
            while let Err(e) = self.write(seq, &tenant, &profiles) {
                self.metrics.ingest_error("apply_failed");
                tracing::error!(error = %e, seq, "writing a logged push to storage failed; retrying");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            self.backlog.queued.fetch_sub(bytes, Ordering::Relaxed);
            self.applied.send_replace(seq);
        }
    }

    fn write(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: &Arc<[Profile]>,
    ) -> Result<(), StorageError> {
        match self.storage.write_logged_blocking(seq, tenant, profiles) {
            Some(done) => done,
            None => self
                .runtime
                .block_on(self.storage.write_logged(seq, tenant, profiles.clone())),
        }
    }
}

/// Writes the records the checkpoint does not cover into storage, checkpointing as it goes so
/// a crash during replay resumes where it stopped.
fn replay(
    wal: &Wal,
    recovery: kiln_wal::Recovery,
    storage: &dyn Storage,
    ingestion: &Ingestion,
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let max_body = config.server.max_decompressed_bytes;
    let after = recovery.checkpoint.max(storage.logged_seq().unwrap_or(0));
    if recovery.records == 0 {
        return Ok(());
    }
    let started = Instant::now();
    // Warnings: a replay means the daemon did not stop cleanly.
    tracing::warn!(
        records = recovery.records,
        bytes = recovery.bytes,
        after,
        "replaying the write-ahead log"
    );
    let rt = tokio::runtime::Handle::current();
    let (mut replayed, mut skipped, mut since_flush) = (0u64, 0u64, 0u64);
    let flush = |seq: u64| -> anyhow::Result<()> {
        rt.block_on(storage.flush())
            .context("flushing replayed pushes")?;
        wal.checkpoint(seq)?;
        Ok(())
    };
    let mut last = after;
    wal.replay(after, |seq, payload| -> anyhow::Result<()> {
        let profiles = record::decode(payload, max_body)
            .map_err(|e| anyhow::anyhow!(e))
            .and_then(|(tenant, units)| {
                let mut batches = decode_units(ingestion, &units)?;
                crate::limits::truncate(
                    &mut batches,
                    config.limits.for_tenant(tenant.as_str()).max_stack_depth,
                );
                Ok((tenant, batches))
            });
        match profiles {
            Ok((tenant, batches)) => {
                let profiles: Arc<[Profile]> =
                    batches.into_iter().flat_map(|b| b.profiles).collect();
                match rt.block_on(storage.write_logged(seq, &tenant, profiles)) {
                    Ok(()) => replayed += 1,
                    // Profiles storage refuses will be refused every time: skip, as below.
                    Err(StorageError::Invalid(why)) => {
                        skipped += 1;
                        metrics.ingest_error("replay_failed");
                        tracing::error!(seq, %why, "storage refused a logged push; skipped");
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("replaying log record {seq}"))
                    }
                }
            }
            Err(e) => {
                // Decoded once before it was acknowledged; a decoder plugin since removed is the
                // likely cause. Keep going: one record must not hold back the rest.
                skipped += 1;
                metrics.ingest_error("replay_failed");
                tracing::error!(seq, error = %format!("{e:#}"), "a logged push could not be decoded again; skipped");
            }
        }
        last = seq;
        since_flush += payload.len() as u64;
        // Checkpoint every segment's worth, so a crash during replay resumes near where it was.
        if since_flush >= config.wal.segment_bytes {
            flush(seq)?;
            since_flush = 0;
        }
        Ok(())
    })?;
    flush(last)?;
    tracing::warn!(
        replayed,
        skipped,
        seconds = started.elapsed().as_secs_f64(),
        "write-ahead log replayed"
    );
    Ok(())
}

/// Storage as the HTTP API sees it: reads wait until every acknowledged push is applied.
pub struct ReadAfterAck {
    pub durability: Arc<Durability>,
    pub timeout: Duration,
}

impl ReadAfterAck {
    fn inner(&self) -> &dyn Storage {
        self.durability.storage.as_ref()
    }

    async fn settle(&self) {
        if !self.durability.caught_up(self.timeout).await {
            tracing::warn!(
                "storage has not caught up with acknowledged pushes after {:?}; answering with what it holds",
                self.timeout
            );
        }
    }
}

#[async_trait]
impl Storage for ReadAfterAck {
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        self.inner().write(tenant, profiles).await
    }

    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError> {
        self.settle().await;
        self.inner().select_merge(tenant, query).await
    }

    async fn select_timeline(
        &self,
        tenant: &Tenant,
        query: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        self.settle().await;
        self.inner()
            .select_timeline(tenant, query, step_ns, group_by)
            .await
    }

    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        self.settle().await;
        self.inner()
            .series(tenant, selector, start_ns, end_ns)
            .await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.durability.flush().await
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError> {
        let report = self.inner().enforce_retention(now_ns).await?;
        if report.chunks_deleted > 0 {
            // Series whose data expired no longer count against limits.max_series.
            self.durability.limits.forget_all_series();
        }
        Ok(report)
    }

    async fn usage(&self) -> Result<StorageUsage, StorageError> {
        self.settle().await;
        self.inner().usage().await
    }

    async fn enforce_size(
        &self,
        max_bytes: u64,
        target_bytes: u64,
    ) -> Result<RetentionReport, StorageError> {
        let report = self.inner().enforce_size(max_bytes, target_bytes).await?;
        if report.chunks_deleted > 0 {
            self.durability.limits.forget_all_series();
        }
        Ok(report)
    }

    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError> {
        self.settle().await;
        let deleted = self.inner().delete_service(tenant, service_name).await?;
        // Durable before it is answered, and with the log checkpointed past the pushes it
        // removed: a replay after a crash must not bring them back.
        self.durability.flush().await?;
        // The deleted series no longer count against limits.max_series.
        self.durability.limits.forget_series(tenant);
        Ok(deleted)
    }
}
