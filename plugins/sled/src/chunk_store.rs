//! Where chunks live: the finest level in an LSM tree ([fjall], the data directory's `chunks`
//! folder), the coarser levels in sled's `chunks` tree.
//!
//! Why the finest level leaves sled: a day of one series is ~17,000 small ordered values
//! written once each, and sled wrote them into 2.4–2.8× their size (each insert a fragment of
//! its leaf, leaves rewritten as they fill and split, a log segment reused only once half of it
//! is free; BENCHMARKS.md, the core-day). An LSM tree writes each to its journal once and to a
//! sorted table once per compaction, so the directory stays near the live bytes. Coarse chunks
//! are the opposite: a few keys per series and day, each rewritten at every apply that touches
//! it. In an LSM tree every rewrite is a version kept until a compaction drops it; sled reuses
//! their space as it goes, so they stay there.
//!
//! Two stores, so an apply is an atomic batch in each, the finest level's first
//! ([`ChunkStore::apply`]). Each records the last write-ahead log record it holds
//! ([`Applied`]); after a crash between the two, the log is replayed from the older one, each
//! record only into the levels that lack it.
//! sled's dictionaries are flushed before either batch, so no chunk on disk refers to a stack
//! that is not. Retention removes finest chunks last, once the coarse chunks that referred to
//! them hold their columns.

use std::ops::{Bound, Deref, RangeBounds};
use std::path::Path;

use fjall::{CompressionType, PartitionCreateOptions, PersistMode, Slice};
use kiln_plugin_api::StorageError;

use crate::error::io;

/// The finest level's memtable: what is written since the last sorted table, in memory and in
/// the journal (rotated with it). Kiln's own write buffer already batches writes. It also sets
/// what the files hold beyond the live chunks: the journal, and the tables flushed since the
/// last compactions, with chunks deleted since, a few memtables' worth: a day of data bounded
/// by `max_disk_bytes` to 350 KB kept 2–11 MB of files over 24 more days of data at 2 MiB (at
/// 8 MiB it had grown to 5 MB after 6 days, nothing compacted yet). Under the side-by-side
/// load a table is written every few seconds.
const MEMTABLE_BYTES: u32 = 2 << 20;

/// The smallest bound on journals fjall accepts: past it, memtables are flushed so that
/// journals can go.
const JOURNAL_BYTES: u64 = 24 << 20;

/// The folder of a data directory that holds the finest level.
pub(crate) const DIR: &str = "chunks";

/// Where each store keeps the last log record applied to it: a 13-byte key no chunk has (its
/// level byte is 255).
pub(crate) const LOG_SEQ_KEY: [u8; 13] = [0xff; 13];

/// A key of the finest level: `series (4) | level (1) | bucket (8)`, level 0.
fn is_finest(key: &[u8]) -> bool {
    key.len() == 13 && key[4] == 0
}

/// A stored value, from either store.
pub(crate) enum Value {
    Sled(sled::IVec),
    Lsm(Slice),
}

impl Deref for Value {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Value::Sled(v) => v,
            Value::Lsm(v) => v,
        }
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// The last write-ahead log record each store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub finest: u64,
    pub coarse: u64,
}

/// Every series' chunks, keyed by [`crate::chunk_key`].
pub(crate) struct ChunkStore {
    path: std::path::PathBuf,
    lsm: fjall::Keyspace,
    finest: fjall::PartitionHandle,
    coarse: sled::Tree,
}

/// Inserts and removals applied together ([`ChunkStore::apply`]). A finest key is not both
/// inserted and removed in one batch.
#[derive(Default)]
pub(crate) struct ChunkBatch {
    finest: Vec<(Slice, Slice)>,
    finest_removals: Vec<Slice>,
    coarse: sled::Batch,
    coarse_ops: usize,
}

impl ChunkBatch {
    pub(crate) fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let key = key.as_ref();
        if is_finest(key) {
            self.finest
                .push((Slice::from(key), Slice::from(value.as_ref())));
        } else {
            self.coarse.insert(key, value.as_ref());
            self.coarse_ops += 1;
        }
    }

    pub(crate) fn remove(&mut self, key: impl AsRef<[u8]>) {
        let key = key.as_ref();
        if is_finest(key) {
            self.finest_removals.push(Slice::from(key));
        } else {
            self.coarse.remove(key);
            self.coarse_ops += 1;
        }
    }

    /// Records in both stores the last log record the batch holds (`packed`: its sequence
    /// number, packed as the storage packs values).
    pub(crate) fn set_log_seq(&mut self, packed: impl AsRef<[u8]>) {
        self.finest
            .push((Slice::from(&LOG_SEQ_KEY[..]), Slice::from(packed.as_ref())));
        self.coarse.insert(&LOG_SEQ_KEY, packed.as_ref());
        self.coarse_ops += 1;
    }
}

impl ChunkStore {
    /// Opens the chunks of the data directory `dir`: the finest level in its `chunks` folder
    /// (created if missing), the others in sled's tree `coarse`. `compress`: whether the
    /// finest level's blocks are compressed (values packed by Kiln are not worth it);
    /// `cache_bytes`: its block cache.
    pub(crate) fn open(
        dir: &Path,
        coarse: sled::Tree,
        cache_bytes: u64,
        compress: bool,
    ) -> Result<Self, StorageError> {
        let path = dir.join(DIR);
        let lsm = fjall::Config::new(&path)
            .cache_size(cache_bytes)
            .max_journaling_size(JOURNAL_BYTES)
            // One flush and one compaction at a time: ingest keeps the cores.
            .flush_workers(1)
            .compaction_workers(1)
            // Kiln syncs when it flushes; nothing is left to a timer.
            .fsync_ms(None)
            .open()
            .map_err(|e| StorageError::Io(format!("opening {}: {e}", path.display())))?;
        let finest = lsm
            .open_partition(
                DIR,
                PartitionCreateOptions::default()
                    .max_memtable_size(MEMTABLE_BYTES)
                    .compression(if compress {
                        CompressionType::Lz4
                    } else {
                        CompressionType::None
                    }),
            )
            .map_err(io)?;
        Ok(Self {
            path,
            lsm,
            finest,
            coarse,
        })
    }

    /// Data directories written before the finest level left sled kept it in sled's tree:
    /// it moves out once, with the log position. Safe to stop at any point: nothing else is
    /// written before the move completes, and a second pass copies the same values again.
    /// Returns the chunks moved.
    pub(crate) fn move_finest_out_of_sled(&self, db: &sled::Db) -> Result<u64, StorageError> {
        if self.finest.get(LOG_SEQ_KEY).map_err(io)?.is_some() {
            // Written by this layout (or moved already): sled holds no finest chunk.
            return Ok(0);
        }
        let (mut moved, mut bytes) = (0u64, 0usize);
        let mut batch = self.lsm.batch();
        for kv in self.coarse.range(..[0xff; 13]) {
            let (k, v) = kv.map_err(io)?;
            if is_finest(&k) {
                bytes += k.len() + v.len();
                batch.insert(&self.finest, &*k, &*v);
                moved += 1;
                if bytes > 4 << 20 {
                    batch.commit().map_err(io)?;
                    (batch, bytes) = (self.lsm.batch(), 0);
                }
            }
        }
        // Last: its presence says the move is complete.
        if let Some(seq) = self.coarse.get(LOG_SEQ_KEY).map_err(io)? {
            batch.insert(&self.finest, &LOG_SEQ_KEY[..], &*seq);
        }
        batch.commit().map_err(io)?;
        self.lsm.persist(PersistMode::SyncAll).map_err(io)?;
        if moved > 0 {
            let mut removals = sled::Batch::default();
            for kv in self.coarse.range(..[0xff; 13]) {
                let (k, _) = kv.map_err(io)?;
                if is_finest(&k) {
                    removals.remove(k);
                }
            }
            self.coarse.apply_batch(removals).map_err(io)?;
            db.flush().map_err(io)?;
        }
        Ok(moved)
    }

    /// The last log record each store holds (packed as the codec packs values).
    pub(crate) fn applied(
        &self,
        unpack: impl Fn(&[u8]) -> Result<u64, StorageError>,
    ) -> Result<Applied, StorageError> {
        let finest = match self.finest.get(LOG_SEQ_KEY).map_err(io)? {
            Some(v) => unpack(&v)?,
            None => 0,
        };
        let coarse = match self.coarse.get(LOG_SEQ_KEY).map_err(io)? {
            Some(v) => unpack(&v)?,
            None => 0,
        };
        Ok(Applied { finest, coarse })
    }

    pub(crate) fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, StorageError> {
        let key = key.as_ref();
        Ok(if is_finest(key) {
            self.finest.get(key).map_err(io)?.map(Value::Lsm)
        } else {
            self.coarse.get(key).map_err(io)?.map(Value::Sled)
        })
    }

    /// Chunks with keys in `range`, the finest level's first, each store's in key order.
    pub(crate) fn range<R: RangeBounds<[u8; 13]> + Clone + 'static>(
        &self,
        range: R,
    ) -> impl Iterator<Item = Result<(Value, Value), StorageError>> + '_ {
        // Within one series, the levels the range covers tell which store to read.
        let (reaches_finest, reaches_coarse) = match (range.start_bound(), range.end_bound()) {
            (
                Bound::Included(lo) | Bound::Excluded(lo),
                Bound::Included(hi) | Bound::Excluded(hi),
            ) if lo[..4] == hi[..4] => (lo[4] == 0, hi[4] > 0),
            _ => (true, true),
        };
        let finest = reaches_finest.then(|| {
            self.finest
                .range(range.clone())
                .filter(|kv| !matches!(kv, Ok((k, _)) if !is_finest(k)))
                .map(|kv| kv.map(|(k, v)| (Value::Lsm(k), Value::Lsm(v))).map_err(io))
        });
        let coarse = reaches_coarse.then(|| {
            self.coarse
                .range(range)
                .filter(|kv| !matches!(kv, Ok((k, _)) if **k == LOG_SEQ_KEY))
                .map(|kv| {
                    kv.map(|(k, v)| (Value::Sled(k), Value::Sled(v)))
                        .map_err(io)
                })
        });
        finest
            .into_iter()
            .flatten()
            .chain(coarse.into_iter().flatten())
    }

    /// Every chunk.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Result<(Value, Value), StorageError>> + '_ {
        self.range::<std::ops::RangeFull>(..)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Applies `batch` in three atomic steps, each on disk before the next: the finest
    /// level's inserts (coarse chunks may refer to them), the coarse part, then the finest
    /// level's removals (coarse chunks that referred to them got their columns in the coarse
    /// part). A crash after the first step leaves it, and [`Applied`] says so; one after the
    /// second leaves finest chunks that the next retention pass deletes again.
    pub(crate) fn apply(&self, batch: ChunkBatch) -> Result<(), StorageError> {
        if !batch.finest.is_empty() {
            let mut b = self.lsm.batch().durability(Some(PersistMode::SyncData));
            for (key, value) in batch.finest {
                b.insert(&self.finest, key, value);
            }
            b.commit().map_err(io)?;
        }
        if batch.coarse_ops > 0 {
            self.coarse.apply_batch(batch.coarse).map_err(io)?;
        }
        if !batch.finest_removals.is_empty() {
            if batch.coarse_ops > 0 {
                // sled writes a batch when it flushes, the journal at once.
                self.coarse.flush().map_err(io)?;
            }
            let mut b = self.lsm.batch();
            for key in batch.finest_removals {
                b.remove(&self.finest, key);
            }
            b.commit().map_err(io)?;
        }
        Ok(())
    }

    /// Makes the finest level's applied batches durable (sled's are flushed with sled).
    pub(crate) fn persist(&self) -> Result<(), StorageError> {
        self.lsm.persist(PersistMode::SyncAll).map_err(io)
    }

    /// Bytes the finest level takes on disk: the blocks its files occupy. (fjall's own figure
    /// counts its journal at the length it preallocates, up to 32 MiB more than it holds.)
    pub(crate) fn finest_disk_space(&self) -> u64 {
        fn allocated(dir: &Path) -> u64 {
            use std::os::unix::fs::MetadataExt;
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => allocated(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        }
        allocated(&self.path)
    }
}
