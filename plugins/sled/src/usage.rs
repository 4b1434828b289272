//! What the data directory holds, per tenant, service and level, and retention by size.
//!
//! Bytes are counted as sled stores them: each chunk's key plus its value (packed by Kiln, or
//! as they are when sled compresses pages). That is the logical size of what is live; the files
//! on disk follow it with a lag, because sled frees space by rewriting segments whose pages
//! went stale, not when a key is removed (see `docs/storage.md`). Retention by size decides on
//! these logical bytes, which deletes change at once, so one pass never deletes more than it
//! must while the files catch up.
//!
//! The first [`Inner::usage`] scans every chunk once; from then on every change to `chunks`
//! (applies, retention, deletes) adjusts the counts by the lengths it replaced, under the apply
//! lock, so later calls read the counts and scan only the dictionaries and series records.

use std::sync::atomic::Ordering;

use kiln_plugin_api::{RetentionReport, StorageError, StorageUsage, UsageEntry};
use rustc_hash::FxHashMap;

use crate::error::io;
use crate::{chunk_key, Inner, LOG_SEQ_KEY};

/// A chunk key's parts: series id, level, bucket (seconds).
pub(crate) fn parse_key(k: &[u8]) -> Option<(u32, u8, u64)> {
    if k.len() != 13 || k == LOG_SEQ_KEY {
        return None;
    }
    Some((
        u32::from_be_bytes(k[..4].try_into().ok()?),
        k[4],
        u64::from_be_bytes(k[5..13].try_into().ok()?),
    ))
}

/// Bytes and chunks per `(series, level)`: a flat table indexed by series id (ids are dense),
/// one cell per configured level. With tens of thousands of series a hash map of the same
/// counts took several times the memory, and doubled it while growing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounting {
    levels: usize,
    cells: Vec<(i64, i64)>,
    /// Levels past the configured ones (a data directory written with more levels).
    other: FxHashMap<(u32, u8), (i64, i64)>,
}

impl Accounting {
    pub(crate) fn new(levels: usize) -> Self {
        Self {
            levels,
            ..Self::default()
        }
    }

    fn add(&mut self, series: u32, level: u8, bytes: i64, chunks: i64) {
        if (level as usize) < self.levels {
            let i = series as usize * self.levels + level as usize;
            if i >= self.cells.len() {
                self.cells.resize(i + 1, (0, 0));
            }
            let cell = &mut self.cells[i];
            *cell = (cell.0 + bytes, cell.1 + chunks);
            if cell.1 <= 0 {
                *cell = (0, 0);
            }
        } else {
            let cell = self.other.entry((series, level)).or_default();
            *cell = (cell.0 + bytes, cell.1 + chunks);
            if cell.1 <= 0 {
                self.other.remove(&(series, level));
            }
        }
    }

    /// `((series, level), (bytes, chunks))` of every `(series, level)` holding chunks.
    pub(crate) fn entries(&self) -> impl Iterator<Item = ((u32, u8), (i64, i64))> + '_ {
        let levels = self.levels.max(1);
        self.cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.1 > 0)
            .map(move |(i, &c)| (((i / levels) as u32, (i % levels) as u8), c))
            .chain(self.other.iter().map(|(&k, &c)| (k, c)))
    }
}

/// Value lengths a batch replaced in `chunks`: `(key, before, after)`, `None` for no value.
#[derive(Default)]
pub(crate) struct Changes(Vec<([u8; 13], Option<usize>, Option<usize>)>);

impl Changes {
    pub(crate) fn push(&mut self, key: [u8; 13], before: Option<usize>, after: Option<usize>) {
        self.0.push((key, before, after));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push_removed(&mut self, key: &[u8], before: usize) {
        if let Ok(key) = key.try_into() {
            self.0.push((key, Some(before), None));
        }
    }
}

/// Bytes a chunk of a value of `len` bytes takes: its key and its value.
fn chunk_bytes(len: Option<usize>) -> (i64, i64) {
    len.map_or((0, 0), |l| ((13 + l) as i64, 1))
}

/// Every chunk's bytes, by series and level.
pub(crate) fn scan_chunks(
    chunks: &crate::ChunkStore,
    levels: usize,
) -> Result<Accounting, StorageError> {
    let mut per = Accounting::new(levels);
    for kv in chunks.iter() {
        let (k, v) = kv.map_err(io)?;
        if let Some((series, level, _)) = parse_key(&k) {
            per.add(series, level, (k.len() + v.len()) as i64, 1);
        }
    }
    Ok(per)
}

/// `10s`, `100s`, `1000s`: a level's name is its resolution.
fn level_name(resolution_s: u64) -> String {
    format!("{resolution_s}s")
}

fn tree_bytes(tree: &sled::Tree) -> Result<u64, StorageError> {
    let mut bytes = 0u64;
    for kv in tree.iter() {
        let (k, v) = kv.map_err(io)?;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok(bytes)
}

impl Inner {
    /// Adjusts the counts by what a batch applied to `chunks` replaced. Call with the apply lock
    /// held, after the batch is applied.
    pub(crate) fn account(&self, changes: Changes) {
        let mut accounting = self.accounting.lock();
        let Some(per) = accounting.as_mut() else {
            return;
        };
        for (key, before, after) in changes.0 {
            let Some((series, level, _)) = parse_key(&key) else {
                continue;
            };
            let (b0, c0) = chunk_bytes(before);
            let (b1, c1) = chunk_bytes(after);
            per.add(series, level, b1 - b0, c1 - c0);
        }
    }

    /// `read` of the counts per series and level, built by a scan the first time.
    fn with_chunk_accounting<T>(
        &self,
        read: impl FnOnce(&Accounting) -> T,
    ) -> Result<T, StorageError> {
        let mut accounting = self.accounting.lock();
        if accounting.is_none() {
            *accounting = Some(scan_chunks(&self.chunks, self.levels.len())?);
        }
        Ok(read(accounting.as_ref().expect("built above")))
    }

    /// Where retention by size stopped at `level` (0: it never ran there).
    pub(crate) fn size_floor(&self, level: usize) -> i64 {
        self.size_floors
            .get(level)
            .map_or(0, |f| f.load(Ordering::Relaxed))
    }

    /// Records that every bucket of `level` before `floor_s` is gone.
    fn raise_size_floor(&self, level: usize, floor_s: i64) -> Result<(), StorageError> {
        if floor_s > self.size_floor(level) {
            self.size_floors_tree
                .insert([level as u8], &floor_s.to_be_bytes())
                .map_err(io)?;
            self.size_floors[level].store(floor_s, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Bytes of the dictionary blocks: scanned the first time, then kept by every apply. Call
    /// with `apply_lock` held.
    fn dictionary_block_bytes(&self) -> Result<u64, StorageError> {
        let mut counted = self.dictionary_block_bytes.lock();
        if let Some(bytes) = *counted {
            return Ok(bytes);
        }
        let bytes = tree_bytes(&self.frame_blocks)? + tree_bytes(&self.node_blocks)?;
        *counted = Some(bytes);
        Ok(bytes)
    }

    /// What is stored per tenant, service and level. The first call scans every chunk and
    /// dictionary block; later ones read the counts kept since, and scan the series records and
    /// the small trees beside them.
    pub(crate) fn usage(&self) -> Result<StorageUsage, StorageError> {
        self.apply()?;
        // No apply, retention or delete changes `chunks` while this reads the counts.
        let _apply = self.apply_lock.lock();
        let owners: Vec<(String, String)> = {
            let st = self.state.lock();
            st.series
                .iter()
                .map(|r| (r.tenant.as_str().to_string(), r.service.clone()))
                .collect()
        };
        // Bytes and chunks per tenant, service and level, and the chunks' total.
        let (grouped, chunk_total) = self.with_chunk_accounting(|per| {
            let mut grouped: FxHashMap<(&str, &str, u8), (u64, u64)> = FxHashMap::default();
            let mut total = 0u64;
            for ((series, level), (bytes, chunks)) in per.entries() {
                let Some((tenant, service)) = owners.get(series as usize) else {
                    return Err(StorageError::Corrupt(format!(
                        "a chunk belongs to unknown series {series}"
                    )));
                };
                let e = grouped
                    .entry((tenant.as_str(), service.as_str(), level))
                    .or_default();
                e.0 += bytes.max(0) as u64;
                e.1 += chunks.max(0) as u64;
                total += bytes.max(0) as u64;
            }
            Ok((grouped, total))
        })??;
        // Shared by a service's levels: counted in the total, not in any entry.
        let mut total = chunk_total + self.dictionary_block_bytes()?;
        for tree in [
            &self.series_tree,
            &self.services_tree,
            &self.tenant_services,
            &self.legacy_frames,
            &self.legacy_nodes,
            &self.size_floors_tree,
            self.dicts.tree(),
        ] {
            total += tree_bytes(tree)?;
        }
        let mut entries: Vec<UsageEntry> = grouped
            .into_iter()
            .map(|((tenant, service, level), (bytes, chunks))| UsageEntry {
                tenant: tenant.to_string(),
                service: service.to_string(),
                level: self
                    .levels
                    .get(level as usize)
                    .map(|l| level_name(l.0))
                    .unwrap_or_else(|| format!("level {level}")),
                bytes,
                chunks,
            })
            .collect();
        // By tenant, service, then finest level first.
        let order: FxHashMap<String, usize> = self
            .levels
            .iter()
            .enumerate()
            .map(|(i, l)| (level_name(l.0), i))
            .collect();
        entries.sort_by(|a, b| {
            (&a.tenant, &a.service, order.get(&a.level)).cmp(&(
                &b.tenant,
                &b.service,
                order.get(&b.level),
            ))
        });
        Ok(StorageUsage {
            supported: true,
            total_bytes: total,
            disk_bytes: self.disk_bytes(),
            entries,
        })
    }

    /// Retention by size: past `max_bytes`, deletes the oldest buckets of the finest level
    /// (every series' chunks of a bucket together), then of the next level, until at most
    /// `target_bytes` are left or no chunk is.
    pub(crate) fn enforce_size(
        &self,
        max_bytes: u64,
        target_bytes: u64,
    ) -> Result<RetentionReport, StorageError> {
        let mut report = RetentionReport::default();
        let mut total = self.usage()?.total_bytes;
        if total <= max_bytes {
            return Ok(report);
        }
        // Writes keep buffering meanwhile; applying them waits, so no apply resolves a
        // reference to a finest chunk this pass removes.
        let _apply = self.apply_lock.lock();
        let series = self.state.lock().series.len() as u32;
        for level in 0..self.levels.len() as u8 {
            if total <= target_bytes {
                break;
            }
            // Every chunk of the level, oldest bucket first.
            let mut chunks: Vec<(u64, u32, usize)> = Vec::new();
            for id in 0..series {
                for kv in self
                    .chunks
                    .range(chunk_key(id, level, 0)..=chunk_key(id, level, u64::MAX))
                {
                    let (k, v) = kv.map_err(io)?;
                    if let Some((_, _, bucket)) = parse_key(&k) {
                        chunks.push((bucket, id, v.len()));
                    }
                }
            }
            chunks.sort_unstable();
            let mut batch = crate::ChunkBatch::default();
            let mut changes = Changes::default();
            let mut i = 0;
            let mut deleted_until = None;
            while i < chunks.len() && total > target_bytes {
                let bucket = chunks[i].0;
                // The whole bucket: no series keeps a time that another one lost.
                while i < chunks.len() && chunks[i].0 == bucket {
                    let (_, id, len) = chunks[i];
                    let key = chunk_key(id, level, bucket);
                    if level == 0 {
                        if let Some(column) = self.chunks.get(key).map_err(io)? {
                            total += self.materialize_references(
                                id,
                                &key,
                                &column,
                                &mut batch,
                                &mut changes,
                            )?;
                        }
                    }
                    changes.push(key, Some(len), None);
                    batch.remove(key);
                    total = total.saturating_sub((key.len() + len) as u64);
                    report.chunks_deleted += 1;
                    i += 1;
                }
                deleted_until = Some(bucket + self.levels[level as usize].0);
            }
            self.chunks.apply(batch).map_err(io)?;
            self.account(changes);
            // Queries read what is before it from coarser levels, as for retention by age.
            if let Some(until) = deleted_until {
                self.raise_size_floor(level as usize, until as i64)?;
            }
        }
        Ok(report)
    }
}
