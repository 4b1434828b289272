//! 64-bit ids computed from content, the same in every daemon and every Kiln version: two
//! daemons writing the same new frame, stack or series write the same row.

use kiln_plugin_api::{Frame, Labels, ProfileType};

use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::Xxh3;

/// Feeds `parts` to `update` length-prefixed, so ("ab", "c") and ("a", "bc") differ.
fn length_prefixed(parts: &[&[u8]], mut update: impl FnMut(&[u8])) {
    for p in parts {
        update(&(p.len() as u64).to_le_bytes());
        update(p);
    }
}

fn hash64(parts: &[&[u8]]) -> u64 {
    let mut h = blake3::Hasher::new();
    length_prefixed(parts, |b| {
        h.update(b);
    });
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// What a frame's id hashes.
fn frame_parts<'a>(f: &'a Frame, line: &'a [u8; 4], start_line: &'a [u8; 4]) -> [&'a [u8]; 4] {
    [f.function.as_bytes(), f.file.as_bytes(), line, start_line]
}

/// A frame's id. The write path takes it from [`IdCache::frame`].
#[cfg(test)]
pub fn frame(f: &Frame) -> u64 {
    let (line, start_line) = (f.line.to_le_bytes(), f.start_line.to_le_bytes());
    hash64(&frame_parts(f, &line, &start_line))
}

/// `frames`' ids as the bytes a stack's id hashes, into `out`.
fn stack_bytes(frames: &[u64], out: &mut Vec<u8>) {
    out.clear();
    out.extend(frames.iter().flat_map(|f| f.to_le_bytes()));
}

/// A stack's id from its [`stack_bytes`].
fn stack_of_bytes(bytes: &[u8]) -> u64 {
    hash64(&[b"stack", bytes])
}

/// A stack: its frames' ids, root first. The write path takes it from [`IdCache::stack`].
#[cfg(test)]
pub fn stack(frames: &[u64]) -> u64 {
    let mut bytes = Vec::new();
    stack_bytes(frames, &mut bytes);
    stack_of_bytes(&bytes)
}

/// Frame and stack ids already computed, by a 128-bit xxh3 of the bytes their blake3 ids
/// hash: a lookup costs a fraction of a blake3 hash, and a push mostly holds frames and stacks
/// seen before. Two contents with one key would take a 128-bit collision. At most
/// [`IdCache::MAX`] entries (~30 MB); past it, it starts over.
#[derive(Default)]
pub struct IdCache {
    ids: FxHashMap<u128, u64>,
    scratch: Vec<u8>,
}

impl IdCache {
    pub const MAX: usize = 1 << 20;

    fn key(kind: &[u8], parts: &[&[u8]]) -> u128 {
        let mut h = Xxh3::new();
        h.update(kind);
        length_prefixed(parts, |b| h.update(b));
        h.digest128()
    }

    fn get_or(&mut self, key: u128, id: impl FnOnce() -> u64) -> u64 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        if self.ids.len() >= Self::MAX {
            self.ids.clear();
        }
        *self.ids.entry(key).or_insert_with(id)
    }

    /// A frame's id, from the cache when there.
    pub fn frame(&mut self, f: &Frame) -> u64 {
        let (line, start_line) = (f.line.to_le_bytes(), f.start_line.to_le_bytes());
        let parts = frame_parts(f, &line, &start_line);
        let key = Self::key(b"frame", &parts);
        self.get_or(key, || hash64(&parts))
    }

    /// A stack's id (its frames' ids, root first), from the cache when there.
    pub fn stack(&mut self, frames: &[u64]) -> u64 {
        let mut bytes = std::mem::take(&mut self.scratch);
        stack_bytes(frames, &mut bytes);
        let key = Self::key(b"stack", &[&bytes]);
        let id = self.get_or(key, || stack_of_bytes(&bytes));
        self.scratch = bytes;
        id
    }
}

pub fn series(labels: &Labels, profile_type: &ProfileType) -> u64 {
    hash64(&[
        b"series",
        labels.to_string().as_bytes(),
        profile_type.id().as_bytes(),
    ])
}

/// A key for a tenant's service in the write caches.
pub fn service(tenant: &str, service: &str) -> u64 {
    hash64(&[b"service", tenant.as_bytes(), service.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        // Fixed values: a change here would split every stored stack in two.
        let main = frame(&Frame::named("main"));
        assert_eq!(main, frame(&Frame::named("main")));
        assert_ne!(main, frame(&Frame::named("main2")));
        assert_ne!(stack(&[main]), stack(&[main, main]));
        assert_ne!(service("ab", "c"), service("a", "bc"));
    }

    #[test]
    fn the_cache_gives_the_ids_it_caches() {
        let mut cache = IdCache::default();
        let frames: Vec<Frame> = ["main", "run", "main"]
            .iter()
            .map(|f| Frame::named(*f))
            .collect();
        for _ in 0..2 {
            let ids: Vec<u64> = frames.iter().map(|f| cache.frame(f)).collect();
            assert_eq!(ids, frames.iter().map(frame).collect::<Vec<_>>());
            for n in 1..=ids.len() {
                assert_eq!(cache.stack(&ids[..n]), stack(&ids[..n]));
            }
        }
        // Two frames and three stacks, each once.
        assert_eq!(cache.ids.len(), 5);
        // A frame with the same function elsewhere is another frame.
        let mut elsewhere = Frame::named("main");
        elsewhere.line = 7;
        assert_eq!(cache.frame(&elsewhere), frame(&elsewhere));
        assert_ne!(cache.frame(&elsewhere), frame(&frames[0]));
    }
}
