//! # kiln-storage-sled
//!
//! Kiln's embedded storage, on [sled].
//!
//! * Per service, frames are interned and stacks live in a parent-pointer tree: a stack id is a
//!   node id, so a sample is just `(stack id, value)` and symbols are touched once per distinct
//!   stack, not per sample. Dictionaries are on disk in blocks ([`blocks`]); memory holds the
//!   blocks last used ([`pages`]) and bounded maps to intern new entries ([`lookup`]).
//! * Per series and time bucket, one chunk holds a sorted column of `(stack id, value)`
//!   ([`column`]). Every profile is added to a bucket of each level (10 s, 1000 s, 100 000 s by
//!   default; the resolutions are recorded, see [`kiln_plugin_api::levels`]), so a long range
//!   reads a few coarse chunks. Nothing is truncated on write.
//! * Writes accumulate in memory and are applied to sled in one pass per flush interval (and
//!   before every query, so a query sees every accepted profile); a crash loses at most what was
//!   accepted since the last flush.
//! * Retention is by age, per level, and by size ([`usage`]): past a byte bound, the oldest
//!   buckets of the finest level go first, then of coarser ones.
//! * Every series and dictionary belongs to a [`Tenant`]. The default tenant (`anonymous`)
//!   keeps the layout of data directories written before tenants existed; the dictionaries of
//!   other tenants' services are named `tenant NUL service` in their own tree, and their series
//!   records carry the tenant. Chunks are keyed by series id, which is unique across tenants,
//!   so retention (by key age) is per tenant without knowing tenants.

mod blocks;
mod chunk_store;
mod codec;
mod column;
mod dict;
mod error;
mod lookup;
mod merge;
mod pages;
mod series_index;
mod siblings;
mod usage;
mod zdict;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kiln_plugin_api::levels::{self, LevelChoice};
use kiln_plugin_api::{
    Aggregation, Labels, Merged, Profile, ProfileType, Query, RetentionReport, Selector,
    SeriesInfo, Storage, StorageError, StorageUsage, Tenant, Timeline, Tree,
};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use chunk_store::{ChunkBatch, ChunkStore, LOG_SEQ_KEY};
use codec::Codec;
pub use column::{Column, Ratio, Stored};
use dict::{Disk, Kind, ServiceDict};
use error::io;
use series_index::{SeriesIdentity, SeriesIndex};

const NS: i64 = 1_000_000_000;

/// One time level: buckets of `resolution`, kept for `retention`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    #[serde(with = "humantime_serde")]
    pub resolution: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Configuration of the sled storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SledConfig {
    /// Directory of the database.
    pub path: PathBuf,
    /// Time levels, finest first; each resolution a multiple of the previous one. Empty: the
    /// directory's own (recorded when it was created), or [`default_levels`] for a new one.
    /// Given, they must have the resolutions the directory was written with.
    #[serde(default)]
    pub levels: Vec<Level>,
    /// Caps the retention of every level when `levels` is empty (`storage.retention`).
    #[serde(default = "default_max_retention", with = "humantime_serde")]
    pub max_retention: Duration,
    /// Caches, bytes: half for sled's page cache, half for the finest level's blocks
    /// ([`chunk_store`]).
    #[serde(default = "default_cache")]
    pub cache_capacity_bytes: u64,
    /// Memory one merge query may use for the tree it builds. Past it, the stacks with the
    /// smallest totals are folded into `other` and the answer says how many
    /// ([`Merged::pruned_nodes`]).
    #[serde(default = "default_query_budget")]
    pub query_budget_bytes: u64,
    /// Memory for services' frame and stack dictionaries: blocks of entries read back from
    /// disk, and the maps that intern new entries. Past it, after each apply and query, the
    /// least recently used blocks wholly on disk leave memory, then the older generation of
    /// the least recently used maps ([`lookup`]). Entries not yet on disk stay.
    #[serde(default = "default_dictionary_cache")]
    pub dictionary_cache_bytes: u64,
    /// Memory for values written since the last apply to sled (the write buffer, estimated),
    /// and for dictionary entries new since then, including a buffer being applied.
    /// Past three quarters of it, an apply starts on a thread of its own and writers go on; a
    /// writer that reaches it while that apply still runs applies the buffer itself before
    /// returning, so writers slow down (and the daemon's backlog refuses pushes) instead of the
    /// buffer growing: timestamps spread over a day put each profile in buckets of its own.
    #[serde(default = "default_write_buffer")]
    pub write_buffer_bytes: u64,
    /// How a new data directory compresses (an existing one keeps what it was created with).
    #[serde(default)]
    pub compression: Compression,
}

/// Compression of a new data directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Each value, by Kiln, with reused contexts: less CPU, restarts that do not depend on how
    /// much was written, about twice the disk of `sled` on dense data.
    #[default]
    Values,
    /// sled's pages: about half the disk, a zstd context created per page written and per log
    /// message read back at start-up.
    Sled,
}

fn default_dictionary_cache() -> u64 {
    64 << 20
}

fn default_write_buffer() -> u64 {
    64 << 20
}

/// The part of `write_buffer_bytes` past which an apply starts between flushes. Every apply
/// reads, merges and rewrites the coarse chunks the buffer touches (a day's chunk of each series
/// at every apply), so starting earlier costs CPU; the quarter left is for writes that arrive
/// while it runs.
const APPLY_SOON_AT: (usize, usize) = (3, 4);

/// Estimated bytes of one buffered chunk (its key, its `Pending`, the map's slot) and of one
/// value in it (a hash map entry at its load factor).
const PENDING_BYTES: usize = 96;
const PENDING_VALUE_BYTES: usize = 24;

/// How often sled's background thread runs. Kiln makes data durable itself (`flush`); the
/// thread matters for its other job, moving live pages out of half-empty log segments so they
/// can be reused. Without it that happens only as pages are replaced, and the file held 4.75× the
/// live data after the side-by-side load; at 50 ms, 1.97× (at 20 ms, 1.8×). The price is the
/// idle daemon's CPU: 0.4 % of a core instead of 0.1 % (0.7 % at 20 ms).
const SLED_GC_EVERY_MS: u64 = 50;

fn default_cache() -> u64 {
    64 << 20
}

fn default_query_budget() -> u64 {
    64 << 20
}

/// sled holds dictionaries, series and coarse chunks, the finest level is beside it
/// ([`ChunkStore`]): sled's page cache gets this fraction (1/2) of `cache_capacity_bytes`, the
/// finest level's block cache the rest.
const SLED_CACHE_SHARE: u64 = 2;

/// What one node of a merged tree costs while it is built and answered: the node, its line, its
/// share of names, its places in the maps that build it, and its share of the answer's
/// encoding. Measured at 100–230 B (names shared, names all distinct) with a million nodes.
const MERGED_NODE_BYTES: u64 = 128;
/// Dictionary blocks a query may hold while it builds a tree, at least: below it, the query
/// would read the same blocks over and over.
const MIN_QUERY_PAGE_BYTES: usize = 8 << 20;
/// Each service's tree keeps at least this many nodes, however little budget is left.
const MIN_NODES_PER_TREE: usize = 1024;

/// The levels of a new data directory ([`kiln_plugin_api::levels::default_levels`]): 10 s for 3
/// days, 1000 s for 30 days, 100 000 s for a year.
pub fn default_levels() -> Vec<Level> {
    levels::default_levels()
        .into_iter()
        .map(|(r, k)| Level {
            resolution: Duration::from_secs(r),
            retention: Duration::from_secs(k),
        })
        .collect()
}

fn default_max_retention() -> Duration {
    Duration::from_secs(365 * 86_400)
}

impl SledConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            levels: Vec::new(),
            max_retention: default_max_retention(),
            cache_capacity_bytes: default_cache(),
            query_budget_bytes: default_query_budget(),
            dictionary_cache_bytes: default_dictionary_cache(),
            write_buffer_bytes: default_write_buffer(),
            compression: Compression::default(),
        }
    }

    /// The levels asked for: those given, in seconds, or (none given) the store's own.
    pub fn level_choice(&self) -> LevelChoice {
        if self.levels.is_empty() {
            return LevelChoice::Default {
                max_retention: self.max_retention.as_secs(),
            };
        }
        LevelChoice::Configured(
            self.levels
                .iter()
                .map(|l| (l.resolution.as_secs(), l.retention.as_secs()))
                .collect(),
        )
    }

    /// Checks the levels given: whole seconds, each resolution a multiple of the previous.
    pub fn validate(&self) -> Result<(), String> {
        for (i, l) in self.levels.iter().enumerate() {
            if l.resolution.as_secs() == 0 || l.resolution.subsec_nanos() != 0 {
                return Err(format!(
                    "levels[{i}].resolution must be a whole number of seconds ≥ 1s"
                ));
            }
            if l.retention < l.resolution {
                return Err(format!(
                    "levels[{i}].retention is shorter than its resolution"
                ));
            }
            if i > 0 && l.resolution.as_secs() % self.levels[i - 1].resolution.as_secs() != 0 {
                return Err(format!(
                    "levels[{i}].resolution must be a multiple of levels[{}].resolution",
                    i - 1
                ));
            }
        }
        Ok(())
    }
}

/// A series as the storage keeps it in memory. Stored as [`StoredSeries`] (the same JSON as
/// before); the profile type is shared by every series of that type (see [`State::intern`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "StoredSeries", into = "StoredSeries")]
struct SeriesRecord {
    tenant: Tenant,
    labels: Labels,
    profile_type: Arc<ProfileType>,
    spy_name: String,
    sample_rate: u32,
    service: String,
    /// The id of the service's dictionary ([`ServiceDict`]), which also names its compression
    /// dictionary ([`zdict`]); [`NO_SERVICE`] until known. Not stored: found by name on load.
    service_id: u32,
    /// Where the series has data, widened to whole [`BOUNDS_NS`]: a prefilter for queries. The
    /// record is rewritten when a profile lands outside, so rounding makes that hourly for a
    /// live series rather than at every flush.
    first_ns: i64,
    last_ns: i64,
}

/// A series record on disk.
#[derive(Serialize, Deserialize)]
struct StoredSeries {
    /// Absent (the default tenant) in records written before tenants, and kept absent for it.
    #[serde(default, skip_serializing_if = "Tenant::is_default")]
    tenant: Tenant,
    info: SeriesInfo,
    service: String,
    first_ns: i64,
    last_ns: i64,
}

impl From<StoredSeries> for SeriesRecord {
    fn from(s: StoredSeries) -> Self {
        Self {
            tenant: s.tenant,
            labels: s.info.labels,
            profile_type: Arc::new(s.info.profile_type),
            spy_name: s.info.spy_name,
            sample_rate: s.info.sample_rate,
            service: s.service,
            service_id: NO_SERVICE,
            first_ns: s.first_ns,
            last_ns: s.last_ns,
        }
    }
}

/// [`SeriesRecord::service_id`] not known.
const NO_SERVICE: u32 = u32::MAX;

impl From<SeriesRecord> for StoredSeries {
    fn from(r: SeriesRecord) -> Self {
        let info = r.info();
        Self {
            tenant: r.tenant,
            info,
            service: r.service,
            first_ns: r.first_ns,
            last_ns: r.last_ns,
        }
    }
}

impl SeriesRecord {
    fn info(&self) -> SeriesInfo {
        SeriesInfo {
            labels: self.labels.clone(),
            profile_type: ProfileType::clone(&self.profile_type),
            spy_name: self.spy_name.clone(),
            sample_rate: self.sample_rate,
        }
    }
}

const BOUNDS_NS: i64 = 3600 * NS;

impl SeriesIdentity for SeriesRecord {
    fn identity(&self) -> (&Tenant, &Labels, &ProfileType) {
        (&self.tenant, &self.labels, &self.profile_type)
    }
}

impl SeriesRecord {
    /// Widens the bounds to cover `t_ns`; true if they changed.
    fn cover(&mut self, t_ns: i64) -> bool {
        if t_ns >= self.first_ns && t_ns < self.last_ns {
            return false;
        }
        let from = t_ns.div_euclid(BOUNDS_NS) * BOUNDS_NS;
        self.first_ns = self.first_ns.min(from);
        self.last_ns = self.last_ns.max(from + BOUNDS_NS);
        true
    }
}

/// Values accumulated for one chunk since the last flush.
#[derive(Default)]
struct Pending {
    profiles: u64,
    values: FxHashMap<u32, i64>,
    /// The finest-level bucket every profile here fell into; `None` once they span several.
    finest: Option<u64>,
}

impl Pending {
    fn add_profile(&mut self, finest_bucket: u64) {
        self.finest = match self.profiles {
            0 => Some(finest_bucket),
            _ => self.finest.filter(|&b| b == finest_bucket),
        };
        self.profiles += 1;
    }
}

#[derive(Default)]
struct State {
    services: FxHashMap<(Tenant, String), ServiceDict>,
    series: Vec<SeriesRecord>,
    series_ids: SeriesIndex,
    /// Series whose chunks may refer to each other's ([`Stored::ScaledSibling`]).
    siblings: siblings::SiblingGroups,
    /// Every profile type a series has, once: a few types across thousands of series.
    profile_types: Vec<Arc<ProfileType>>,
    buffer: FxHashMap<(u32, u8, u64), Pending>,
    /// Estimated bytes of `buffer` ([`PENDING_BYTES`], [`PENDING_VALUE_BYTES`]).
    buffer_bytes: usize,
    /// Estimated bytes of the buffer an apply took and has not finished writing: still in
    /// memory, so still counted against [`Inner::write_buffer_limit`].
    applying_bytes: usize,
    dirty_series: FxHashSet<u32>,
    /// The last write-ahead log record in `buffer`.
    buffered_log_seq: Option<u64>,
    /// Dictionaries were loaded from the one-key-per-entry layout: rewrite them as blocks.
    migrate_legacy: bool,
    /// Counts dictionary uses, for least-recently-used eviction.
    uses: u64,
    /// Resident dictionary bytes last reported to [`dictionary_stats`].
    reported_resident: usize,
}

impl State {
    /// The shared copy of `profile_type`.
    fn intern(&mut self, profile_type: &ProfileType) -> Arc<ProfileType> {
        if let Some(t) = self.profile_types.iter().find(|t| ***t == *profile_type) {
            return t.clone();
        }
        let t = Arc::new(profile_type.clone());
        self.profile_types.push(t.clone());
        t
    }
}

struct Inner {
    db: sled::Db,
    series_tree: sled::Tree,
    /// Services of the default tenant: name → dictionary id.
    services_tree: sled::Tree,
    /// Services of other tenants: `tenant NUL name` → dictionary id.
    tenant_services: sled::Tree,
    /// Dictionaries in blocks ([`blocks`]).
    frame_blocks: sled::Tree,
    node_blocks: sled::Tree,
    /// Dictionaries of data directories written before blocks: one key per entry; moved into
    /// blocks when opened.
    legacy_frames: sled::Tree,
    legacy_nodes: sled::Tree,
    /// Every series' chunks, beside sled ([`chunk_store`]).
    chunks: ChunkStore,
    /// Compression dictionaries of the services' chunks ([`zdict`]).
    dicts: zdict::Dictionaries,
    /// How values are stored ([`codec`]): packed here, or as they are where sled compresses.
    codec: Codec,
    /// `(resolution, retention)` in seconds, finest first.
    levels: Vec<(u64, u64)>,
    /// Nodes one merged tree may have ([`SledConfig::query_budget_bytes`]).
    query_max_nodes: usize,
    /// Bytes of dictionaries kept resident ([`SledConfig::dictionary_cache_bytes`]).
    dictionary_budget: usize,
    /// [`SledConfig::write_buffer_bytes`].
    write_buffer_limit: usize,
    state: Mutex<State>,
    /// Serializes applying the write buffer to sled.
    apply_lock: Mutex<()>,
    /// This storage, for the thread that applies a buffer near its bound ([`Inner::apply_soon`]).
    me: Weak<Inner>,
    /// A thread started by [`Inner::apply_soon`] has not finished yet.
    applying_in_background: AtomicBool,
    /// Why an apply failed, if one did. The buffer it took is gone from memory and only the
    /// write-ahead log still has it: from then on writes and flushes fail, so the log is never
    /// checkpointed past it and the next start replays it.
    apply_failure: Mutex<Option<String>>,
    /// Per level, where retention by size stopped: every bucket of the level before it was
    /// deleted, so queries read those times from coarser levels ([`usage`]). Kept in
    /// `size_floors_tree`, level → seconds.
    size_floors: Vec<AtomicI64>,
    size_floors_tree: sled::Tree,
    /// Bytes and chunks per series and level, kept up to date by every change to `chunks` once
    /// the first [`Storage::usage`] built it ([`usage`]).
    accounting: Mutex<Option<usage::Accounting>>,
    /// Bytes (keys and values) of the dictionary blocks, kept up to date by every apply once the
    /// first [`Storage::usage`] scanned them: scanning them again at every retention pass pulled
    /// every block of a large dictionary through sled's page cache.
    dictionary_block_bytes: Mutex<Option<u64>>,
    /// The last write-ahead log record applied to every level (each store of `chunks` keeps its
    /// own, in the same atomic batch as the chunks it produced).
    applied_log_seq: AtomicU64,
    /// The last log record each store held when opened: a record replayed after a crash
    /// between the two batches of an apply goes only to the levels that lack it.
    applied_at_open: chunk_store::Applied,
    /// When [`Inner::release_idle_dictionaries`] looks next (unix seconds).
    next_idle_check_s: AtomicI64,
}

/// A dictionary not used for this long keeps only what is not on disk yet: what a burst read
/// in goes back to the operating system instead of staying until the budget pushes it out.
const RELEASE_IDLE_AFTER_S: i64 = 30;

static DICTIONARY_RESIDENT: AtomicU64 = AtomicU64::new(0);
pub(crate) static DICTIONARY_LOADS: AtomicU64 = AtomicU64::new(0);
pub(crate) static DICTIONARY_EVICTIONS: AtomicU64 = AtomicU64::new(0);
static WRITE_BUFFER_BYTES: AtomicU64 = AtomicU64::new(0);
static EARLY_APPLIES: AtomicU64 = AtomicU64::new(0);
static BACKGROUND_APPLIES: AtomicU64 = AtomicU64::new(0);

/// The process's sled write buffers: for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBufferStats {
    /// Estimated bytes buffered since the last apply, all storages of the process.
    pub bytes: u64,
    /// Applies a write made itself because the buffer, with the one being applied, reached
    /// `write_buffer_bytes`: the writer waited.
    pub early_applies: u64,
    /// Applies started on a thread of their own because the buffer passed
    /// [`APPLY_SOON_AT`] of `write_buffer_bytes`.
    pub background_applies: u64,
}

pub fn write_buffer_stats() -> WriteBufferStats {
    WriteBufferStats {
        bytes: WRITE_BUFFER_BYTES.load(Ordering::Relaxed),
        early_applies: EARLY_APPLIES.load(Ordering::Relaxed),
        background_applies: BACKGROUND_APPLIES.load(Ordering::Relaxed),
    }
}

/// The process's sled dictionaries: for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DictionaryStats {
    /// Bytes of dictionaries in memory (estimated).
    pub resident_bytes: u64,
    /// Dictionaries read back from disk.
    pub loads: u64,
    /// Dictionaries dropped from memory for the budget.
    pub evictions: u64,
    /// Memory of compression dictionaries ([`zdict`]): samples and prepared dictionaries.
    pub compression_bytes: u64,
}

pub fn dictionary_stats() -> DictionaryStats {
    DictionaryStats {
        resident_bytes: DICTIONARY_RESIDENT.load(Ordering::Relaxed),
        loads: DICTIONARY_LOADS.load(Ordering::Relaxed),
        evictions: DICTIONARY_EVICTIONS.load(Ordering::Relaxed),
        compression_bytes: zdict::MEMORY.load(Ordering::Relaxed),
    }
}

/// Moves a process-wide gauge summed over storages by what this one changed since it last
/// reported `reported`.
fn report_gauge(gauge: &AtomicU64, reported: &mut usize, now: usize) {
    gauge.fetch_add(now as u64, Ordering::Relaxed);
    gauge.fetch_sub(*reported as u64, Ordering::Relaxed);
    *reported = now;
}

/// Moves the process-wide resident figure by what changed since `reported`.
fn report_resident(reported: &mut usize, now: usize) {
    report_gauge(&DICTIONARY_RESIDENT, reported, now);
}

impl Drop for Inner {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        report_resident(&mut st.reported_resident, 0);
        WRITE_BUFFER_BYTES.fetch_sub(st.buffer_bytes as u64, Ordering::Relaxed);
    }
}

/// Where the `settings` tree keeps the levels' resolutions ([`levels::resolutions`]).
const RESOLUTIONS_KEY: &[u8] = b"resolutions";

/// The sled storage backend. Cheap to clone.
#[derive(Clone)]
pub struct SledStorage {
    inner: Arc<Inner>,
}

/// The bucket (seconds) of a chunk key.
fn bucket_of(key: &[u8]) -> Result<u64, StorageError> {
    usage::parse_key(key)
        .map(|(_, _, bucket)| bucket)
        .ok_or_else(|| StorageError::Corrupt("chunk key is not 13 bytes".into()))
}

fn chunk_key(series: u32, level: u8, bucket_s: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(&series.to_be_bytes());
    k[4] = level;
    k[5..].copy_from_slice(&bucket_s.to_be_bytes());
    k
}

/// A chunk's column as an apply will store it.
struct NewColumn {
    series: u32,
    level: u8,
    bucket: u64,
    /// The length of the value it replaces, if any.
    old_len: Option<usize>,
    column: Column,
}

/// For each of `columns`, the sibling series whose column, in the same batch at the same level
/// and bucket, it is a multiple of, and by how much: it is then stored as a reference. The base
/// of a pair is the one with the larger values (CPU time rather than samples, bytes rather than
/// objects), which queries ask for most and then read directly. A base is never a reference.
fn sibling_bases(
    columns: &[NewColumn],
    sibling_of: &FxHashMap<u32, (u32, Arc<[u32]>)>,
) -> Vec<Option<(u32, Ratio)>> {
    let mut bases = vec![None; columns.len()];
    let mut slots: FxHashMap<(u8, u64, u32), Vec<usize>> = FxHashMap::default();
    for (i, c) in columns.iter().enumerate() {
        if let Some(&(group, _)) = sibling_of.get(&c.series) {
            slots.entry((c.level, c.bucket, group)).or_default().push(i);
        }
    }
    for (_, mut slot) in slots {
        if slot.len() < 2 {
            continue;
        }
        slot.sort_by_key(|&i| {
            let c = &columns[i];
            let first = c.column.entries.first().map_or(0, |e| e.1.unsigned_abs());
            (std::cmp::Reverse(first), c.series)
        });
        let mut kept: Vec<usize> = Vec::new();
        for i in slot {
            let found = kept.iter().find_map(|&b| {
                let ratio = columns[i].column.ratio_to(&columns[b].column)?;
                Some((columns[b].series, ratio))
            });
            match found {
                Some(base) => bases[i] = Some(base),
                None => kept.push(i),
            }
        }
    }
    bases
}

/// The id entry `i` of `block` must have: the next one the dictionary expects.
fn check_dense(expected: usize, block: u32, i: usize) -> Result<u32, StorageError> {
    let id = block as usize * blocks::BLOCK + i;
    if id != expected {
        return Err(StorageError::Corrupt(format!(
            "dictionary block {block} starts at entry {id}, expected {expected}"
        )));
    }
    Ok(id as u32)
}

fn load_frame_block(dict: &mut ServiceDict, block: u32, bytes: &[u8]) -> Result<(), StorageError> {
    for (i, frame) in blocks::decode_frames(bytes)?.into_iter().enumerate() {
        dict.load_frame(check_dense(dict.frame_count(), block, i)?, frame)?;
    }
    Ok(())
}

fn load_node_block(dict: &mut ServiceDict, block: u32, bytes: &[u8]) -> Result<(), StorageError> {
    let first = block as usize * blocks::BLOCK;
    for (i, (parent, frame)) in blocks::decode_nodes(first, bytes)?.into_iter().enumerate() {
        if first + i == 0 {
            continue; // the root, which every dictionary starts with
        }
        dict.load_node(check_dense(dict.node_count(), block, i)?, parent, frame)?;
    }
    Ok(())
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, StorageError> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| StorageError::Corrupt(format!("short key or value ({} bytes)", b.len())))
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl SledStorage {
    /// Opens (or creates) the database and loads its dictionaries and series.
    pub fn open(config: &SledConfig) -> Result<Self, StorageError> {
        config.validate().map_err(StorageError::Invalid)?;
        let codec = Codec::of_directory(
            &config.path,
            match config.compression {
                Compression::Values => Codec::Packed,
                Compression::Sled => Codec::SledCompressed,
            },
        );
        let mut sled_config = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes / SLED_CACHE_SHARE)
            .flush_every_ms(Some(SLED_GC_EVERY_MS))
            .use_compression(codec.sled_compression());
        if codec.sled_compression() {
            sled_config = sled_config.compression_factor(3);
        }
        let db = sled_config
            .open()
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", config.path.display())))?;
        let level_seconds = Self::resolve_levels(&db, config)?;
        let tree = |name: &str| db.open_tree(name).map_err(io);
        let dicts = zdict::Dictionaries::open(
            tree("codec_dicts")?,
            // Each prepared dictionary is ~250 KB: a few dozen services' at most.
            (config.dictionary_cache_bytes as usize / 4).max(4 << 20),
        )?;
        let (series_tree, services_tree, tenant_services) =
            (tree("series")?, tree("services")?, tree("tenant_services")?);
        let (frame_blocks, node_blocks, legacy_frames, legacy_nodes) = (
            tree("frame_blocks")?,
            tree("node_blocks")?,
            tree("frames")?,
            tree("nodes")?,
        );
        let chunks = ChunkStore::open(
            &config.path,
            tree("chunks")?,
            config.cache_capacity_bytes - config.cache_capacity_bytes / SLED_CACHE_SHARE,
            codec.sled_compression(),
        )?;
        let moved = chunks.move_finest_out_of_sled(&db)?;
        if moved > 0 {
            tracing::info!(chunks = moved, "moved the finest level out of sled");
        }
        let size_floors_tree = tree("size_floors")?;
        let applied_at_open = chunks.applied(|v| {
            codec
                .unpack(v)?
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("log sequence is not 8 bytes".into()))
        })?;
        let inner = Arc::new_cyclic(|me: &Weak<Inner>| Inner {
            series_tree,
            services_tree,
            tenant_services,
            frame_blocks,
            node_blocks,
            legacy_frames,
            legacy_nodes,
            chunks,
            size_floors_tree,
            dicts,
            size_floors: level_seconds.iter().map(|_| AtomicI64::new(0)).collect(),
            accounting: Mutex::new(None),
            dictionary_block_bytes: Mutex::new(None),
            codec,
            db,
            levels: level_seconds,
            query_max_nodes: ((config.query_budget_bytes / MERGED_NODE_BYTES) as usize)
                .max(MIN_NODES_PER_TREE),
            dictionary_budget: config.dictionary_cache_bytes as usize,
            write_buffer_limit: usize::try_from(config.write_buffer_bytes).unwrap_or(usize::MAX),
            state: Mutex::new(State::default()),
            apply_lock: Mutex::new(()),
            me: me.clone(),
            applying_in_background: AtomicBool::new(false),
            apply_failure: Mutex::new(None),
            // The log is replayed from the older of the two positions.
            applied_log_seq: AtomicU64::new(applied_at_open.finest.min(applied_at_open.coarse)),
            applied_at_open,
            next_idle_check_s: AtomicI64::new(0),
        });
        inner.load()?;
        Ok(Self { inner })
    }

    /// The directory's levels: `config.levels` checked against (or, the first time, recorded
    /// as) its resolutions, in the `settings` tree. A level is stored by its index, so its
    /// resolution must never change under written data.
    fn resolve_levels(db: &sled::Db, config: &SledConfig) -> Result<Vec<(u64, u64)>, StorageError> {
        let choice = config.level_choice();
        let settings = db.open_tree("settings").map_err(io)?;
        let recorded = match settings.get(RESOLUTIONS_KEY).map_err(io)? {
            Some(v) => String::from_utf8(v.to_vec())
                .map_err(|_| StorageError::Corrupt("recorded resolutions are not UTF-8".into()))?,
            None => {
                let has_data = !db.open_tree("chunks").map_err(io)?.is_empty()
                    || !db.open_tree("series").map_err(io)?.is_empty();
                let first = levels::first_record(&choice, has_data);
                settings
                    .insert(RESOLUTIONS_KEY, first.as_bytes())
                    .map_err(io)?;
                first
            }
        };
        levels::resolve(
            &choice,
            &recorded,
            &format!("data directory {}", config.path.display()),
            "data directory",
        )
        .map_err(|e| StorageError::Invalid(e.to_string()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::Io(format!("storage task failed: {e}")))?
    }

    /// Bytes sled and the chunk store occupy on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.disk_bytes().unwrap_or(0)
    }

    /// Writes without going through the async runtime (benchmarks, tools).
    pub fn write_blocking(
        &self,
        tenant: &Tenant,
        profiles: Vec<Profile>,
    ) -> Result<(), StorageError> {
        self.inner.write(tenant, profiles)
    }

    /// Flushes without going through the async runtime.
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.inner.apply()?;
        self.inner.make_durable()
    }

    /// Merges without going through the async runtime.
    pub fn select_merge_blocking(
        &self,
        tenant: &Tenant,
        query: &Query,
    ) -> Result<Merged, StorageError> {
        self.inner.select_merge(tenant, query, now_s())
    }
}

impl Inner {
    /// Bytes sled's files and the finest level's take on disk.
    fn disk_bytes(&self) -> Option<u64> {
        let sled = self.db.size_on_disk().ok()?;
        Some(sled + self.chunks.finest_disk_space())
    }

    /// Everything applied, on disk: sled's trees, then the chunks.
    fn make_durable(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(io)?;
        self.chunks.persist().map_err(io)
    }

    fn disk(&self) -> Disk<'_> {
        Disk {
            frames: &self.frame_blocks,
            nodes: &self.node_blocks,
            codec: self.codec,
        }
    }

    fn load(&self) -> Result<(), StorageError> {
        for kv in self.size_floors_tree.iter() {
            let (k, v) = kv.map_err(io)?;
            let floor = v
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("size floor is not 8 bytes".into()))?;
            if let Some(f) = k.first().and_then(|&l| self.size_floors.get(l as usize)) {
                f.store(floor, Ordering::Relaxed);
            }
        }
        let mut st = self.state.lock();
        let mut names: FxHashMap<u32, (Tenant, String)> = FxHashMap::default();
        let tenant_services = self.tenant_services.iter().map(|kv| {
            let (k, v) = kv.map_err(io)?;
            let (tenant, name) = k
                .iter()
                .position(|&b| b == 0)
                .map(|at| (&k[..at], &k[at + 1..]))
                .ok_or_else(|| StorageError::Corrupt("tenant service key without NUL".into()))?;
            let tenant = std::str::from_utf8(tenant)
                .ok()
                .and_then(|t| Tenant::new(t).ok())
                .ok_or_else(|| StorageError::Corrupt("bad tenant in a service key".into()))?;
            Ok::<_, StorageError>((tenant, name.to_vec(), v))
        });
        let default_services = self.services_tree.iter().map(|kv| {
            let (k, v) = kv.map_err(io)?;
            Ok((Tenant::default(), k.to_vec(), v))
        });
        for entry in default_services.chain(tenant_services) {
            let (tenant, name, v) = entry?;
            let name = String::from_utf8(name)
                .map_err(|_| StorageError::Corrupt("service name is not UTF-8".into()))?;
            let id = u32_at(&v, 0)?;
            names.insert(id, (tenant.clone(), name.clone()));
            st.services.insert((tenant, name), ServiceDict::on_disk(id));
        }
        let by_id = |id: u32| -> Result<(Tenant, String), StorageError> {
            names
                .get(&id)
                .cloned()
                .ok_or_else(|| StorageError::Corrupt(format!("dictionary of unknown service {id}")))
        };
        // Dictionaries are read when first used (a write or a query of their service), except
        // in a data directory of the one-key-per-entry layout, which is converted at once.
        let legacy = !self.legacy_frames.is_empty() || !self.legacy_nodes.is_empty();
        if legacy {
            for dict in st.services.values_mut() {
                dict.begin_load();
            }
        }
        for kv in self.frame_blocks.iter().filter(|_| legacy) {
            let (k, v) = kv.map_err(io)?;
            let (svc, block) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let dict = st.services.get_mut(&by_id(svc)?).expect("loaded above");
            load_frame_block(dict, block, &self.codec.unpack(&v)?)?;
        }
        for kv in self.node_blocks.iter().filter(|_| legacy) {
            let (k, v) = kv.map_err(io)?;
            let (svc, block) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let dict = st.services.get_mut(&by_id(svc)?).expect("loaded above");
            load_node_block(dict, block, &self.codec.unpack(&v)?)?;
        }
        for kv in self.legacy_frames.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, id) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let name = by_id(svc)?;
            let frame = String::from_utf8_lossy(&v).into_owned();
            st.services
                .get_mut(&name)
                .expect("loaded above")
                .load_frame(id, frame)?;
        }
        for kv in self.legacy_nodes.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, id) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let name = by_id(svc)?;
            let (parent, frame) = (u32_at(&v, 0)?, u32_at(&v, 4)?);
            st.services
                .get_mut(&name)
                .expect("loaded above")
                .load_node(id, parent, frame)?;
        }
        if legacy {
            // Rewrite every dictionary as blocks at the next apply, then drop the old keys.
            for dict in st.services.values_mut() {
                dict.forget_persisted();
            }
            st.migrate_legacy = true;
        }
        for kv in self.series_tree.iter() {
            let (k, v) = kv.map_err(io)?;
            let id = u32_at(&k, 0)?;
            let mut rec: SeriesRecord = serde_json::from_slice(&self.codec.unpack(&v)?)
                .map_err(|e| StorageError::Corrupt(format!("series {id}: {e}")))?;
            rec.profile_type = st.intern(&rec.profile_type);
            if let Some(dict) = st.services.get(&(rec.tenant.clone(), rec.service.clone())) {
                rec.service_id = dict.id;
            }
            if id as usize != st.series.len() {
                return Err(StorageError::Corrupt(format!(
                    "series ids not dense at {id}"
                )));
            }
            st.series.push(rec);
            let State {
                series,
                series_ids,
                siblings,
                ..
            } = &mut *st;
            series_ids.insert(series, id);
            siblings.join(series, id);
        }
        Ok(())
    }

    fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        self.write_seq(tenant, &profiles, None)
    }

    /// Buffers `profiles` of `tenant`; `log_seq` is the write-ahead log record they come from,
    /// if any.
    fn write_seq(
        &self,
        tenant: &Tenant,
        profiles: &[Profile],
        log_seq: Option<u64>,
    ) -> Result<(), StorageError> {
        self.check_applies()?;
        // All or nothing: a bad profile must not leave half a batch behind.
        for p in profiles {
            p.validate().map_err(StorageError::Invalid)?;
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        // Read back the dictionaries this batch needs before changing anything.
        let mut services: Vec<&str> = profiles
            .iter()
            .map(|p| p.labels.service_name().expect("validated"))
            .collect();
        services.sort_unstable();
        services.dedup();
        for service in services {
            self.use_dictionary(st, tenant, service)?;
        }
        if log_seq.is_some() {
            st.buffered_log_seq = log_seq;
        }
        // Levels that already hold this record: a crash came between an apply's two batches.
        let applied = self.applied_at_open;
        let (skip_finest, skip_coarse) = match log_seq {
            Some(seq) => (seq <= applied.finest, seq <= applied.coarse),
            None => (false, false),
        };
        let mut stacks: FxHashMap<u32, i64> = FxHashMap::default();
        let mut frame_map: Vec<u32> = Vec::new();
        // Stack node of each sample of the previous profile: a pprof with several sample types
        // arrives as consecutive profiles with identical frames and stacks, resolved once.
        let mut sample_nodes: Vec<u32> = Vec::new();
        // The stack nodes of the sample walked last, root first.
        let mut path: Vec<u32> = Vec::new();
        let mut previous: Option<&Profile> = None;
        let mut dictionary_added = 0usize;
        for p in profiles {
            let service = p.labels.service_name().expect("validated").to_string();
            let same_stacks = previous.is_some_and(|q| q.shares_stacks_with(p));
            if !same_stacks {
                let next_service = st.services.len() as u32;
                let uses = st.uses;
                let dict = st
                    .services
                    .entry((tenant.clone(), service.clone()))
                    .or_insert_with(|| {
                        let mut d = ServiceDict::new(next_service);
                        d.touch(uses, now_s());
                        d
                    });
                // New entries wait in memory for the next apply, as the buffer's values do.
                let before = dict.resident_bytes();
                frame_map.clear();
                for f in &p.frames {
                    frame_map.push(dict.frame(f, uses)?);
                }
                sample_nodes.clear();
                // Consecutive samples mostly share the frames nearest the root: start each
                // stack's walk where it leaves the previous one.
                path.clear();
                let mut prev: &[u32] = &[];
                for s in &p.samples {
                    let common = prev
                        .iter()
                        .zip(&s.stack)
                        .take_while(|(a, b)| a == b)
                        .count();
                    path.truncate(common);
                    let mut node = path.last().copied().unwrap_or(0);
                    for &f in &s.stack[common..] {
                        node = dict.node(node, frame_map[f as usize], uses)?;
                        path.push(node);
                    }
                    sample_nodes.push(node);
                    prev = &s.stack;
                }
                dictionary_added += dict.resident_bytes().saturating_sub(before);
            }
            stacks.clear();
            for (s, &node) in p.samples.iter().zip(&sample_nodes) {
                *stacks.entry(node).or_default() += s.value;
            }
            let found = st
                .series_ids
                .get(&st.series, tenant, &p.labels, &p.profile_type);
            let series = match found {
                Some(id) => id,
                None => {
                    let id = st.series.len() as u32;
                    let profile_type = st.intern(&p.profile_type);
                    let service_id = st.services[&(tenant.clone(), service.clone())].id;
                    st.series.push(SeriesRecord {
                        tenant: tenant.clone(),
                        labels: p.labels.clone(),
                        profile_type,
                        spy_name: p.meta.spy_name.clone(),
                        sample_rate: p.meta.sample_rate,
                        service,
                        service_id,
                        first_ns: i64::MAX,
                        last_ns: i64::MIN,
                    });
                    let State {
                        series,
                        series_ids,
                        siblings,
                        ..
                    } = &mut *st;
                    series_ids.insert(series, id);
                    siblings.join(series, id);
                    st.dirty_series.insert(id);
                    id
                }
            };
            if st.series[series as usize].cover(p.start_ns) {
                st.dirty_series.insert(series);
            }
            let t = (p.start_ns.max(0) / NS) as u64;
            let finest = t / self.levels[0].0 * self.levels[0].0;
            let mut added = 0;
            for (level, &(res, _)) in self.levels.iter().enumerate() {
                if (level == 0 && skip_finest) || (level > 0 && skip_coarse) {
                    continue;
                }
                let pending = st
                    .buffer
                    .entry((series, level as u8, t / res * res))
                    .or_default();
                if pending.profiles == 0 {
                    added += PENDING_BYTES;
                }
                pending.add_profile(finest);
                let before = pending.values.len();
                if before == 0 {
                    // Most buckets of a fleet's spread timestamps get one profile: size the map once.
                    pending.values.reserve(stacks.len());
                }
                for (&node, &v) in &stacks {
                    *pending.values.entry(node).or_default() += v;
                }
                added += (pending.values.len() - before) * PENDING_VALUE_BYTES;
            }
            st.buffer_bytes += added;
            WRITE_BUFFER_BYTES.fetch_add(added as u64, Ordering::Relaxed);
            previous = Some(p);
        }
        st.buffer_bytes += dictionary_added;
        WRITE_BUFFER_BYTES.fetch_add(dictionary_added as u64, Ordering::Relaxed);
        // Near the bound, an apply starts on a thread of its own and this writer goes on; the
        // buffer it takes stays counted until written. Only a writer that reaches the bound
        // with an apply still running pays for one itself (waiting for that one first), so the
        // writers behind it wait rather than the buffer growing: bounded by construction.
        let full = st.buffer_bytes + st.applying_bytes > self.write_buffer_limit;
        let nearly_full = self.nearly_full(st);
        drop(guard);
        if full {
            EARLY_APPLIES.fetch_add(1, Ordering::Relaxed);
            self.apply()?;
        } else if nearly_full {
            self.apply_soon();
        }
        Ok(())
    }

    /// The buffer is past [`APPLY_SOON_AT`] of its bound.
    fn nearly_full(&self, st: &State) -> bool {
        let (num, den) = APPLY_SOON_AT;
        st.buffer_bytes > self.write_buffer_limit / den * num
    }

    /// Starts applying the write buffer on a thread of its own, unless one is still at it.
    fn apply_soon(&self) {
        if self.applying_in_background.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(inner) = self.me.upgrade() else {
            self.applying_in_background.store(false, Ordering::Release);
            return;
        };
        let started = std::thread::Builder::new()
            .name("kiln-sled-apply".into())
            .spawn(move || loop {
                // A failure is kept in `apply_failure`, and the next write or flush reports it.
                let applied = inner.apply();
                BACKGROUND_APPLIES.fetch_add(1, Ordering::Relaxed);
                inner.applying_in_background.store(false, Ordering::Release);
                // A write that filled the buffer again while this apply ran found it running.
                // After a failure every apply fails at once and leaves the buffer as it is:
                // going round again would spin.
                if applied.is_err()
                    || !inner.nearly_full(&inner.state.lock())
                    || inner.applying_in_background.swap(true, Ordering::AcqRel)
                {
                    break;
                }
            });
        if started.is_err() {
            // The bound still holds: the writer that reaches it applies.
            self.applying_in_background.store(false, Ordering::Release);
        }
    }

    /// The failure of an earlier apply, if one failed.
    fn check_applies(&self) -> Result<(), StorageError> {
        match &*self.apply_failure.lock() {
            None => Ok(()),
            Some(why) => Err(StorageError::Io(format!(
                "an earlier write of buffered profiles to sled failed ({why}); they are still in \
                 the write-ahead log: restart the daemon to replay it"
            ))),
        }
    }

    /// Applies the write buffer to sled (without fsync). A failure loses the buffer from
    /// memory, so it is kept: every later write and flush fails with it ([`Inner::check_applies`]).
    fn apply(&self) -> Result<(), StorageError> {
        let _apply = self.apply_lock.lock();
        self.check_applies()?;
        let result = self.apply_buffer();
        let mut st = self.state.lock();
        WRITE_BUFFER_BYTES.fetch_sub(st.applying_bytes as u64, Ordering::Relaxed);
        st.applying_bytes = 0;
        drop(st);
        if let Err(e) = &result {
            tracing::error!(error = %e, "writing buffered profiles to sled failed");
            *self.apply_failure.lock() = Some(e.to_string());
        }
        result
    }

    /// [`Inner::apply`], with `apply_lock` held.
    fn apply_buffer(&self) -> Result<(), StorageError> {
        let mut services = sled::Batch::default();
        let mut tenant_services = sled::Batch::default();
        let mut frames = sled::Batch::default();
        let mut nodes = sled::Batch::default();
        let mut series = sled::Batch::default();
        // (kind, key, value length) of the dictionary blocks this apply writes.
        let mut written_blocks = Vec::new();
        let migrate;
        let service_of;
        let sibling_of;
        let (buffer, log_seq) = {
            let mut st = self.state.lock();
            if st.buffer.is_empty()
                && st.dirty_series.is_empty()
                && st.buffered_log_seq.is_none()
                && !st.migrate_legacy
            {
                return Ok(());
            }
            for ((tenant, name), dict) in st.services.iter_mut() {
                if !dict.registered {
                    if tenant.is_default() {
                        services.insert(name.as_bytes(), &dict.id.to_be_bytes());
                    } else {
                        let key = [tenant.as_str().as_bytes(), b"\0", name.as_bytes()].concat();
                        tenant_services.insert(key, &dict.id.to_be_bytes());
                    }
                }
                for (kind, b, bytes) in dict.dirty_blocks() {
                    let batch = match kind {
                        Kind::Frames => &mut frames,
                        Kind::Nodes => &mut nodes,
                    };
                    let key = blocks::block_key(dict.id, b);
                    let value = self.codec.pack(&bytes);
                    written_blocks.push((kind, key, value.len()));
                    batch.insert(&key, value);
                }
                dict.mark_persisted();
            }
            let dirty: Vec<u32> = st.dirty_series.drain().collect();
            for id in dirty {
                let rec = serde_json::to_vec(&st.series[id as usize]).expect("series serialize");
                series.insert(&id.to_be_bytes(), self.codec.pack(&rec));
            }
            migrate = std::mem::take(&mut st.migrate_legacy);
            service_of = st.series.iter().map(|r| r.service_id).collect::<Vec<u32>>();
            sibling_of = st
                .buffer
                .keys()
                .filter_map(|&(id, _, _)| Some((id, st.siblings.of(id)?)))
                .collect::<FxHashMap<u32, (u32, Arc<[u32]>)>>();
            st.applying_bytes = std::mem::take(&mut st.buffer_bytes);
            (std::mem::take(&mut st.buffer), st.buffered_log_seq.take())
        };
        // Dictionaries first: a chunk never refers to a stack that is not on disk.
        self.services_tree.apply_batch(services).map_err(io)?;
        self.tenant_services
            .apply_batch(tenant_services)
            .map_err(io)?;
        self.count_dictionary_blocks(&written_blocks)?;
        self.frame_blocks.apply_batch(frames).map_err(io)?;
        self.node_blocks.apply_batch(nodes).map_err(io)?;
        if migrate {
            self.legacy_frames.clear().map_err(io)?;
            self.legacy_nodes.clear().map_err(io)?;
        }
        self.series_tree.apply_batch(series).map_err(io)?;
        // On disk before any chunk that refers to them: the chunk store writes a batch to its
        // journal as it is applied, sled only when it flushes.
        self.db.flush().map_err(io)?;
        // Every read below sees sled as it was before this batch: a reference is resolved to the
        // finest chunk's old column, to which this batch adds the same profiles as to the
        // coarse one.
        let mut chunks = ChunkBatch::default();
        let mut changes = usage::Changes::default();
        let now = now_s() as u64;
        // Per service: its compression dictionary, and the bytes packed with it (raw, packed).
        let mut compression_dicts: FxHashMap<u32, (Option<Arc<zdict::Prepared>>, u64, u64)> =
            FxHashMap::default();
        // Keys of this batch whose series has siblings, for the references between them.
        let mut with_siblings: FxHashSet<(u32, u8, u64)> = FxHashSet::default();
        // One slot at a time (a level and bucket of one series, or of a group of siblings, which
        // are compared with each other): what an apply holds merged at once is one slot's
        // columns, not every coarse chunk the buffer touches.
        let slot_of = |&(series, level, bucket): &(u32, u8, u64)| match sibling_of.get(&series) {
            Some(&(group, _)) => (level, bucket, 0u8, group),
            None => (level, bucket, 1, series),
        };
        let mut buffer: Vec<((u32, u8, u64), Pending)> = buffer.into_iter().collect();
        buffer.sort_unstable_by_key(|(key, _)| slot_of(key));
        let mut buffer = buffer.into_iter().peekable();
        while let Some(first) = buffer.next() {
            let slot = slot_of(&first.0);
            let rest = std::iter::from_fn(|| buffer.next_if(|(key, _)| slot_of(key) == slot));
            // The slot's columns to store, after references: whether each is stored whole or as a
            // sibling's is decided once all of them are known.
            let mut columns: Vec<NewColumn> = Vec::new();
            for ((series, level, bucket), pending) in std::iter::once(first).chain(rest) {
                let key = chunk_key(series, level, bucket);
                if sibling_of.contains_key(&series) {
                    with_siblings.insert((series, level, bucket));
                }
                let old_raw = self.chunks.get(key).map_err(io)?;
                let old_len = old_raw.as_ref().map(|v| v.len());
                let old = match old_raw {
                    Some(v) => Some(Stored::decode(&self.unpack_chunk(&v)?)?),
                    None => None,
                };
                let finest = pending.finest;
                let mut entries: Vec<(u32, i64)> = pending.values.into_iter().collect();
                entries.sort_unstable_by_key(|e| e.0);
                let column = Column {
                    profiles: pending.profiles,
                    entries,
                };
                if level > 0 {
                    // Still (or newly) all in one finest bucket: the finest chunk says it all. A
                    // coarse bucket without a chunk has no finest chunk either (every profile goes
                    // to every level, and coarser levels are kept at least as long).
                    let reference = match (&old, finest) {
                        (None, Some(b)) => Some((b, column.profiles, column.total())),
                        (
                            Some(Stored::SameAsFinest {
                                bucket: was,
                                profiles,
                                total,
                            }),
                            Some(b),
                        ) if *was == b => {
                            Some((b, profiles + column.profiles, total + column.total()))
                        }
                        _ => None,
                    };
                    if let Some((b, profiles, total)) = reference {
                        let value = self
                            .codec
                            .pack(&Stored::encode_same_as_finest(b, profiles, total));
                        changes.push(key, old_len, Some(value.len()));
                        chunks.insert(key, value);
                        continue;
                    }
                }
                let merged = match old {
                    None => column,
                    Some(old) => {
                        let mut old = self.resolve(series, level, bucket, old)?;
                        old.merge(&column);
                        old
                    }
                };
                columns.push(NewColumn {
                    series,
                    level,
                    bucket,
                    old_len,
                    column: merged,
                });
            }
            let bases = sibling_bases(&columns, &sibling_of);
            for (new, base) in columns.into_iter().zip(bases) {
                let key = chunk_key(new.series, new.level, new.bucket);
                if let Some((sibling, ratio)) = base {
                    let value = self.codec.pack(&Stored::encode_scaled_sibling(
                        sibling,
                        ratio,
                        new.column.profiles,
                        new.column.total(),
                    ));
                    changes.push(key, new.old_len, Some(value.len()));
                    chunks.insert(key, value);
                    continue;
                }
                let raw = new.column.encode();
                let service = service_of
                    .get(new.series as usize)
                    .copied()
                    .unwrap_or(NO_SERVICE);
                let entry = match compression_dicts.entry(service) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        let d = if service == NO_SERVICE || self.codec != Codec::Packed {
                            None
                        } else {
                            self.dicts.for_service(service)?
                        };
                        e.insert((d, 0, 0))
                    }
                };
                if service != NO_SERVICE && self.codec == Codec::Packed {
                    // Sampled while it has no dictionary, or its dictionary packs poorly now.
                    self.dicts.offer(service, &raw, now);
                }
                let value = self.codec.pack_with(&raw, entry.0.as_deref());
                if entry.0.is_some() {
                    entry.1 += raw.len() as u64;
                    entry.2 += value.len() as u64;
                }
                changes.push(key, new.old_len, Some(value.len()));
                chunks.insert(key, value);
            }
        }
        // A sibling outside this batch that refers to a chunk this batch changes gets the column
        // it stood for (read as sled is before the batch). Pushes carry all of a profile's
        // types, so this reads nothing unless a client sends them apart.
        for &(series, level, bucket) in &with_siblings {
            let (_, members) = &sibling_of[&series];
            for &other in members.iter() {
                if other != series && !with_siblings.contains(&(other, level, bucket)) {
                    self.detach_sibling(other, series, level, bucket, &mut chunks, &mut changes)?;
                }
            }
        }
        if let Some(seq) = log_seq {
            chunks.set_log_seq(self.codec.pack(&seq.to_be_bytes()));
        }
        for (service, (dict, raw, packed)) in compression_dicts {
            if dict.is_some() {
                self.dicts.record(service, raw, packed);
            }
        }
        // Stored before any chunk is packed with them: from the next apply on.
        self.dicts.train_ready(now)?;
        self.chunks.apply(chunks).map_err(io)?;
        self.account(changes);
        if let Some(seq) = log_seq {
            self.applied_log_seq.store(seq, Ordering::Relaxed);
        }
        self.evict_dictionaries();
        Ok(())
    }

    /// Adds what rewriting `blocks` changes to [`Inner::dictionary_block_bytes`], once it is
    /// counted: the blocks an apply writes are a dictionary's last, so this reads a few values.
    /// Called with `apply_lock` held, before the blocks are written.
    fn count_dictionary_blocks(
        &self,
        blocks: &[(Kind, [u8; 8], usize)],
    ) -> Result<(), StorageError> {
        let mut counted = self.dictionary_block_bytes.lock();
        let Some(total) = counted.as_mut() else {
            return Ok(());
        };
        for (kind, key, len) in blocks {
            let tree = match kind {
                Kind::Frames => &self.frame_blocks,
                Kind::Nodes => &self.node_blocks,
            };
            let old = tree
                .get(key)
                .map_err(io)?
                .map_or(0, |v| key.len() + v.len());
            *total = (*total + (key.len() + len) as u64).saturating_sub(old as u64);
        }
        Ok(())
    }

    /// A chunk's value as stored, unpacked (with its compression dictionary, if any).
    fn unpack_chunk<'a>(&self, stored: &'a [u8]) -> Result<Cow<'a, [u8]>, StorageError> {
        self.codec.unpack_with(stored, &self.dicts)
    }

    /// Marks the dictionary of `service` used and readies it for new entries: reads the
    /// blocks they go to, and the whole dictionary when none of it can be found by content and
    /// it is small beside the budget (so that writes find what is on disk rather than copy it).
    fn use_dictionary(
        &self,
        st: &mut State,
        tenant: &Tenant,
        service: &str,
    ) -> Result<(), StorageError> {
        st.uses += 1;
        let uses = st.uses;
        let Some(dict) = st.services.get_mut(&(tenant.clone(), service.to_string())) else {
            return Ok(());
        };
        dict.touch(uses, now_s());
        dict.ensure_known(self.disk())?;
        if dict.lookups_empty()
            && dict.node_count() > 1
            && dict.full_bytes() <= self.dictionary_budget / 4
        {
            dict.load_whole(self.disk(), uses)?;
        }
        dict.prepare_append(self.disk(), uses)
    }

    /// Releases the dictionaries not used for [`RELEASE_IDLE_AFTER_S`] (looking every 10 s).
    /// Called with nothing waiting to be applied, as after a flush's apply.
    fn release_idle_dictionaries(&self) {
        let now = now_s();
        if now < self.next_idle_check_s.load(Ordering::Relaxed) {
            return;
        }
        self.next_idle_check_s.store(now + 10, Ordering::Relaxed);
        // No apply runs while blocks are dropped: one it marked as on disk might not be yet.
        let _apply = self.apply_lock.lock();
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut released = 0;
        for dict in st.services.values_mut() {
            if !dict.released && now - dict.touched_s >= RELEASE_IDLE_AFTER_S {
                released += dict.release();
            }
        }
        if released > 0 {
            let resident = st.services.values().map(ServiceDict::resident_bytes).sum();
            report_resident(&mut st.reported_resident, resident);
        }
    }

    /// Past the dictionary budget: drops the least recently used blocks that are on disk down
    /// to half the budget, then the older generation of the least recently used dictionaries'
    /// lookups, then more blocks. Entries not yet on disk stay. Called with `apply_lock` held:
    /// an apply marks blocks as on disk before its batch reaches sled, and a block dropped in
    /// between would be read back stale.
    fn evict_dictionaries(&self) {
        let budget = self.dictionary_budget;
        let mut guard = self.state.lock();
        let st = &mut *guard;
        let mut pages: usize = st.services.values().map(ServiceDict::page_bytes).sum();
        let mut lookups: usize = st.services.values().map(ServiceDict::lookup_bytes).sum();
        if pages + lookups > budget {
            let mut blocks: Vec<(u64, Kind, u32, (Tenant, String))> = st
                .services
                .iter()
                .flat_map(|(name, d)| d.clean_blocks().map(|(u, k, b)| (u, k, b, name.clone())))
                .collect();
            blocks.sort_unstable_by_key(|b| (b.0, b.1, b.2));
            let mut blocks = blocks.into_iter();
            let mut evicted = 0u64;
            let evict_block =
                |services: &mut FxHashMap<(Tenant, String), ServiceDict>,
                 (_, kind, b, name): (u64, Kind, u32, (Tenant, String))| {
                    services
                        .get_mut(&name)
                        .map_or(0, |d| d.evict_block(kind, b))
                };
            while pages + lookups > budget && pages > budget / 2 {
                let Some(block) = blocks.next() else { break };
                pages -= evict_block(&mut st.services, block);
                evicted += 1;
            }
            if pages + lookups > budget {
                let mut dicts: Vec<(u64, (Tenant, String))> = st
                    .services
                    .iter()
                    .filter(|(_, d)| d.lookup_bytes() > 0)
                    .map(|(name, d)| (d.last_used, name.clone()))
                    .collect();
                dicts.sort_unstable();
                // First what was not used since the last ageing, then, if that is not enough,
                // the rest too.
                for round in 0..2 {
                    for (_, name) in &dicts {
                        if pages + lookups <= budget {
                            break;
                        }
                        let dict = st.services.get_mut(name).expect("listed above");
                        lookups -= dict.drop_cold_lookups();
                        if round == 0 {
                            dict.age_lookups();
                        }
                        evicted += 1;
                    }
                }
            }
            while pages + lookups > budget {
                let Some(block) = blocks.next() else { break };
                pages -= evict_block(&mut st.services, block);
                evicted += 1;
            }
            DICTIONARY_EVICTIONS.fetch_add(evicted, Ordering::Relaxed);
        }
        report_resident(&mut st.reported_resident, pages + lookups);
    }

    /// The column a stored chunk of `series` at `level` and `bucket` stands for.
    fn resolve(
        &self,
        series: u32,
        level: u8,
        bucket: u64,
        stored: Stored,
    ) -> Result<Column, StorageError> {
        match stored {
            Stored::Column(c) => Ok(c),
            Stored::SameAsFinest { bucket, .. } => {
                let finest = self
                    .chunks
                    .get(chunk_key(series, 0, bucket))
                    .map_err(io)?
                    .ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "series {series}: a chunk refers to the finest bucket {bucket}, which is gone"
                        ))
                    })?;
                match Stored::decode(&self.unpack_chunk(&finest)?)? {
                    Stored::SameAsFinest { .. } => Err(StorageError::Corrupt(format!(
                        "series {series}: the finest bucket {bucket} is itself a reference to a finest bucket"
                    ))),
                    finest => self.resolve(series, 0, bucket, finest),
                }
            }
            Stored::ScaledSibling {
                series: sibling,
                ratio,
                profiles,
                ..
            } => {
                let base = self
                    .chunks
                    .get(chunk_key(sibling, level, bucket))
                    .map_err(io)?
                    .ok_or_else(|| {
                        StorageError::Corrupt(format!(
                            "series {series}: a chunk at level {level}, bucket {bucket} refers to series {sibling}'s, which is gone"
                        ))
                    })?;
                let base = match Stored::decode(&self.unpack_chunk(&base)?)? {
                    Stored::ScaledSibling { .. } => {
                        return Err(StorageError::Corrupt(format!(
                            "series {series}: a chunk at level {level}, bucket {bucket} refers to series {sibling}'s, itself a reference to a sibling"
                        )))
                    }
                    other => self.resolve(sibling, level, bucket, other)?,
                };
                base.scaled(ratio, profiles).ok_or_else(|| {
                    StorageError::Corrupt(format!(
                        "series {series}: a chunk at level {level}, bucket {bucket} does not scale from series {sibling}'s"
                    ))
                })
            }
        }
    }

    /// The column of chunk `key` of `series`, read as `value`. Queries read without holding up
    /// applies: when the chunk it refers to changed in between (an apply gave this one its
    /// column, or retention moved it), the chunk is read once more.
    fn read_column(
        &self,
        series: u32,
        level: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<Column, StorageError> {
        let bucket = bucket_of(key)?;
        let stored = Stored::decode(&self.unpack_chunk(value)?)?;
        let is_reference = !matches!(stored, Stored::Column(_));
        match self.resolve(series, level, bucket, stored) {
            Err(StorageError::Corrupt(_)) if is_reference => {
                // Gone since: retention deleted it, and with it what it held.
                let Some(again) = self.chunks.get(key).map_err(io)? else {
                    return Ok(Column::default());
                };
                let stored = Stored::decode(&self.unpack_chunk(&again)?)?;
                self.resolve(series, level, bucket, stored)
            }
            answer => answer,
        }
    }

    /// If `other`'s chunk at `level` and `bucket` refers to `series`' chunk, which is about to
    /// change or go, stores the column it stands for in its place (in `batch`).
    fn detach_sibling(
        &self,
        other: u32,
        series: u32,
        level: u8,
        bucket: u64,
        batch: &mut ChunkBatch,
        changes: &mut usage::Changes,
    ) -> Result<(), StorageError> {
        let key = chunk_key(other, level, bucket);
        let Some(v) = self.chunks.get(key).map_err(io)? else {
            return Ok(());
        };
        let unpacked = self.unpack_chunk(&v)?;
        if Stored::sibling_of(&unpacked) != Some(series) {
            return Ok(());
        }
        let column = self.resolve(other, level, bucket, Stored::decode(&unpacked)?)?;
        let value = self.codec.pack(&column.encode());
        changes.push(key, Some(v.len()), Some(value.len()));
        batch.insert(key, value);
        Ok(())
    }

    /// `(level, first bucket, end)`: the chunks to read for `[start_s, end_s)`, coarsest first.
    fn plan(
        &self,
        level: usize,
        start_s: i64,
        end_s: i64,
        now_s: i64,
        out: &mut Vec<(usize, i64, i64)>,
    ) {
        if start_s >= end_s {
            return;
        }
        let res = self.levels[level].0 as i64;
        if level == 0 {
            out.push((0, start_s.div_euclid(res) * res, end_s));
            return;
        }
        let a = start_s.div_euclid(res) * res + if start_s.rem_euclid(res) == 0 { 0 } else { res };
        let b = end_s.div_euclid(res) * res;
        let finer_from = (now_s - self.levels[level - 1].1 as i64).max(self.size_floor(level - 1));
        if a >= b {
            if start_s >= finer_from {
                self.plan(level - 1, start_s, end_s, now_s, out);
            } else {
                // The finer level no longer holds this time: the coarse buckets around it.
                let first = start_s.div_euclid(res) * res;
                out.push((level, first, (end_s + res - 1).div_euclid(res) * res));
            }
            return;
        }
        out.push((level, a, b));
        if start_s < a {
            if start_s >= finer_from {
                self.plan(level - 1, start_s, a, now_s, out);
            } else {
                out.push((level, a - res, a));
            }
        }
        if b < end_s {
            if b >= finer_from {
                self.plan(level - 1, b, end_s, now_s, out);
            } else {
                out.push((level, b, b + res));
            }
        }
    }

    fn matching_series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Vec<(u32, SeriesRecord)> {
        let st = self.state.lock();
        st.series
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.tenant == *tenant
                    && r.last_ns >= start_ns - 100_000 * NS
                    && r.first_ns < end_ns
                    && selector.is_none_or(|s| s.matches(&r.labels, &r.profile_type))
            })
            .map(|(i, r)| (i as u32, r.clone()))
            .collect()
    }

    fn select_merge(&self, tenant: &Tenant, q: &Query, now_s: i64) -> Result<Merged, StorageError> {
        self.apply()?;
        let series = self.matching_series(tenant, Some(&q.selector), q.start_ns, q.end_ns);
        let mut plan = Vec::new();
        self.plan(
            self.levels.len() - 1,
            q.start_ns.div_euclid(NS),
            (q.end_ns + NS - 1).div_euclid(NS),
            now_s,
            &mut plan,
        );
        let mut by_service: FxHashMap<&str, Vec<u32>> = FxHashMap::default();
        for (id, rec) in &series {
            by_service
                .entry(rec.service.as_str())
                .or_default()
                .push(*id);
        }
        let mut merged = Merged {
            series: series.len() as u64,
            ..Merged::default()
        };
        let mut trees = Vec::new();
        let mut nodes_left = self.query_max_nodes;
        for (service, ids) in by_service {
            let mut values: Vec<i64> = Vec::new();
            for &id in &ids {
                for &(level, from, to) in &plan {
                    let lo = chunk_key(id, level as u8, from.max(0) as u64);
                    let hi = chunk_key(id, level as u8, to.max(0) as u64);
                    for kv in self.chunks.range(lo..hi) {
                        let (k, v) = kv.map_err(io)?;
                        let col = self.read_column(id, level as u8, &k, &v)?;
                        merged.profiles += col.profiles;
                        for (node, value) in col.entries {
                            let node = node as usize;
                            if node >= values.len() {
                                values.resize(node + 1, 0);
                            }
                            values[node] += value;
                        }
                    }
                }
            }
            // No apply runs while blocks are dropped: one it marked as on disk might not be yet.
            let _apply = self.apply_lock.lock();
            let mut st = self.state.lock();
            st.uses += 1;
            let uses = st.uses;
            let dict = st
                .services
                .get_mut(&(tenant.clone(), service.to_string()))
                .ok_or_else(|| StorageError::Corrupt(format!("no dictionary for {service}")))?;
            dict.touch(uses, now_s);
            dict.ensure_known(self.disk())?;
            let built = merge::build_tree(
                dict,
                self.disk(),
                uses,
                values,
                nodes_left.max(MIN_NODES_PER_TREE),
                (self.dictionary_budget / 2).max(MIN_QUERY_PAGE_BYTES),
            );
            drop(st);
            // What the query read back leaves memory again past the budget.
            self.evict_dictionaries();
            let (tree, pruned) = built?;
            nodes_left = nodes_left.saturating_sub(tree.nodes.len());
            merged.pruned_nodes += pruned;
            trees.push(tree);
        }
        merged.tree = match trees.len() {
            0 => Tree::default(),
            1 => trees.pop().expect("one tree"),
            _ => {
                let mut b = kiln_plugin_api::TreeBuilder::default();
                for t in &trees {
                    b.merge(t);
                }
                b.build()
            }
        };
        Ok(merged)
    }

    fn select_timeline(
        &self,
        tenant: &Tenant,
        q: &Query,
        step_ns: i64,
        group_by: Option<&str>,
        now_s: i64,
    ) -> Result<Vec<(String, Timeline)>, StorageError> {
        self.apply()?;
        let range_s = (q.end_ns - q.start_ns) / NS;
        let step_s = levels::timeline_step(&self.levels, (step_ns / NS).max(1), range_s);
        let start_s = q.start_ns.div_euclid(NS).div_euclid(step_s) * step_s;
        let end_s = (q.end_ns + NS - 1).div_euclid(NS);
        let points = ((end_s - start_s + step_s - 1) / step_s).max(1) as usize;
        // The coarsest level no coarser than the step, then coarser ones for older data.
        let first = self
            .levels
            .iter()
            .rposition(|&(res, _)| res as i64 <= step_s)
            .unwrap_or(0);
        let mut out: FxHashMap<String, Vec<i64>> = FxHashMap::default();
        for (id, rec) in self.matching_series(tenant, Some(&q.selector), q.start_ns, q.end_ns) {
            let group = group_by
                .map(|g| rec.labels.get(g).unwrap_or("").to_string())
                .unwrap_or_default();
            let line = out.entry(group).or_insert_with(|| vec![0; points]);
            let average = rec.profile_type.aggregation == Aggregation::Average;
            let mut covered_until = end_s;
            for level in first..self.levels.len() {
                let (res, retention) = self.levels[level];
                let from = if level + 1 == self.levels.len() {
                    start_s
                } else {
                    start_s
                        .max(now_s - retention as i64)
                        .max(self.size_floor(level))
                };
                if from < covered_until {
                    let lo = chunk_key(
                        id,
                        level as u8,
                        (from.div_euclid(res as i64) * res as i64).max(0) as u64,
                    );
                    let hi = chunk_key(id, level as u8, covered_until.max(0) as u64);
                    for kv in self.chunks.range(lo..hi) {
                        let (k, v) = kv.map_err(io)?;
                        let bucket =
                            u64::from_be_bytes(k[5..13].try_into().expect("13-byte key")) as i64;
                        let (profiles, total) = Column::decode_header(&self.unpack_chunk(&v)?)?;
                        let value = if average && profiles > 0 {
                            total / profiles as i64
                        } else {
                            total
                        };
                        let i = ((bucket.max(start_s) - start_s) / step_s) as usize;
                        if i < points {
                            line[i] += value;
                        }
                    }
                }
                covered_until = covered_until.min(from);
                if covered_until <= start_s {
                    break;
                }
            }
        }
        let mut out: Vec<(String, Timeline)> = out
            .into_iter()
            .map(|(g, points)| {
                (
                    g,
                    Timeline {
                        start_ns: start_s * NS,
                        step_ns: step_s * NS,
                        points,
                    },
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn enforce_retention(&self, now_s: i64) -> Result<RetentionReport, StorageError> {
        self.apply()?;
        let series = self.state.lock().series.len() as u32;
        let mut report = RetentionReport::default();
        for (level, &(res, retention)) in self.levels.iter().enumerate() {
            let cutoff = (now_s - retention as i64 - res as i64).max(0) as u64;
            for id in 0..series {
                // Applies wait for one series at a time: none reads a chunk this batch removes,
                // and pushes are not held up by a long pass.
                let _apply = self.apply_lock.lock();
                let siblings = self.state.lock().siblings.of(id);
                let mut batch = ChunkBatch::default();
                let mut changes = usage::Changes::default();
                for kv in self
                    .chunks
                    .range(chunk_key(id, level as u8, 0)..chunk_key(id, level as u8, cutoff))
                {
                    let (k, v) = kv.map_err(io)?;
                    if level == 0 {
                        self.materialize_references(id, &k, &v, &mut batch, &mut changes)?;
                    }
                    // Series are passed one by one: a sibling passed later must not be left
                    // referring to a chunk that is gone.
                    let bucket = bucket_of(&k)?;
                    for &other in siblings.iter().flat_map(|(_, m)| m.iter()) {
                        if other != id {
                            self.detach_sibling(
                                other,
                                id,
                                level as u8,
                                bucket,
                                &mut batch,
                                &mut changes,
                            )?;
                        }
                    }
                    changes.push_removed(&k, v.len());
                    batch.remove(k);
                    report.chunks_deleted += 1;
                }
                if !changes.is_empty() {
                    self.chunks.apply(batch).map_err(io)?;
                    self.account(changes);
                }
            }
        }
        Ok(report)
    }

    /// Before the finest chunk `key` of `series` expires, the coarse chunks that refer to it get
    /// its column. Returns the bytes that adds.
    fn materialize_references(
        &self,
        series: u32,
        key: &[u8],
        column: &[u8],
        batch: &mut ChunkBatch,
        changes: &mut usage::Changes,
    ) -> Result<u64, StorageError> {
        let mut added = 0u64;
        let bucket = bucket_of(key)?;
        // A reference to a sibling's chunk means something else at a coarse key: the coarse
        // chunks get the column itself.
        let resolved;
        let mut column = column;
        let unpacked = self.unpack_chunk(column)?;
        if Stored::sibling_of(&unpacked).is_some() {
            let stored = Stored::decode(&unpacked)?;
            resolved = self
                .codec
                .pack(&self.resolve(series, 0, bucket, stored)?.encode());
            column = &resolved;
        }
        for (level, &(res, _)) in self.levels.iter().enumerate().skip(1) {
            let coarse = chunk_key(series, level as u8, bucket / res * res);
            if let Some(v) = self.chunks.get(coarse).map_err(io)? {
                if matches!(Stored::decode(&self.unpack_chunk(&v)?)?, Stored::SameAsFinest { bucket: b, .. } if b == bucket)
                {
                    batch.insert(coarse, column);
                    changes.push(coarse, Some(v.len()), Some(column.len()));
                    added += (column.len() as u64).saturating_sub(v.len() as u64);
                }
            }
        }
        Ok(added)
    }

    fn delete_service(&self, tenant: &Tenant, service: &str) -> Result<u64, StorageError> {
        self.apply()?;
        let ids: Vec<u32> = {
            let st = self.state.lock();
            st.series
                .iter()
                .enumerate()
                .filter(|(_, r)| r.tenant == *tenant && r.service == service)
                .map(|(i, _)| i as u32)
                .collect()
        };
        // Gone from queries first: its chunks go one series at a time, and a query must not
        // meet a chunk whose sibling series was deleted before it. A series keeps its id (ids
        // are dense) but no longer matches anything.
        {
            let mut st = self.state.lock();
            for &id in &ids {
                st.series[id as usize].last_ns = i64::MIN / 2;
                st.series[id as usize].first_ns = i64::MAX / 2;
                st.dirty_series.insert(id);
            }
        }
        let mut deleted = 0;
        for id in ids {
            let _apply = self.apply_lock.lock();
            let mut batch = ChunkBatch::default();
            let mut changes = usage::Changes::default();
            for kv in self
                .chunks
                .range(chunk_key(id, 0, 0)..chunk_key(id, u8::MAX, u64::MAX))
            {
                let (k, v) = kv.map_err(io)?;
                changes.push_removed(&k, v.len());
                batch.remove(k);
                deleted += 1;
            }
            self.chunks.apply(batch).map_err(io)?;
            self.account(changes);
        }
        Ok(deleted)
    }
}

#[async_trait]
impl Storage for SledStorage {
    async fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        let t = tenant.clone();
        self.blocking(move |i| i.write(&t, profiles)).await
    }

    async fn write_logged(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: Arc<[Profile]>,
    ) -> Result<(), StorageError> {
        let t = tenant.clone();
        self.blocking(move |i| i.write_seq(&t, &profiles, Some(seq)))
            .await
    }

    fn write_logged_blocking(
        &self,
        seq: u64,
        tenant: &Tenant,
        profiles: &[Profile],
    ) -> Option<Result<(), StorageError>> {
        Some(self.inner.write_seq(tenant, profiles, Some(seq)))
    }

    fn logged_seq(&self) -> Option<u64> {
        Some(self.inner.applied_log_seq.load(Ordering::Relaxed))
    }

    async fn select_merge(&self, tenant: &Tenant, query: &Query) -> Result<Merged, StorageError> {
        let (t, q) = (tenant.clone(), query.clone());
        self.blocking(move |i| i.select_merge(&t, &q, now_s()))
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
        self.blocking(move |i| i.select_timeline(&t, &q, step_ns, g.as_deref(), now_s()))
            .await
    }

    async fn series(
        &self,
        tenant: &Tenant,
        selector: Option<&Selector>,
        start_ns: i64,
        end_ns: i64,
    ) -> Result<Vec<SeriesInfo>, StorageError> {
        Ok(self
            .inner
            .matching_series(tenant, selector, start_ns, end_ns)
            .into_iter()
            .map(|(_, r)| r.info())
            .collect())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.blocking(|i| {
            i.apply()?;
            i.make_durable()?;
            i.release_idle_dictionaries();
            Ok(())
        })
        .await
    }

    async fn enforce_retention(&self, now_ns: i64) -> Result<RetentionReport, StorageError> {
        self.blocking(move |i| i.enforce_retention(now_ns / NS))
            .await
    }

    async fn delete_service(
        &self,
        tenant: &Tenant,
        service_name: &str,
    ) -> Result<u64, StorageError> {
        let (t, s) = (tenant.clone(), service_name.to_string());
        self.blocking(move |i| i.delete_service(&t, &s)).await
    }
    async fn usage(&self) -> Result<StorageUsage, StorageError> {
        self.blocking(|i| i.usage()).await
    }

    async fn enforce_size(
        &self,
        max_bytes: u64,
        target_bytes: u64,
    ) -> Result<RetentionReport, StorageError> {
        self.blocking(move |i| i.enforce_size(max_bytes, target_bytes))
            .await
    }
}

#[cfg(test)]
mod tests;
