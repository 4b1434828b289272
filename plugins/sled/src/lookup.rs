//! The write side of a dictionary: from a frame, or a `(parent, frame)` stack node, to its id.
//!
//! Bounded by generations rather than a full LRU: entries found go to the `hot` map; when the
//! dictionary budget is passed, the `cold` map is dropped and `hot` becomes it, so what was
//! used since the last ageing survives one more round. An entry that is no longer here gets a
//! new id when it is next written: the dictionary then holds it twice, which queries merge
//! (see `build_tree`), so answers do not change; only disk pays for the copy.

use std::borrow::Borrow;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// What a key costs in a map, estimated: the key, the id, the table's control byte and spare
/// capacity.
pub trait KeyBytes {
    fn key_bytes(&self) -> usize;
}

impl KeyBytes for String {
    fn key_bytes(&self) -> usize {
        self.len() + 48
    }
}

impl KeyBytes for (u32, u32) {
    fn key_bytes(&self) -> usize {
        28
    }
}

pub struct Lookup<K> {
    hot: FxHashMap<K, u32>,
    cold: FxHashMap<K, u32>,
    hot_bytes: usize,
    cold_bytes: usize,
}

impl<K> Default for Lookup<K> {
    fn default() -> Self {
        Self {
            hot: FxHashMap::default(),
            cold: FxHashMap::default(),
            hot_bytes: 0,
            cold_bytes: 0,
        }
    }
}

impl<K: Hash + Eq + KeyBytes> Lookup<K> {
    /// By a borrowed form of the key (`&str` for `String`), so a lookup that hits allocates
    /// nothing.
    pub fn get<Q>(&mut self, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(&id) = self.hot.get(key) {
            return Some(id);
        }
        let (key, id) = self.cold.remove_entry(key)?;
        let bytes = key.key_bytes();
        self.cold_bytes -= bytes;
        self.hot_bytes += bytes;
        self.hot.insert(key, id);
        Some(id)
    }

    pub fn insert(&mut self, key: K, id: u32) {
        let bytes = key.key_bytes();
        if self.hot.insert(key, id).is_none() {
            self.hot_bytes += bytes;
        }
    }

    pub fn bytes(&self) -> usize {
        self.hot_bytes + self.cold_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.hot.is_empty() && self.cold.is_empty()
    }

    /// Drops the cold generation; returns the bytes it held.
    pub fn drop_cold(&mut self) -> usize {
        self.cold = FxHashMap::default();
        std::mem::take(&mut self.cold_bytes)
    }

    /// The hot generation becomes the cold one (drop the cold one first).
    pub fn age(&mut self) {
        debug_assert!(self.cold.is_empty());
        self.cold = std::mem::take(&mut self.hot);
        self.cold_bytes += std::mem::take(&mut self.hot_bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_used_since_the_last_ageing_survives_it() {
        let mut l: Lookup<(u32, u32)> = Lookup::default();
        l.insert((0, 1), 1);
        l.insert((0, 2), 2);
        l.age();
        assert_eq!(l.get(&(0, 1)), Some(1)); // back to hot
        assert_eq!(l.bytes(), 56);
        assert_eq!(l.drop_cold(), 28);
        l.age();
        assert_eq!(l.get(&(0, 2)), None);
        assert_eq!(l.get(&(0, 1)), Some(1));
        l.drop_cold();
        l.age();
        l.drop_cold();
        assert!(l.is_empty());
        assert_eq!(l.bytes(), 0);
    }
}
