//! # kiln-storage-clickhouse
//!
//! Kiln's storage on a ClickHouse server that several daemons share: every daemon writes into
//! and reads from the same database, so a profile pushed to one is visible from all of them
//! after its next flush.
//!
//! * Profiles become rows of five tables ([`schema`]): frames and stacks keyed by a hash of
//!   their content ([`ids`]), a series index, and one row per series and bucket of each time
//!   level holding the value of every stack in two arrays (summed by key on merge for the
//!   coarse levels; the finest level's rows, which rarely meet, in a table that keeps them).
//! * Writes are buffered ([`write`]) and sent per table in one RowBinary insert, when the
//!   buffer is big or old enough (by a sender thread, so writes go on meanwhile) and at every
//!   flush. Until ClickHouse accepts them they stay buffered (up to `max_buffered_rows`, past
//!   which a write waits for the send), and the daemon's write-ahead log keeps the pushes:
//!   nothing acknowledged is lost while the server is down.
//! * A merge is one aggregation in ClickHouse (the sum of each stack over the range), then the
//!   stacks are resolved into a tree here ([`read`]).
//! * Retention drops whole day partitions ([`admin`]).

mod admin;
mod client;
pub mod config;
mod error;
mod ids;
mod levels;
mod plan;
mod read;
mod rowbinary;
pub mod schema;
pub mod test_server;
mod write;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Weak};

use async_trait::async_trait;
use kiln_plugin_api::{
    Merged, Profile, Query, RetentionReport, Selector, SeriesInfo, Storage, StorageError,
    StorageUsage, Tenant, Timeline, UsageEntry,
};
use parking_lot::Mutex;

use client::Client;
pub use config::ClickHouseConfig;
pub use error::ClickHouseError;
pub use kiln_plugin_api::levels::LevelChoice;
use levels::LevelsError;
use rowbinary::RowWriter;
use write::{Buffer, Known, TABLES};

const NS: i64 = 1_000_000_000;

/// Why the storage could not open; the message names the `[storage.clickhouse]` key to fix.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("in [storage.clickhouse], key `{0}")]
    Config(String),
    #[error("in [storage], key `levels`: {0}")]
    Levels(String),
    #[error("in [storage.clickhouse], key `url`: {0}")]
    Unreachable(ClickHouseError),
    #[error("in [storage.clickhouse], keys `user` and `password`: {0}")]
    Credentials(ClickHouseError),
    #[error("{0}")]
    Schema(ClickHouseError),
    #[error("keeping this daemon's ClickHouse id: {0}")]
    State(String),
}

pub struct ClickHouseStorage {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// The database, as written into SQL (validated: letters, digits, `_`).
    db: String,
    config: ClickHouseConfig,
    /// `(resolution, retention)` in seconds, finest first.
    levels: Vec<(u64, u64)>,
    buffer: Mutex<Buffer>,
    known: Mutex<Known>,
    /// Rows of each table of [`TABLES`] taken from the buffer and not yet accepted, and the
    /// last write-ahead log record they hold. Lock order: `unsent`, then `buffer`, then `known`;
    /// never `unsent` while holding `buffer`.
    unsent: Mutex<([RowWriter; TABLES.len()], Option<u64>)>,
    /// Rows in `unsent`, readable while a send holds its lock.
    unsent_rows: AtomicUsize,
    /// Wakes the sender thread: a write that finds the buffer due hands the insert over rather
    /// than waiting for it, so the daemon keeps applying pushes while ClickHouse takes the last
    /// batch (an insert takes a good part of a second under load, and pushes applied behind it
    /// piled up in the daemon's decoded backlog until ingest answered 503).
    kick: SyncSender<()>,
    /// This daemon's name in the `delivered` table, when it has a state directory.
    daemon: Option<String>,
    /// The last write-ahead log record wholly in ClickHouse.
    delivered: AtomicU64,
}

impl ClickHouseStorage {
    /// Connects, creates or upgrades the schema, and refuses a schema newer than this Kiln's.
    /// `levels`: the configured `(resolution, retention)` in seconds, finest first, or the
    /// database's own ([`LevelChoice`]). `state_dir` keeps this daemon's id, under which
    /// ClickHouse records the last write-ahead log record it holds (so a restart replays only
    /// what it lacks); without it a crash may deliver a flush twice.
    pub fn open(
        config: &ClickHouseConfig,
        levels: impl Into<LevelChoice>,
        state_dir: Option<&Path>,
    ) -> Result<Self, OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let choice = levels.into();
        if matches!(&choice, LevelChoice::Configured(l) if l.is_empty()) {
            return Err(OpenError::Levels("at least one level is required".into()));
        }
        let client = Client::new(config).map_err(OpenError::Config)?;
        let found =
            schema::migrate(&client, &config.database, config.timeout).map_err(|e| match e {
                e @ ClickHouseError::Unreachable { .. } => OpenError::Unreachable(e),
                e @ ClickHouseError::Credentials { .. } => OpenError::Credentials(e),
                e => OpenError::Schema(e),
            })?;
        let levels =
            levels::resolve(&client, &config.database, &choice, found).map_err(|e| match e {
                LevelsError::ClickHouse(e) => OpenError::Schema(e),
                e => OpenError::Levels(e.to_string()),
            })?;
        let daemon = state_dir.map(daemon_id).transpose()?;
        let delivered = match &daemon {
            Some(id) => delivered_seq(&client, &config.database, id).map_err(OpenError::Schema)?,
            None => 0,
        };
        // One pending wake-up is enough: the send it starts takes whatever is buffered by then.
        let (kick, kicked) = sync_channel(1);
        let inner = Arc::new(Inner {
            client,
            db: config.database.clone(),
            config: config.clone(),
            levels,
            buffer: Mutex::new(Buffer::default()),
            known: Mutex::new(Known::new(config.known_max_age())),
            unsent: Mutex::new(Default::default()),
            unsent_rows: AtomicUsize::new(0),
            kick,
            daemon,
            delivered: AtomicU64::new(delivered),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("kiln-clickhouse-send".into())
            .spawn(move || run_sender(weak, kicked))
            .map_err(|e| OpenError::State(format!("starting the sender thread: {e}")))?;
        Ok(Self { inner })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::Io(format!("a storage task failed: {e}")))?
    }

    /// Bytes on disk per tenant, service and level (`10s`, `100s`, …, plus `index` for the
    /// series index and `dictionary` for frames and stacks), apportioned by rows.
    pub async fn usage_rows(&self) -> Result<Vec<(String, String, String, u64)>, StorageError> {
        self.blocking(|i| i.usage_rows()).await
    }

    /// Drops the oldest day partitions, finest level first, then coarser, until the database
    /// holds at most `max_bytes` on disk (or nothing is left to drop). Returns how many
    /// partitions were dropped.
    pub async fn enforce_max_bytes(&self, max_bytes: u64) -> Result<u64, StorageError> {
        self.blocking(move |i| i.enforce_max_bytes(max_bytes)).await
    }
}

impl Inner {
    fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.db)
    }

    fn write(
        &self,
        tenant: &Tenant,
        profiles: &[Profile],
        seq: Option<u64>,
    ) -> Result<(), StorageError> {
        // All or nothing: a bad profile must not leave half a batch behind.
        for p in profiles {
            p.validate().map_err(StorageError::Invalid)?;
        }
        if self.pending_rows() >= self.config.max_buffered_rows {
            // Full: this write waits for ClickHouse, or fails and is retried by the daemon.
            self.send()?;
        }
        let due = {
            let mut b = self.buffer.lock();
            b.add(&mut self.known.lock(), &self.levels, tenant, profiles);
            if seq.is_some() {
                b.seq = seq;
            }
            b.rows() >= self.config.batch_rows
                || b.since
                    .is_some_and(|t| t.elapsed() >= self.config.flush_interval)
        };
        if due {
            // Full: a wake-up is pending already, and its send takes these rows too.
            let _ = self.kick.try_send(());
        }
        Ok(())
    }

    fn pending_rows(&self) -> usize {
        self.buffer.lock().rows() + self.unsent_rows.load(Ordering::Relaxed)
    }

    /// Sends everything buffered, tables in dependency order; what fails stays queued.
    fn send(&self) -> Result<(), StorageError> {
        let mut guard = self.unsent.lock();
        let (unsent, seq) = &mut *guard;
        let taken = std::mem::take(&mut *self.buffer.lock());
        if taken.seq.is_some() {
            *seq = taken.seq;
        }
        for (queued, rows) in unsent.iter_mut().zip(taken.encode()) {
            queued.append(rows);
        }
        let queued = unsent.iter().map(|w| w.rows).sum();
        self.unsent_rows.store(queued, Ordering::Relaxed);
        for ((table, columns), rows) in TABLES.iter().zip(unsent.iter_mut()) {
            if rows.is_empty() {
                continue;
            }
            self.client
                .insert(&format!("{} {columns}", self.table(table)), &rows.bytes)?;
            self.unsent_rows.fetch_sub(rows.rows, Ordering::Relaxed);
            *rows = RowWriter::default();
        }
        if let (Some(daemon), Some(s)) = (&self.daemon, *seq) {
            let mut row = RowWriter::default();
            row.str(daemon).u64(s).end_row();
            self.client.insert(&self.table("delivered"), &row.bytes)?;
            self.delivered.store(s, Ordering::Relaxed);
            *seq = None;
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for ClickHouseStorage {
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        let t = tenant.clone();
        self.blocking(move |i| i.write(&t, &profiles, None)).await
    }

    async fn write_logged(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: Arc<[Profile]>,
    ) -> Result<(), StorageError> {
        let t = tenant.clone();
        self.blocking(move |i| i.write(&t, &profiles, Some(seq)))
            .await
    }

    /// On the daemon's applier thread: a write is mostly encoding rows into the buffer (it
    /// waits for ClickHouse only when the buffer is full, which the async path would wait for
    /// too). Handing each push to the blocking pool and back made the applier wait for a free
    /// core twice per push, and on a busy machine that wait, not the work, bounded ingest.
    fn write_logged_blocking(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: &[Profile],
    ) -> Option<Result<(), StorageError>> {
        Some(self.inner.write(tenant, profiles, Some(seq)))
    }

    fn logged_seq(&self) -> Option<u64> {
        self.inner
            .daemon
            .as_ref()
            .map(|_| self.inner.delivered.load(Ordering::Relaxed))
    }

    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError> {
        let (t, q) = (tenant.clone(), query.clone());
        self.blocking(move |i| {
            i.send()?;
            i.select_merge(&t, &q, now_s())
        })
        .await
    }

    async fn select_timeline(
        &self,
        tenant: &Tenant,
        query: &Query,
        step_ns: i64,
        group_by: Option<&str>,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        let (t, q) = (tenant.clone(), query.clone());
        let g = group_by.map(String::from);
        self.blocking(move |i| {
            i.send()?;
            i.select_timeline(&t, &q, step_ns, g.as_deref(), now_s())
        })
        .await
    }

    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        let (t, s) = (tenant.clone(), selector.cloned());
        self.blocking(move |i| {
            i.send()?;
            let mut found: Vec<SeriesInfo> = i
                .matching_series(&t, s.as_ref(), start_ns, end_ns)?
                .into_iter()
                .map(|m| m.info)
                .collect();
            found.sort_by_cached_key(|s| (s.labels.to_string(), s.profile_type.id()));
            Ok(found)
        })
        .await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.blocking(|i| i.send()).await
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError> {
        self.blocking(move |i| i.enforce_retention(now_ns.div_euclid(NS)))
            .await
    }

    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError> {
        let (t, s) = (tenant.clone(), service_name.to_string());
        self.blocking(move |i| {
            i.send()?;
            i.delete_service(&t, &s)
        })
        .await
    }

    /// Bytes per tenant, service and level: ClickHouse's compressed bytes of each table's
    /// parts, shared out by row counts (levels `index` and `dictionary` are the series, frames
    /// and stacks tables). `disk_bytes` is every part of the database.
    async fn usage(&self) -> Result<StorageUsage, StorageError> {
        let rows = self.usage_rows().await?;
        let disk = self.blocking(|i| i.database_bytes()).await?;
        let entries: Vec<UsageEntry> = rows
            .into_iter()
            .map(|(tenant, service, level, bytes)| UsageEntry {
                tenant,
                service,
                level,
                bytes,
                chunks: 0,
            })
            .collect();
        Ok(StorageUsage {
            supported: true,
            total_bytes: entries.iter().map(|e| e.bytes).sum(),
            disk_bytes: Some(disk),
            entries,
        })
    }

    /// Drops whole day partitions, oldest of the finest level first, while the database holds
    /// more than `target_bytes`; `max_bytes` only decides whether to start.
    async fn enforce_size(
        &self,
        max_bytes: u64,
        target_bytes: u64,
    ) -> Result<RetentionReport, StorageError> {
        if self.blocking(|i| i.database_bytes()).await? <= max_bytes {
            return Ok(RetentionReport::default());
        }
        let dropped = self.enforce_max_bytes(target_bytes).await?;
        Ok(RetentionReport {
            chunks_deleted: dropped,
        })
    }
}

/// Sends the buffer each time a write finds it due, until the storage is dropped. A failed send
/// keeps its rows queued for the next one (or the daemon's flush, which reports the error).
fn run_sender(inner: Weak<Inner>, kicked: Receiver<()>) {
    while kicked.recv().is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.send() {
            tracing::warn!(error = %e, "sending buffered rows to ClickHouse failed");
        }
    }
}

/// This daemon's id, kept in `state_dir` (created on first use).
fn daemon_id(state_dir: &Path) -> Result<String, OpenError> {
    let path = state_dir.join("clickhouse-daemon-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_string());
        }
    }
    let seed = format!(
        "{:?} {} {}",
        std::time::SystemTime::now(),
        std::process::id(),
        state_dir.display()
    );
    let id = blake3::hash(seed.as_bytes()).to_hex()[..32].to_string();
    std::fs::create_dir_all(state_dir)
        .and_then(|()| std::fs::write(&path, &id))
        .map_err(|e| OpenError::State(format!("{}: {e}", path.display())))?;
    Ok(id)
}

/// The last write-ahead log record of `daemon` that ClickHouse holds (0: none).
fn delivered_seq(client: &Client, db: &str, daemon: &str) -> Result<u64, ClickHouseError> {
    let rows = client.query(&format!(
        "SELECT max(seq) FROM {db}.delivered WHERE daemon = {} FORMAT RowBinary",
        client::quote(daemon)
    ))?;
    let mut r = rowbinary::RowReader::new(&rows);
    if r.at_end() {
        return Ok(0);
    }
    r.u64()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
