//! The entries of one dictionary (its frames, or its stack nodes) as far as they are in memory:
//! whole blocks of [`BLOCK`] entries ([`crate::blocks`]), each read from disk when first needed
//! and dropped again, least recently used first, once every entry in it is on disk.
//!
//! Entries not yet on disk (from `persisted` on) are never dropped: the blocks holding them are
//! rewritten whole at the next apply.

use rustc_hash::FxHashMap;

use crate::blocks::BLOCK;

/// What an entry costs resident, estimated.
pub trait EntryBytes {
    fn entry_bytes(&self) -> usize;
}

impl EntryBytes for String {
    /// The bytes, the `String` in its block's `Vec`, the allocator's rounding.
    fn entry_bytes(&self) -> usize {
        self.len() + 32
    }
}

impl EntryBytes for (u32, u32) {
    fn entry_bytes(&self) -> usize {
        8
    }
}

/// What a resident block costs beside its entries (the `Vec`, the map's slot).
const BLOCK_OVERHEAD_BYTES: usize = 64;

struct Block<T> {
    entries: Vec<T>,
    bytes: usize,
    last_used: u64,
}

pub struct Pages<T> {
    len: usize,
    persisted: usize,
    blocks: FxHashMap<u32, Block<T>>,
    bytes: usize,
}

impl<T: EntryBytes> Pages<T> {
    /// A new dictionary's entries: `first` (e.g. the root node), counted as on disk.
    pub fn new(first: Vec<T>) -> Self {
        let mut pages = Self::on_disk(0);
        for e in first {
            pages.push(e, 0).expect("block 0 is new");
        }
        pages.persisted = pages.len;
        pages
    }

    /// `len` entries, all on disk, none resident.
    pub fn on_disk(len: usize) -> Self {
        Self {
            len,
            persisted: len,
            blocks: FxHashMap::default(),
            bytes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Counts every entry as unwritten (to rewrite them all).
    pub fn forget_persisted(&mut self) {
        self.persisted = 0;
    }

    pub fn mark_persisted(&mut self) {
        self.persisted = self.len;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_resident(&self, block: u32) -> bool {
        self.blocks.contains_key(&block)
    }

    /// Entry `id`, if its block is resident.
    pub fn get(&mut self, id: usize, uses: u64) -> Option<&T> {
        let b = self.blocks.get_mut(&((id / BLOCK) as u32))?;
        b.last_used = uses;
        b.entries.get(id % BLOCK)
    }

    /// Makes `entries` (read from disk) block `block`'s.
    pub fn insert_block(&mut self, block: u32, entries: Vec<T>, uses: u64) {
        let bytes = BLOCK_OVERHEAD_BYTES + entries.iter().map(T::entry_bytes).sum::<usize>();
        self.bytes += bytes;
        if let Some(old) = self.blocks.insert(
            block,
            Block {
                entries,
                bytes,
                last_used: uses,
            },
        ) {
            self.bytes -= old.bytes;
        }
    }

    /// The block the next entry goes to, when it holds entries already but is not resident:
    /// it must be read before [`Pages::push`].
    pub fn block_to_read_for_push(&self) -> Option<u32> {
        let b = (self.len / BLOCK) as u32;
        (!self.len.is_multiple_of(BLOCK) && !self.blocks.contains_key(&b)).then_some(b)
    }

    /// Appends an entry; its id is the old length. `None` if its block was not read first.
    pub fn push(&mut self, entry: T, uses: u64) -> Option<usize> {
        let id = self.len;
        let b = (id / BLOCK) as u32;
        if id.is_multiple_of(BLOCK) && !self.blocks.contains_key(&b) {
            self.blocks.insert(
                b,
                Block {
                    entries: Vec::with_capacity(BLOCK.min(64)),
                    bytes: BLOCK_OVERHEAD_BYTES,
                    last_used: uses,
                },
            );
            self.bytes += BLOCK_OVERHEAD_BYTES;
        }
        let block = self.blocks.get_mut(&b)?;
        let bytes = entry.entry_bytes();
        block.entries.push(entry);
        block.bytes += bytes;
        block.last_used = uses;
        self.bytes += bytes;
        self.len += 1;
        Some(id)
    }

    /// The blocks holding entries not yet on disk, whole: `(block, entries)`.
    pub fn dirty(&self) -> impl Iterator<Item = (u32, &[T])> {
        crate::blocks::dirty_blocks(self.persisted, self.len).map(|(b, _)| {
            let entries = self
                .blocks
                .get(&b)
                .map(|b| b.entries.as_slice())
                .expect("blocks with unwritten entries stay resident");
            (b, entries)
        })
    }

    /// Resident blocks whose entries are all on disk: `(last used, block)`.
    pub fn clean(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.blocks
            .iter()
            .filter(|(&b, _)| ((b as usize + 1) * BLOCK).min(self.len) <= self.persisted)
            .map(|(&b, block)| (block.last_used, b))
    }

    /// Drops a block from memory; returns the bytes it held.
    pub fn evict(&mut self, block: u32) -> usize {
        let freed = self.blocks.remove(&block).map_or(0, |b| b.bytes);
        self.bytes -= freed;
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_with_unwritten_entries_stay_and_written_ones_may_go() {
        let mut p: Pages<(u32, u32)> = Pages::new(vec![(0, u32::MAX)]);
        for i in 0..BLOCK + 10 {
            p.push((0, i as u32), 1).unwrap();
        }
        assert_eq!(p.len(), BLOCK + 11);
        assert_eq!(p.clean().count(), 0);
        assert_eq!(
            p.dirty().map(|(b, e)| (b, e.len())).collect::<Vec<_>>(),
            vec![(0, BLOCK), (1, 11)]
        );
        p.mark_persisted();
        assert_eq!(p.clean().count(), 2);
        let before = p.bytes();
        assert!(p.evict(1) > 0 && p.bytes() < before);
        // The next entry goes to block 1, which holds entries on disk: it must be read first.
        assert_eq!(p.block_to_read_for_push(), Some(1));
        assert_eq!(p.push((0, 7), 2), None);
        assert_eq!(p.get(3, 2), Some(&(0, 2)));
        assert_eq!(p.get(BLOCK + 3, 2), None);
    }
}
