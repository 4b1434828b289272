//! Per-service dictionaries: interned frame names and the stack tree whose node ids are the
//! stack ids stored in chunks. A node's parent always has a smaller id.

use rustc_hash::FxHashMap;

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
}

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
        }
    }

    pub fn frame(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.frame_ids.get(name) {
            return id;
        }
        let id = self.frames.len() as u32;
        self.frames.push(name.to_string());
        self.frame_ids.insert(name.to_string(), id);
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
