//! Frames interned once per code object, and sample counts aggregated per (tags, stack) in
//! Rust; Python sees them once per upload interval as folded text.

use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Frame index that stands for "too many distinct stacks in this interval".
const OVERFLOW: u32 = u32::MAX;

/// Text of each distinct frame, by code object (and line, when lines are kept).
#[derive(Default)]
pub struct FrameTable {
    by_code: HashMap<(usize, i32), u32>,
    texts: Vec<String>,
    // Keeps each interned code object alive, so its address is not reused while cached.
    codes: Vec<Py<PyAny>>,
}

impl FrameTable {
    pub fn get(&self, code: usize, line: i32) -> Option<u32> {
        self.by_code.get(&(code, line)).copied()
    }

    pub fn insert(&mut self, code: Py<PyAny>, line: i32, text: String) -> u32 {
        let index = self.texts.len() as u32;
        self.by_code.insert((code.as_ptr() as usize, line), index);
        self.texts.push(text);
        self.codes.push(code);
        index
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    fn text(&self, index: u32) -> &str {
        &self.texts[index as usize]
    }

    pub fn clear(&mut self) {
        self.by_code.clear();
        self.texts.clear();
        self.codes.clear();
    }
}

/// Sample counts of one interval. A key is `[tags index, leaf frame, ..., root frame]`.
pub struct Counts {
    counts: HashMap<Vec<u32>, u64>,
    tags: Vec<Py<PyAny>>,
    tags_index: HashMap<usize, u32>,
    max_stacks: usize,
}

impl Counts {
    pub fn new(max_stacks: usize) -> Self {
        Counts {
            counts: HashMap::new(),
            tags: Vec::new(),
            tags_index: HashMap::new(),
            max_stacks,
        }
    }

    /// Index of a tags tuple, by identity: the same tags object is the same tags. Equal tuples
    /// of different identity are merged when the interval is drained.
    pub fn tags_index(&mut self, tags: &Bound<'_, PyAny>) -> u32 {
        let key = tags.as_ptr() as usize;
        if let Some(index) = self.tags_index.get(&key) {
            return *index;
        }
        let index = self.tags.len() as u32;
        self.tags.push(tags.clone().unbind());
        self.tags_index.insert(key, index);
        index
    }

    /// Adds `samples` to `key` (`[tags, leaf..root]`); past `max_stacks` distinct keys, a new
    /// one goes to the overflow stack of its tags instead (then returns false).
    pub fn add(&mut self, key: &mut Vec<u32>, samples: u64) -> bool {
        if let Some(count) = self.counts.get_mut(key.as_slice()) {
            *count += samples;
            return true;
        }
        if self.counts.len() >= self.max_stacks {
            key.truncate(1);
            key.push(OVERFLOW);
            *self.counts.entry(key.clone()).or_insert(0) += samples;
            return false;
        }
        self.counts.insert(key.clone(), samples);
        true
    }

    /// `{tags: {"root;...;leaf": count}}` of everything counted; starts a new interval.
    pub fn drain<'py>(
        &mut self,
        py: Python<'py>,
        frames: &FrameTable,
        overflow_text: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        let mut per_tags: Vec<Option<Bound<'py, PyDict>>> = vec![None; self.tags.len()];
        let mut folded = String::new();
        for (key, count) in self.counts.drain() {
            let tags_at = key[0] as usize;
            let stacks = match &per_tags[tags_at] {
                Some(stacks) => stacks.clone(),
                None => {
                    let tags = self.tags[tags_at].bind(py);
                    let stacks = match out.get_item(tags)? {
                        Some(existing) => existing.cast_into::<PyDict>()?,
                        None => {
                            let fresh = PyDict::new(py);
                            out.set_item(tags, &fresh)?;
                            fresh
                        }
                    };
                    per_tags[tags_at] = Some(stacks.clone());
                    stacks
                }
            };
            folded.clear();
            for (i, frame) in key[1..].iter().rev().enumerate() {
                if i > 0 {
                    folded.push(';');
                }
                folded.push_str(if *frame == OVERFLOW {
                    overflow_text
                } else {
                    frames.text(*frame)
                });
            }
            let total = match stacks.get_item(folded.as_str())? {
                Some(previous) => previous.extract::<u64>()? + count,
                None => count,
            };
            stacks.set_item(folded.as_str(), total)?;
        }
        self.tags.clear();
        self.tags_index.clear();
        Ok(out)
    }
}
