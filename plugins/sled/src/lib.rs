//! # kiln-storage-sled
//!
//! Kiln's embedded storage, on [sled].
//!
//! * Per service, frames are interned and stacks live in a parent-pointer tree: a stack id is a
//!   node id, so a sample is just `(stack id, value)` and symbols are touched once per distinct
//!   stack, not per sample.
//! * Per series and time bucket, one chunk holds a sorted column of `(stack id, value)`
//!   ([`column`]). Every profile is added to a bucket of each level (10 s, 100 s, 1000 s, … by
//!   default), so a long range reads a few coarse chunks. Nothing is truncated on write.
//! * Writes accumulate in memory and are applied to sled in one pass per flush interval (and
//!   before every query, so a query sees every accepted profile); a crash loses at most what was
//!   accepted since the last flush.
//! * Retention is by age, per level.
//! * Every series and dictionary belongs to a [`Tenant`]. The default tenant (`anonymous`)
//!   keeps the layout of data directories written before tenants existed; the dictionaries of
//!   other tenants' services are named `tenant NUL service` in their own tree, and their series
//!   records carry the tenant. Chunks are keyed by series id, which is unique across tenants,
//!   so retention (by key age) is per tenant without knowing tenants.

mod blocks;
mod column;
mod dict;
mod error;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use kiln_plugin_api::{
    Aggregation, Labels, Merged, Profile, ProfileType, Query, RetentionReport, Selector,
    SeriesInfo, SourceLine, Storage, StorageError, Tenant, Timeline, Tree, TreeNode,
};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

pub use column::Column;
use dict::ServiceDict;
use error::io;

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
    /// Time levels, finest first; each resolution a multiple of the previous one.
    #[serde(default = "default_levels")]
    pub levels: Vec<Level>,
    /// sled's page cache, bytes.
    #[serde(default = "default_cache")]
    pub cache_capacity_bytes: u64,
}

fn default_cache() -> u64 {
    64 << 20
}

/// 10 s for 3 days, 100 s for 2 weeks, 1000 s and 10 000 s for 30 days, 100 000 s for a year.
pub fn default_levels() -> Vec<Level> {
    let day = 86_400;
    [
        (10, 3 * day),
        (100, 14 * day),
        (1_000, 30 * day),
        (10_000, 30 * day),
        (100_000, 365 * day),
    ]
    .into_iter()
    .map(|(r, k)| Level {
        resolution: Duration::from_secs(r),
        retention: Duration::from_secs(k),
    })
    .collect()
}

impl SledConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            levels: default_levels(),
            cache_capacity_bytes: default_cache(),
        }
    }

    /// Checks the levels: non-empty, whole seconds, each resolution a multiple of the previous.
    pub fn validate(&self) -> Result<(), String> {
        if self.levels.is_empty() {
            return Err("levels: at least one level is required".into());
        }
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeriesRecord {
    /// Absent (the default tenant) in records written before tenants, and kept absent for it.
    #[serde(default, skip_serializing_if = "Tenant::is_default")]
    tenant: Tenant,
    info: SeriesInfo,
    service: String,
    first_ns: i64,
    last_ns: i64,
}

/// Values accumulated for one chunk since the last flush.
#[derive(Default)]
struct Pending {
    profiles: u64,
    values: FxHashMap<u32, i64>,
}

#[derive(Default)]
struct State {
    services: FxHashMap<(Tenant, String), ServiceDict>,
    series: Vec<SeriesRecord>,
    series_ids: FxHashMap<(Tenant, Labels, ProfileType), u32>,
    buffer: FxHashMap<(u32, u8, u64), Pending>,
    dirty_series: FxHashSet<u32>,
    /// The last write-ahead log record in `buffer`.
    buffered_log_seq: Option<u64>,
    /// Dictionaries were loaded from the one-key-per-entry layout: rewrite them as blocks.
    migrate_legacy: bool,
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
    chunks: sled::Tree,
    /// `(resolution, retention)` in seconds, finest first.
    levels: Vec<(u64, u64)>,
    state: Mutex<State>,
    /// Serializes applying the write buffer to sled.
    apply_lock: Mutex<()>,
    /// The last write-ahead log record applied to sled (kept in `chunks` under
    /// [`LOG_SEQ_KEY`], in the same atomic batch as the chunks it produced).
    applied_log_seq: AtomicU64,
}

/// Where `chunks` keeps the last applied log record: a 13-byte key no series reaches.
const LOG_SEQ_KEY: [u8; 13] = [0xff; 13];

/// The sled storage backend. Cheap to clone.
#[derive(Clone)]
pub struct SledStorage {
    inner: Arc<Inner>,
}

fn chunk_key(series: u32, level: u8, bucket_s: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..4].copy_from_slice(&series.to_be_bytes());
    k[4] = level;
    k[5..].copy_from_slice(&bucket_s.to_be_bytes());
    k
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
        let db = sled::Config::new()
            .path(&config.path)
            .cache_capacity(config.cache_capacity_bytes)
            .flush_every_ms(None)
            .use_compression(true)
            .compression_factor(3)
            .open()
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", config.path.display())))?;
        let inner = Inner {
            series_tree: db.open_tree("series").map_err(io)?,
            services_tree: db.open_tree("services").map_err(io)?,
            tenant_services: db.open_tree("tenant_services").map_err(io)?,
            frame_blocks: db.open_tree("frame_blocks").map_err(io)?,
            node_blocks: db.open_tree("node_blocks").map_err(io)?,
            legacy_frames: db.open_tree("frames").map_err(io)?,
            legacy_nodes: db.open_tree("nodes").map_err(io)?,
            chunks: db.open_tree("chunks").map_err(io)?,
            db,
            levels: config
                .levels
                .iter()
                .map(|l| (l.resolution.as_secs(), l.retention.as_secs()))
                .collect(),
            state: Mutex::new(State::default()),
            apply_lock: Mutex::new(()),
            applied_log_seq: AtomicU64::new(0),
        };
        inner.load()?;
        Ok(Self {
            inner: Arc::new(inner),
        })
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

    /// Bytes sled occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.inner.db.size_on_disk().unwrap_or(0)
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
        self.inner.db.flush().map_err(io)?;
        Ok(())
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
    fn load(&self) -> Result<(), StorageError> {
        if let Some(v) = self.chunks.get(LOG_SEQ_KEY).map_err(io)? {
            let seq = v
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt("log sequence is not 8 bytes".into()))?;
            self.applied_log_seq.store(seq, Ordering::Relaxed);
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
            st.services.insert((tenant, name), ServiceDict::new(id));
        }
        let by_id = |id: u32| -> Result<(Tenant, String), StorageError> {
            names
                .get(&id)
                .cloned()
                .ok_or_else(|| StorageError::Corrupt(format!("dictionary of unknown service {id}")))
        };
        let legacy = !self.legacy_frames.is_empty() || !self.legacy_nodes.is_empty();
        for kv in self.frame_blocks.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, block) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let dict = st.services.get_mut(&by_id(svc)?).expect("loaded above");
            for (i, frame) in blocks::decode_frames(&v)?.into_iter().enumerate() {
                dict.load_frame(check_dense(dict.frames.len(), block, i)?, frame);
            }
        }
        for kv in self.node_blocks.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, block) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let dict = st.services.get_mut(&by_id(svc)?).expect("loaded above");
            let first = block as usize * blocks::BLOCK;
            for (i, (parent, frame)) in blocks::decode_nodes(first, &v)?.into_iter().enumerate() {
                if first + i == 0 {
                    continue; // the root, which every dictionary starts with
                }
                dict.load_node(check_dense(dict.nodes.len(), block, i)?, parent, frame);
            }
        }
        for kv in self.legacy_frames.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, id) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let name = by_id(svc)?;
            let frame = String::from_utf8_lossy(&v).into_owned();
            st.services
                .get_mut(&name)
                .expect("loaded above")
                .load_frame(id, frame);
        }
        for kv in self.legacy_nodes.iter() {
            let (k, v) = kv.map_err(io)?;
            let (svc, id) = (u32_at(&k, 0)?, u32_at(&k, 4)?);
            let name = by_id(svc)?;
            let (parent, frame) = (u32_at(&v, 0)?, u32_at(&v, 4)?);
            st.services
                .get_mut(&name)
                .expect("loaded above")
                .load_node(id, parent, frame);
        }
        if legacy {
            // Rewrite every dictionary as blocks at the next apply, then drop the old keys.
            for dict in st.services.values_mut() {
                dict.persisted_frames = 0;
                dict.persisted_nodes = 0;
            }
            st.migrate_legacy = true;
        }
        for kv in self.series_tree.iter() {
            let (k, v) = kv.map_err(io)?;
            let id = u32_at(&k, 0)?;
            let rec: SeriesRecord = serde_json::from_slice(&v)
                .map_err(|e| StorageError::Corrupt(format!("series {id}: {e}")))?;
            if id as usize != st.series.len() {
                return Err(StorageError::Corrupt(format!(
                    "series ids not dense at {id}"
                )));
            }
            st.series_ids.insert(
                (
                    rec.tenant.clone(),
                    rec.info.labels.clone(),
                    rec.info.profile_type.clone(),
                ),
                id,
            );
            st.series.push(rec);
        }
        Ok(())
    }

    fn write(&self, tenant: &Tenant, profiles: Vec<Profile>) -> Result<(), StorageError> {
        self.write_seq(tenant, profiles, None)
    }

    /// Buffers `profiles` of `tenant`; `log_seq` is the write-ahead log record they come from,
    /// if any.
    fn write_seq(
        &self,
        tenant: &Tenant,
        profiles: Vec<Profile>,
        log_seq: Option<u64>,
    ) -> Result<(), StorageError> {
        // All or nothing: a bad profile must not leave half a batch behind.
        for p in &profiles {
            p.validate().map_err(StorageError::Invalid)?;
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if log_seq.is_some() {
            st.buffered_log_seq = log_seq;
        }
        let mut stacks: FxHashMap<u32, i64> = FxHashMap::default();
        let mut frame_map: Vec<u32> = Vec::new();
        // Stack node of each sample of the previous profile: a pprof with several sample types
        // arrives as consecutive profiles with identical frames and stacks, resolved once.
        let mut sample_nodes: Vec<u32> = Vec::new();
        let mut previous: Option<Profile> = None;
        for p in profiles {
            let service = p.labels.service_name().expect("validated").to_string();
            let same_stacks = previous.as_ref().is_some_and(|q| {
                q.labels.service_name() == p.labels.service_name()
                    && q.frames == p.frames
                    && q.samples.len() == p.samples.len()
                    && q.samples
                        .iter()
                        .zip(&p.samples)
                        .all(|(a, b)| a.stack == b.stack)
            });
            if !same_stacks {
                let next_service = st.services.len() as u32;
                let dict = st
                    .services
                    .entry((tenant.clone(), service.clone()))
                    .or_insert_with(|| ServiceDict::new(next_service));
                frame_map.clear();
                frame_map.extend(p.frames.iter().map(|f| dict.frame(f)));
                sample_nodes.clear();
                for s in &p.samples {
                    let mut node = 0;
                    for &f in &s.stack {
                        node = dict.node(node, frame_map[f as usize]);
                    }
                    sample_nodes.push(node);
                }
            }
            stacks.clear();
            for (s, &node) in p.samples.iter().zip(&sample_nodes) {
                *stacks.entry(node).or_default() += s.value;
            }
            let key = (tenant.clone(), p.labels.clone(), p.profile_type.clone());
            let series = match st.series_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = st.series.len() as u32;
                    st.series.push(SeriesRecord {
                        tenant: tenant.clone(),
                        info: SeriesInfo {
                            labels: p.labels.clone(),
                            profile_type: p.profile_type.clone(),
                            spy_name: p.meta.spy_name.clone(),
                            sample_rate: p.meta.sample_rate,
                        },
                        service,
                        first_ns: p.start_ns,
                        last_ns: p.start_ns,
                    });
                    st.series_ids.insert(key, id);
                    st.dirty_series.insert(id);
                    id
                }
            };
            let rec = &mut st.series[series as usize];
            if p.start_ns < rec.first_ns || p.start_ns > rec.last_ns {
                rec.first_ns = rec.first_ns.min(p.start_ns);
                rec.last_ns = rec.last_ns.max(p.start_ns);
                st.dirty_series.insert(series);
            }
            let t = (p.start_ns.max(0) / NS) as u64;
            for (level, &(res, _)) in self.levels.iter().enumerate() {
                let pending = st
                    .buffer
                    .entry((series, level as u8, t / res * res))
                    .or_default();
                pending.profiles += 1;
                for (&node, &v) in &stacks {
                    *pending.values.entry(node).or_default() += v;
                }
            }
            previous = Some(p);
        }
        Ok(())
    }

    /// Applies the write buffer to sled (without fsync).
    fn apply(&self) -> Result<(), StorageError> {
        let _apply = self.apply_lock.lock();
        let mut services = sled::Batch::default();
        let mut tenant_services = sled::Batch::default();
        let mut frames = sled::Batch::default();
        let mut nodes = sled::Batch::default();
        let mut series = sled::Batch::default();
        let migrate;
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
                if dict.persisted_frames == 0 && dict.persisted_nodes <= 1 {
                    if tenant.is_default() {
                        services.insert(name.as_bytes(), &dict.id.to_be_bytes());
                    } else {
                        let key = [tenant.as_str().as_bytes(), b"\0", name.as_bytes()].concat();
                        tenant_services.insert(key, &dict.id.to_be_bytes());
                    }
                }
                for (b, range) in blocks::dirty_blocks(dict.persisted_frames, dict.frames.len()) {
                    frames.insert(
                        &blocks::block_key(dict.id, b),
                        blocks::encode_frames(&dict.frames[range]),
                    );
                }
                for (b, range) in blocks::dirty_blocks(dict.persisted_nodes, dict.nodes.len()) {
                    let first = range.start;
                    nodes.insert(
                        &blocks::block_key(dict.id, b),
                        blocks::encode_nodes(first, &dict.nodes[range]),
                    );
                }
                dict.persisted_frames = dict.frames.len();
                dict.persisted_nodes = dict.nodes.len();
            }
            let dirty: Vec<u32> = st.dirty_series.drain().collect();
            for id in dirty {
                let rec = serde_json::to_vec(&st.series[id as usize]).expect("series serialize");
                series.insert(&id.to_be_bytes(), rec);
            }
            migrate = std::mem::take(&mut st.migrate_legacy);
            (std::mem::take(&mut st.buffer), st.buffered_log_seq.take())
        };
        // Dictionaries first: a chunk never refers to a stack that is not on disk.
        self.services_tree.apply_batch(services).map_err(io)?;
        self.tenant_services
            .apply_batch(tenant_services)
            .map_err(io)?;
        self.frame_blocks.apply_batch(frames).map_err(io)?;
        self.node_blocks.apply_batch(nodes).map_err(io)?;
        if migrate {
            self.legacy_frames.clear().map_err(io)?;
            self.legacy_nodes.clear().map_err(io)?;
        }
        self.series_tree.apply_batch(series).map_err(io)?;
        let mut chunks = sled::Batch::default();
        for ((series, level, bucket), pending) in buffer {
            let key = chunk_key(series, level, bucket);
            let mut entries: Vec<(u32, i64)> = pending.values.into_iter().collect();
            entries.sort_unstable_by_key(|e| e.0);
            let mut column = Column {
                profiles: pending.profiles,
                entries,
            };
            if let Some(old) = self.chunks.get(key).map_err(io)? {
                let mut old = Column::decode(&old)?;
                old.merge(&column);
                column = old;
            }
            chunks.insert(&key, column.encode());
        }
        if let Some(seq) = log_seq {
            chunks.insert(&LOG_SEQ_KEY, &seq.to_be_bytes());
        }
        self.chunks.apply_batch(chunks).map_err(io)?;
        if let Some(seq) = log_seq {
            self.applied_log_seq.store(seq, Ordering::Relaxed);
        }
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
        if a >= b {
            self.plan(level - 1, start_s, end_s, now_s, out);
            return;
        }
        out.push((level, a, b));
        let finer_from = now_s - self.levels[level - 1].1 as i64;
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
                    && selector.is_none_or(|s| s.matches(&r.info.labels, &r.info.profile_type))
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
        for (service, ids) in by_service {
            let mut values: Vec<i64> = Vec::new();
            for &id in &ids {
                for &(level, from, to) in &plan {
                    let lo = chunk_key(id, level as u8, from.max(0) as u64);
                    let hi = chunk_key(id, level as u8, to.max(0) as u64);
                    for kv in self.chunks.range(lo..hi) {
                        let (_, v) = kv.map_err(io)?;
                        let col = Column::decode(&v)?;
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
            let st = self.state.lock();
            let dict = st
                .services
                .get(&(tenant.clone(), service.to_string()))
                .ok_or_else(|| StorageError::Corrupt(format!("no dictionary for {service}")))?;
            trees.push(build_tree(dict, &values)?);
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
        let step_s = (step_ns / NS).max(1);
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
                .map(|g| rec.info.labels.get(g).unwrap_or("").to_string())
                .unwrap_or_default();
            let line = out.entry(group).or_insert_with(|| vec![0; points]);
            let average = rec.info.profile_type.aggregation == Aggregation::Average;
            let mut covered_until = end_s;
            for level in first..self.levels.len() {
                let (res, retention) = self.levels[level];
                let from = if level + 1 == self.levels.len() {
                    start_s
                } else {
                    start_s.max(now_s - retention as i64)
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
                        let (profiles, total) = Column::decode_header(&v)?;
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
            let mut batch = sled::Batch::default();
            for id in 0..series {
                for kv in self
                    .chunks
                    .range(chunk_key(id, level as u8, 0)..chunk_key(id, level as u8, cutoff))
                {
                    let (k, _) = kv.map_err(io)?;
                    batch.remove(k);
                    report.chunks_deleted += 1;
                }
            }
            self.chunks.apply_batch(batch).map_err(io)?;
        }
        Ok(report)
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
        let mut deleted = 0;
        for id in ids {
            let mut batch = sled::Batch::default();
            for kv in self
                .chunks
                .range(chunk_key(id, 0, 0)..chunk_key(id, u8::MAX, u64::MAX))
            {
                batch.remove(kv.map_err(io)?.0);
                deleted += 1;
            }
            self.chunks.apply_batch(batch).map_err(io)?;
            // The series keeps its id (ids are dense) but no longer matches anything.
            let mut st = self.state.lock();
            st.series[id as usize].last_ns = i64::MIN / 2;
            st.series[id as usize].first_ns = i64::MAX / 2;
            st.dirty_series.insert(id);
        }
        Ok(deleted)
    }
}

/// Builds the tree of the nodes with a value and their ancestors.
fn build_tree(dict: &ServiceDict, values: &[i64]) -> Result<Tree, StorageError> {
    let n = dict.nodes.len();
    if values.len() > n {
        return Err(StorageError::Corrupt(format!(
            "a chunk references stack {} but the service has {n}",
            values.len() - 1
        )));
    }
    const UNSEEN: u32 = u32::MAX;
    const WANTED: u32 = u32::MAX - 1;
    let mut index = vec![UNSEEN; n];
    index[0] = 0;
    for (id, &v) in values.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let mut node = id;
        while index[node] == UNSEEN {
            index[node] = WANTED;
            node = dict.nodes[node].0 as usize;
        }
    }
    // Frames are function names, or (function, file, line) since lines are kept: the tree has
    // lines when the service has located frames (see `Tree::by_function` for the grouped view).
    // Each dict node is one (parent, frame), so each becomes one tree node.
    let with_lines = dict.has_locations;
    let mut tree = Tree::default();
    tree.nodes[0].self_value = values.first().copied().unwrap_or(0);
    if with_lines {
        tree.files.push(String::new());
        tree.lines.push(SourceLine::default());
    }
    let mut name_of_function: FxHashMap<&str, u32> = FxHashMap::default();
    let mut file_ids: FxHashMap<&str, u32> = FxHashMap::default();
    for id in 1..n {
        if index[id] != WANTED {
            continue;
        }
        let (parent, frame) = dict.nodes[id];
        let f = dict::split_frame_key(&dict.frames[frame as usize]);
        let name = *name_of_function.entry(f.function).or_insert_with(|| {
            tree.names.push(f.function.to_string());
            tree.names.len() as u32 - 1
        });
        index[id] = tree.nodes.len() as u32;
        tree.nodes.push(TreeNode {
            parent: index[parent as usize],
            name,
            self_value: values.get(id).copied().unwrap_or(0),
            total: 0,
        });
        if with_lines {
            let file = match f.file {
                "" => 0,
                file => *file_ids.entry(file).or_insert_with(|| {
                    tree.files.push(file.to_string());
                    tree.files.len() as u32 - 1
                }),
            };
            tree.lines.push(SourceLine {
                file,
                line: f.line,
                start_line: f.start_line,
            });
        }
    }
    tree.compute_totals();
    Ok(tree)
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
        profiles: Vec<Profile>,
    ) -> Result<(), StorageError> {
        let t = tenant.clone();
        self.blocking(move |i| i.write_seq(&t, profiles, Some(seq)))
            .await
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
            .map(|(_, r)| r.info)
            .collect())
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.blocking(|i| {
            i.apply()?;
            i.db.flush().map_err(io)?;
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
}

#[cfg(test)]
mod tests;
