//! Per-service dictionaries: interned frames and the stack tree whose node ids are the stack
//! ids stored in chunks. A node's parent always has a smaller id.
//!
//! A frame is stored as its function name alone when it has no source location — exactly the
//! format written before lines were kept, so older data dirs read unchanged — and as
//! `function NUL file NUL line` when it has one. Function names never contain NUL (a frame
//! whose name does is stored with the NUL replaced).

use std::sync::atomic::Ordering;

use kiln_plugin_api::{Frame, StorageError};

use crate::blocks::{self, BLOCK};
use crate::codec::Codec;
use crate::error::io;
use crate::lookup::Lookup;
use crate::pages::Pages;
use crate::{DICTIONARY_EVICTIONS, DICTIONARY_LOADS};

/// Separates a frame's function, file and line in its stored form.
const SEP: char = '\0';

/// The stored form of a frame; `keep_lines = false` stores the function alone.
#[cfg(test)]
pub fn frame_key(f: &Frame, keep_lines: bool) -> String {
    let mut key = String::new();
    write_frame_key(&mut key, f, keep_lines);
    key
}

/// [`frame_key`] into `out` (cleared first), so that a caller can reuse one buffer.
pub fn write_frame_key(out: &mut String, f: &Frame, keep_lines: bool) {
    out.clear();
    push_escaped(out, &f.function);
    if !keep_lines || (f.line == 0 && f.start_line == 0 && f.file.is_empty()) {
        return;
    }
    // Every frame of every push is keyed: `itoa` rather than `write!`'s formatting machinery.
    let mut digits = itoa::Buffer::new();
    out.push(SEP);
    push_escaped(out, &f.file);
    out.push(SEP);
    out.push_str(digits.format(f.line));
    out.push(SEP);
    out.push_str(digits.format(f.start_line));
}

/// `s` with the separator replaced, as stored keys never hold it inside a part.
fn push_escaped(out: &mut String, s: &str) {
    if s.contains(SEP) {
        out.push_str(&s.replace(SEP, "\u{fffd}"));
    } else {
        out.push_str(s);
    }
}

/// Whether a frame's stored form has a source location.
pub fn is_located(key: &str) -> bool {
    key.contains(SEP)
}

/// A stored frame: function, and its source location when it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredFrame<'a> {
    pub function: &'a str,
    pub file: &'a str,
    pub line: u32,
    pub start_line: u32,
}

/// A stored frame's parts (`""`, 0 where it has no location).
pub fn split_frame_key(key: &str) -> StoredFrame<'_> {
    let mut parts = key.splitn(4, SEP);
    let function = parts.next().unwrap_or("");
    let file = parts.next().unwrap_or("");
    let line = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    let start_line = parts.next().and_then(|l| l.parse().ok()).unwrap_or(0);
    StoredFrame {
        function,
        file,
        line,
        start_line,
    }
}

/// Where a dictionary's blocks are on disk.
#[derive(Clone, Copy)]
pub struct Disk<'a> {
    pub frames: &'a sled::Tree,
    pub nodes: &'a sled::Tree,
    pub codec: Codec,
}

impl Disk<'_> {
    fn read(
        &self,
        tree: &sled::Tree,
        dict: u32,
        block: u32,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        DICTIONARY_LOADS.fetch_add(1, Ordering::Relaxed);
        match tree.get(blocks::block_key(dict, block)).map_err(io)? {
            Some(v) => Ok(Some(self.codec.unpack(&v)?.into_owned())),
            None => Ok(None),
        }
    }

    fn frame_block(&self, dict: u32, block: u32) -> Result<Vec<String>, StorageError> {
        match self.read(self.frames, dict, block)? {
            Some(bytes) => Ok(blocks::decode_frames(&bytes)?),
            None => Err(missing("frame", dict, block)),
        }
    }

    fn node_block(&self, dict: u32, block: u32) -> Result<Vec<(u32, u32)>, StorageError> {
        let first = block as usize * BLOCK;
        match self.read(self.nodes, dict, block)? {
            Some(bytes) => {
                let nodes = blocks::decode_nodes(first, &bytes)?;
                for (i, &(parent, _)) in nodes.iter().enumerate() {
                    let id = first + i;
                    if id != 0 && parent as usize >= id {
                        return Err(StorageError::Corrupt(format!(
                            "dictionary {dict}: stack node {id} has parent {parent}"
                        )));
                    }
                }
                Ok(nodes)
            }
            // A dictionary whose only node is the root has not written it.
            None if block == 0 => Ok(vec![ROOT]),
            None => Err(missing("node", dict, block)),
        }
    }

    /// How many entries `tree` holds for `dict`: from its last block.
    fn len(
        &self,
        tree: &sled::Tree,
        dict: u32,
        decode: impl Fn(usize, &[u8]) -> Result<usize, StorageError>,
    ) -> Result<Option<usize>, StorageError> {
        let Some((k, v)) = tree
            .get_lt(blocks::block_key(dict.wrapping_add(1), 0))
            .map_err(io)?
            .filter(|(k, _)| k.len() == 8 && k[..4] == dict.to_be_bytes())
        else {
            return Ok(None);
        };
        let block = u32::from_be_bytes(k[4..8].try_into().expect("8-byte key")) as usize;
        let n = decode(block * BLOCK, &self.codec.unpack(&v)?)?;
        Ok(Some(block * BLOCK + n))
    }
}

fn missing(what: &str, dict: u32, block: u32) -> StorageError {
    StorageError::Corrupt(format!(
        "dictionary {dict}: {what} block {block} is missing"
    ))
}

const ROOT: (u32, u32) = (0, u32::MAX);

/// Frames and stack nodes of one service. Node 0 is the root (no frame). Only part of it need
/// be in memory: blocks of entries ([`Pages`]) to read ids back, and maps from entries to ids
/// ([`Lookup`]) to intern new ones.
pub struct ServiceDict {
    pub id: u32,
    /// Its name is on disk.
    pub registered: bool,
    /// Its lengths are known (read from its last blocks when first used after a start).
    known: bool,
    frames: Pages<String>,
    nodes: Pages<(u32, u32)>,
    frame_ids: Lookup<String>,
    node_ids: Lookup<(u32, u32)>,
    /// Where [`ServiceDict::frame`] builds the key it looks up: a frame already interned costs
    /// no allocation.
    key_buffer: String,
    /// When it was last used, in the storage's use counter: the least recent goes first.
    pub last_used: u64,
    /// When it was last used, in unix seconds, and whether it was released since.
    pub touched_s: i64,
    pub released: bool,
}

/// A block's place: frames or nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Frames,
    Nodes,
}

impl ServiceDict {
    pub fn new(id: u32) -> Self {
        Self {
            id,
            registered: false,
            known: true,
            frames: Pages::new(Vec::new()),
            nodes: Pages::new(vec![ROOT]),
            frame_ids: Lookup::default(),
            node_ids: Lookup::default(),
            key_buffer: String::new(),
            last_used: 0,
            touched_s: 0,
            released: false,
        }
    }

    /// A dictionary known by id whose entries are on disk.
    pub fn on_disk(id: u32) -> Self {
        Self {
            registered: true,
            known: false,
            frames: Pages::on_disk(0),
            nodes: Pages::on_disk(1),
            ..Self::new(id)
        }
    }

    /// Reads how many entries it has, once.
    pub fn ensure_known(&mut self, disk: Disk<'_>) -> Result<(), StorageError> {
        if self.known {
            return Ok(());
        }
        let frames = disk
            .len(disk.frames, self.id, |_, b| {
                Ok(blocks::decode_frames(b)?.len())
            })?
            .unwrap_or(0);
        let nodes = disk
            .len(disk.nodes, self.id, |first, b| {
                Ok(blocks::decode_nodes(first, b)?.len())
            })?
            .unwrap_or(1);
        self.frames = Pages::on_disk(frames);
        self.nodes = Pages::on_disk(nodes);
        self.known = true;
        Ok(())
    }

    pub fn frame_count(&self) -> usize {
        self.frames.len()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Memory the dictionary holds, estimated.
    pub fn resident_bytes(&self) -> usize {
        self.page_bytes() + self.lookup_bytes()
    }

    pub fn page_bytes(&self) -> usize {
        self.frames.bytes() + self.nodes.bytes()
    }

    pub fn lookup_bytes(&self) -> usize {
        self.frame_ids.bytes() + self.node_ids.bytes()
    }

    /// Anything of it is in memory.
    #[cfg(test)]
    pub fn is_resident(&self) -> bool {
        self.resident_bytes() > 0
    }

    /// What the whole dictionary would take resident, roughly.
    pub fn full_bytes(&self) -> usize {
        self.frames.len() * 112 + self.nodes.len() * 36
    }

    /// No entry can be found by content: new writes would copy what is on disk.
    pub fn lookups_empty(&self) -> bool {
        self.frame_ids.is_empty() && self.node_ids.is_empty()
    }

    /// Reads the blocks new entries go to, so that [`ServiceDict::frame`] and
    /// [`ServiceDict::node`] need no disk.
    pub fn prepare_append(&mut self, disk: Disk<'_>, uses: u64) -> Result<(), StorageError> {
        self.ensure_known(disk)?;
        if let Some(b) = self.frames.block_to_read_for_push() {
            let entries = disk.frame_block(self.id, b)?;
            self.frames.insert_block(b, entries, uses);
        }
        if let Some(b) = self.nodes.block_to_read_for_push() {
            let entries = disk.node_block(self.id, b)?;
            self.nodes.insert_block(b, entries, uses);
        }
        Ok(())
    }

    /// Reads every block and makes every entry findable: for a dictionary small enough to be
    /// whole in memory, so that writes find what is on disk rather than copy it.
    pub fn load_whole(&mut self, disk: Disk<'_>, uses: u64) -> Result<(), StorageError> {
        self.ensure_known(disk)?;
        for b in 0..self.frames.len().div_ceil(BLOCK) as u32 {
            if !self.frames.is_resident(b) {
                let entries = disk.frame_block(self.id, b)?;
                self.frames.insert_block(b, entries, uses);
            }
        }
        for b in 0..self.nodes.len().div_ceil(BLOCK) as u32 {
            if !self.nodes.is_resident(b) {
                let entries = disk.node_block(self.id, b)?;
                self.nodes.insert_block(b, entries, uses);
            }
        }
        for id in 0..self.frames.len() {
            let key = self.frames.get(id, uses).expect("read above").clone();
            self.frame_ids.insert(key, id as u32);
        }
        for id in 1..self.nodes.len() {
            let node = *self.nodes.get(id, uses).expect("read above");
            self.node_ids.insert(node, id as u32);
        }
        Ok(())
    }

    /// The id of `frame` (function, file and line), interned.
    pub fn frame(&mut self, frame: &Frame, uses: u64) -> Result<u32, StorageError> {
        let mut key = std::mem::take(&mut self.key_buffer);
        write_frame_key(&mut key, frame, true);
        let found = self.frame_ids.get(key.as_str());
        let id = match found {
            Some(id) => Ok(id),
            None => self.add_frame(key.clone(), uses),
        };
        self.key_buffer = key;
        id
    }

    /// The id of a frame in its stored form, interned ([`ServiceDict::prepare_append`] first).
    pub fn frame_key(&mut self, key: String, uses: u64) -> Result<u32, StorageError> {
        if let Some(id) = self.frame_ids.get(&key) {
            return Ok(id);
        }
        self.add_frame(key, uses)
    }

    /// Interns a frame key not found in the lookup.
    fn add_frame(&mut self, key: String, uses: u64) -> Result<u32, StorageError> {
        let id = self
            .frames
            .push(key.clone(), uses)
            .ok_or_else(|| unprepared(self.id))? as u32;
        self.frame_ids.insert(key, id);
        Ok(id)
    }

    /// The id of the stack node `frame` under `parent`, interned
    /// ([`ServiceDict::prepare_append`] first).
    pub fn node(&mut self, parent: u32, frame: u32, uses: u64) -> Result<u32, StorageError> {
        if let Some(id) = self.node_ids.get(&(parent, frame)) {
            return Ok(id);
        }
        let id = self
            .nodes
            .push((parent, frame), uses)
            .ok_or_else(|| unprepared(self.id))? as u32;
        self.node_ids.insert((parent, frame), id);
        Ok(id)
    }

    /// `(parent, frame)` of node `id`, read from disk if its block is not resident.
    pub fn node_at(
        &mut self,
        disk: Disk<'_>,
        id: u32,
        uses: u64,
    ) -> Result<(u32, u32), StorageError> {
        let id = id as usize;
        if id >= self.nodes.len() {
            return Err(StorageError::Corrupt(format!(
                "dictionary {}: stack {id} referenced but it has {}",
                self.id,
                self.nodes.len()
            )));
        }
        if let Some(&n) = self.nodes.get(id, uses) {
            return Ok(n);
        }
        let b = (id / BLOCK) as u32;
        let entries = disk.node_block(self.id, b)?;
        self.nodes.insert_block(b, entries, uses);
        self.nodes
            .get(id, uses)
            .copied()
            .ok_or_else(|| missing("node", self.id, b))
    }

    /// The stored form of frame `id`, read from disk if its block is not resident.
    pub fn frame_at(&mut self, disk: Disk<'_>, id: u32, uses: u64) -> Result<&str, StorageError> {
        let id = id as usize;
        if id >= self.frames.len() {
            return Err(StorageError::Corrupt(format!(
                "dictionary {}: frame {id} referenced but it has {}",
                self.id,
                self.frames.len()
            )));
        }
        let b = (id / BLOCK) as u32;
        if !self.frames.is_resident(b) {
            let entries = disk.frame_block(self.id, b)?;
            self.frames.insert_block(b, entries, uses);
        }
        self.frames
            .get(id, uses)
            .map(String::as_str)
            .ok_or_else(|| missing("frame", self.id, b))
    }

    /// The blocks with entries not on disk yet, encoded: `(kind, block, bytes)`.
    pub fn dirty_blocks(&self) -> Vec<(Kind, u32, Vec<u8>)> {
        let frames = self
            .frames
            .dirty()
            .map(|(b, e)| (Kind::Frames, b, blocks::encode_frames(e)));
        let nodes = self
            .nodes
            .dirty()
            .map(|(b, e)| (Kind::Nodes, b, blocks::encode_nodes(b as usize * BLOCK, e)));
        frames.chain(nodes).collect()
    }

    pub fn mark_persisted(&mut self) {
        self.frames.mark_persisted();
        self.nodes.mark_persisted();
        self.registered = true;
    }

    /// Resident blocks that are wholly on disk: `(last used, kind, block)`.
    pub fn clean_blocks(&self) -> impl Iterator<Item = (u64, Kind, u32)> + '_ {
        let frames = self.frames.clean().map(|(u, b)| (u, Kind::Frames, b));
        frames.chain(self.nodes.clean().map(|(u, b)| (u, Kind::Nodes, b)))
    }

    /// Drops a clean block from memory; returns the bytes it held.
    pub fn evict_block(&mut self, kind: Kind, block: u32) -> usize {
        match kind {
            Kind::Frames => self.frames.evict(block),
            Kind::Nodes => self.nodes.evict(block),
        }
    }

    /// Past `limit` bytes of blocks, drops this dictionary's least recently used clean blocks
    /// down to ¾ of it: a query that reads much of a large dictionary does not hold it all.
    pub fn trim_pages(&mut self, limit: usize) {
        if self.page_bytes() <= limit {
            return;
        }
        let mut clean: Vec<(u64, Kind, u32)> = self.clean_blocks().collect();
        clean.sort_unstable();
        for (_, kind, b) in clean {
            if self.page_bytes() <= limit / 4 * 3 {
                break;
            }
            self.evict_block(kind, b);
            DICTIONARY_EVICTIONS.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Marks it used at `uses` (the storage's counter) and `now_s`.
    pub fn touch(&mut self, uses: u64, now_s: i64) {
        self.last_used = uses;
        self.touched_s = now_s;
        self.released = false;
    }

    /// Drops every block that is on disk and both generations of lookups: an idle dictionary
    /// keeps only what is not on disk yet. Returns the bytes that left memory.
    pub fn release(&mut self) -> usize {
        let before = self.page_bytes() + self.lookup_bytes();
        let clean: Vec<(u64, Kind, u32)> = self.clean_blocks().collect();
        for (_, kind, b) in clean {
            self.evict_block(kind, b);
        }
        self.drop_cold_lookups();
        self.age_lookups();
        self.drop_cold_lookups();
        self.released = true;
        before - (self.page_bytes() + self.lookup_bytes())
    }

    /// Drops the older generation of the lookups; returns the bytes that held.
    pub fn drop_cold_lookups(&mut self) -> usize {
        self.frame_ids.drop_cold() + self.node_ids.drop_cold()
    }

    /// What was found since the last ageing becomes the older generation.
    pub fn age_lookups(&mut self) {
        self.frame_ids.age();
        self.node_ids.age();
    }

    /// Starts reading the entries of the one-key-per-entry layout: the root node, then
    /// `load_frame`/`load_node` in id order, then [`ServiceDict::forget_persisted`].
    pub fn begin_load(&mut self) {
        *self = Self {
            registered: true,
            ..Self::new(self.id)
        };
    }

    /// Counts every entry as unwritten: the next apply writes them all as blocks.
    pub fn forget_persisted(&mut self) {
        self.frames.forget_persisted();
        self.nodes.forget_persisted();
    }

    /// Restores a frame read from disk; frames are loaded in id order.
    pub fn load_frame(&mut self, id: u32, name: String) -> Result<(), StorageError> {
        let got = self.frame_key(name, 0)?;
        if got != id {
            return Err(StorageError::Corrupt(format!(
                "dictionary {}: frame {id} read as {got}",
                self.id
            )));
        }
        self.frames.mark_persisted();
        Ok(())
    }

    /// Restores a node read from disk; nodes are loaded in id order.
    pub fn load_node(&mut self, id: u32, parent: u32, frame: u32) -> Result<(), StorageError> {
        let got = self
            .nodes
            .push((parent, frame), 0)
            .ok_or_else(|| unprepared(self.id))? as u32;
        if got != id {
            return Err(StorageError::Corrupt(format!(
                "dictionary {}: node {id} read as {got}",
                self.id
            )));
        }
        self.node_ids.insert((parent, frame), id);
        self.nodes.mark_persisted();
        Ok(())
    }
}

fn unprepared(dict: u32) -> StorageError {
    StorageError::Io(format!(
        "dictionary {dict}: its last block was not read before a write"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_lines_keep_the_old_format() {
        let plain = Frame::named("main.work");
        assert_eq!(frame_key(&plain, true), "main.work");
        let at = Frame {
            function: "main.work".into(),
            file: "/src/main.go".into(),
            line: 42,
            start_line: 40,
        };
        let key = frame_key(&at, true);
        let parts = split_frame_key(&key);
        assert_eq!(
            (parts.function, parts.file, parts.line, parts.start_line),
            ("main.work", "/src/main.go", 42, 40)
        );
        let old = split_frame_key("main.work");
        assert_eq!(
            (old.function, old.file, old.line, old.start_line),
            ("main.work", "", 0, 0)
        );
        assert_eq!(frame_key(&at, false), "main.work");
        let mut d = ServiceDict::new(0);
        let plain_id = d.frame(&plain, 0).unwrap();
        assert_ne!(plain_id, d.frame(&at, 0).unwrap());
        assert_eq!(d.frame(&at, 0).unwrap(), d.frame(&at.clone(), 0).unwrap());
    }

    #[test]
    fn blocks_dropped_from_memory_are_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let (frames, nodes) = (db.open_tree("f").unwrap(), db.open_tree("n").unwrap());
        let disk = Disk {
            frames: &frames,
            nodes: &nodes,
            codec: Codec::Packed,
        };
        let mut d = ServiceDict::new(7);
        let mut expected = Vec::new();
        for i in 0..3 * BLOCK as u32 {
            let f = d.frame_key(format!("f{}", i % 5000), 1).unwrap();
            let parent = if i % 3 == 0 { 0 } else { i };
            let id = d.node(parent, f, 1).unwrap();
            expected.push((id, (parent, f)));
        }
        for (kind, b, bytes) in d.dirty_blocks() {
            let tree = if kind == Kind::Frames {
                &frames
            } else {
                &nodes
            };
            tree.insert(blocks::block_key(7, b), Codec::Packed.pack(&bytes))
                .unwrap();
        }
        d.mark_persisted();
        let all = d.page_bytes();
        d.trim_pages(all / 3);
        assert!(d.page_bytes() <= all / 3, "{} of {all}", d.page_bytes());
        for &(id, node) in expected.iter().rev() {
            assert_eq!(d.node_at(disk, id, 2).unwrap(), node);
        }
        assert_eq!(d.frame_at(disk, 4999, 2).unwrap(), "f4999");
        assert!(d.node_at(disk, d.node_count() as u32, 2).is_err());
        // Read back by another instance from its lengths alone.
        let mut again = ServiceDict::on_disk(7);
        again.ensure_known(disk).unwrap();
        assert_eq!(
            (again.frame_count(), again.node_count()),
            (d.frame_count(), d.node_count())
        );
        assert_eq!(
            again.node_at(disk, expected[100].0, 1).unwrap(),
            expected[100].1
        );
    }
}
