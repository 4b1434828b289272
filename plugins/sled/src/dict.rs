//! Per-service dictionaries: interned frames and the stack tree whose node ids are the stack
//! ids stored in chunks. A node's parent always has a smaller id.
//!
//! A frame is stored as its function name alone when it has no source location — exactly the
//! format written before lines were kept, so older data dirs read unchanged — and as
//! `function NUL file NUL line` when it has one. Function names never contain NUL (a frame
//! whose name does is stored with the NUL replaced).

use kiln_plugin_api::Frame;
use rustc_hash::FxHashMap;

/// Separates a frame's function, file and line in its stored form.
const SEP: char = '\0';

/// The stored form of a frame; `keep_lines = false` stores the function alone.
pub fn frame_key(f: &Frame, keep_lines: bool) -> String {
    let function = if f.function.contains(SEP) {
        std::borrow::Cow::Owned(f.function.replace(SEP, "\u{fffd}"))
    } else {
        std::borrow::Cow::Borrowed(f.function.as_str())
    };
    if !keep_lines || (f.line == 0 && f.start_line == 0 && f.file.is_empty()) {
        return function.into_owned();
    }
    let file = f.file.replace(SEP, "\u{fffd}");
    format!("{function}{SEP}{file}{SEP}{}{SEP}{}", f.line, f.start_line)
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

/// Frames and stack nodes of one service. Node 0 is the root (no frame).
#[derive(Debug)]
pub struct ServiceDict {
    pub id: u32,
    pub frames: Vec<String>,
    frame_ids: FxHashMap<String, u32>,
    /// `(parent, frame)` per node.
    pub nodes: Vec<(u32, u32)>,
    node_ids: FxHashMap<(u32, u32), u32>,
    /// How many frames / nodes are already on disk.
    pub persisted_frames: usize,
    pub persisted_nodes: usize,
    /// Whether any frame has a source location (then merged trees carry lines).
    pub has_locations: bool,
    /// False while the dictionary is on disk only (evicted, or not needed since start).
    pub loaded: bool,
    /// When it was last used, in the storage's use counter: the least recent goes first.
    pub last_used: u64,
    /// Bytes of frame names held (each twice: in `frames` and as a key of `frame_ids`).
    frame_bytes: usize,
}

/// What a node costs resident: `(parent, frame)` in `nodes` and again in `node_ids`, with the
/// hash table's overhead.
const NODE_BYTES: usize = 32;
/// What a frame costs beside its name's bytes: two `String`s and a table slot.
const FRAME_OVERHEAD_BYTES: usize = 64;

impl ServiceDict {
    pub fn new(id: u32) -> Self {
        Self {
            id,
            frames: Vec::new(),
            frame_ids: FxHashMap::default(),
            nodes: vec![(0, u32::MAX)],
            node_ids: FxHashMap::default(),
            persisted_frames: 0,
            persisted_nodes: 1,
            has_locations: false,
            loaded: true,
            last_used: 0,
            frame_bytes: 0,
        }
    }

    /// A dictionary known by id whose entries are still on disk.
    pub fn on_disk(id: u32) -> Self {
        let mut d = Self::new(id);
        d.unload();
        d
    }

    /// Memory the dictionary holds, estimated.
    pub fn resident_bytes(&self) -> usize {
        if !self.loaded {
            return 0;
        }
        self.frame_bytes + self.frames.len() * FRAME_OVERHEAD_BYTES + self.nodes.len() * NODE_BYTES
    }

    /// Everything is on disk: it may be unloaded.
    pub fn persisted(&self) -> bool {
        self.persisted_frames == self.frames.len() && self.persisted_nodes == self.nodes.len()
    }

    /// Drops the entries (they must be on disk); `loaded` again after reading them back.
    pub fn unload(&mut self) {
        *self = Self {
            id: self.id,
            frames: Vec::new(),
            frame_ids: FxHashMap::default(),
            nodes: Vec::new(),
            node_ids: FxHashMap::default(),
            persisted_frames: 0,
            persisted_nodes: 0,
            has_locations: false,
            loaded: false,
            last_used: self.last_used,
            frame_bytes: 0,
        };
    }

    /// Starts reading the entries back: the root node, then `load_frame`/`load_node` in id
    /// order.
    pub fn begin_load(&mut self) {
        debug_assert!(!self.loaded);
        self.nodes.push((0, u32::MAX));
        self.persisted_nodes = 1;
        self.loaded = true;
    }

    /// The id of `frame` (function, file and line), interned.
    pub fn frame(&mut self, frame: &Frame) -> u32 {
        self.frame_key(frame_key(frame, true))
    }

    /// The id of a frame in its stored form, interned.
    pub fn frame_key(&mut self, key: String) -> u32 {
        if let Some(&id) = self.frame_ids.get(&key) {
            return id;
        }
        let id = self.frames.len() as u32;
        self.has_locations |= key.contains(SEP);
        self.frame_bytes += 2 * key.len();
        self.frames.push(key.clone());
        self.frame_ids.insert(key, id);
        id
    }

    pub fn node(&mut self, parent: u32, frame: u32) -> u32 {
        let next = self.nodes.len() as u32;
        let id = *self.node_ids.entry((parent, frame)).or_insert(next);
        if id == next {
            self.nodes.push((parent, frame));
        }
        id
    }

    /// Restores a frame read from disk; frames are loaded in id order.
    pub fn load_frame(&mut self, id: u32, name: String) {
        debug_assert_eq!(id as usize, self.frames.len());
        self.has_locations |= name.contains(SEP);
        self.frame_bytes += 2 * name.len();
        self.frame_ids.insert(name.clone(), id);
        self.frames.push(name);
        self.persisted_frames = self.frames.len();
    }

    /// Restores a node read from disk; nodes are loaded in id order.
    pub fn load_node(&mut self, id: u32, parent: u32, frame: u32) {
        debug_assert_eq!(id as usize, self.nodes.len());
        self.node_ids.insert((parent, frame), id);
        self.nodes.push((parent, frame));
        self.persisted_nodes = self.nodes.len();
    }
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
        d.frame(&plain);
        assert!(!d.has_locations);
        assert_ne!(d.frame(&plain), d.frame(&at));
        assert!(d.has_locations);
        assert_eq!(d.frame(&at), d.frame(&at.clone()));
    }
}
