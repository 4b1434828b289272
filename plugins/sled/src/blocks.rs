//! Dictionaries on disk: a service's frames and stack nodes in blocks of [`BLOCK`] entries, one
//! sled value per block, keyed by `(service, block index)`.
//!
//! One key per entry was the first layout. sled keeps every insert of a batch in memory as a
//! page delta until the batch is done, so the million stack nodes of one large profile took
//! gigabytes of RAM and tens of seconds to apply. Blocks make that a few hundred values; only
//! the last, partly filled block of each dictionary is rewritten by later flushes.
//!
//! ```text
//! frame block = (varint len, UTF-8 bytes)*
//! node block  = (varint (id - parent), varint (frame + 1))*     root: (0, 0)
//! ```

use std::ops::Range;

use crate::column::{put_varint, Reader};
use crate::error::ChunkError;

/// Entries per block.
pub const BLOCK: usize = 4096;

pub fn block_key(service: u32, block: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&service.to_be_bytes());
    k[4..].copy_from_slice(&block.to_be_bytes());
    k
}

/// The blocks holding entries `persisted..len`, each with the whole range of entries it holds.
pub fn dirty_blocks(persisted: usize, len: usize) -> impl Iterator<Item = (u32, Range<usize>)> {
    let first = persisted / BLOCK;
    let end = len.div_ceil(BLOCK);
    (first..end)
        .filter(move |_| persisted < len)
        .map(move |b| (b as u32, b * BLOCK..((b + 1) * BLOCK).min(len)))
}

pub fn encode_frames(frames: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 2).sum());
    for f in frames {
        put_varint(&mut out, f.len() as u64);
        out.extend_from_slice(f.as_bytes());
    }
    out
}

pub fn decode_frames(bytes: &[u8]) -> Result<Vec<String>, ChunkError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let n = r.varint()? as usize;
        out.push(String::from_utf8_lossy(r.bytes(n)?).into_owned());
    }
    Ok(out)
}

/// `nodes` are ids `first_id..`; a parent always has a smaller id than its child.
pub fn encode_nodes(first_id: usize, nodes: &[(u32, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * 3);
    for (i, &(parent, frame)) in nodes.iter().enumerate() {
        let id = (first_id + i) as u64;
        put_varint(&mut out, id - u64::from(parent).min(id));
        put_varint(&mut out, u64::from(frame.wrapping_add(1)));
    }
    out
}

pub fn decode_nodes(first_id: usize, bytes: &[u8]) -> Result<Vec<(u32, u32)>, ChunkError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let id = (first_id + out.len()) as u64;
        let back = r.varint()?;
        let frame = r.varint()?;
        let parent = id
            .checked_sub(back)
            .and_then(|p| u32::try_from(p).ok())
            .ok_or(ChunkError::Truncated(r.pos))?;
        let frame = u32::try_from(frame)
            .map_err(|_| ChunkError::Truncated(r.pos))?
            .wrapping_sub(1);
        out.push((parent, frame));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let frames: Vec<String> = vec!["main".into(), "".into(), "ünïcode::f".into()];
        assert_eq!(decode_frames(&encode_frames(&frames)).unwrap(), frames);
        let nodes = vec![(0, u32::MAX), (0, 0), (1, 1), (2, 70_000)];
        assert_eq!(decode_nodes(0, &encode_nodes(0, &nodes)).unwrap(), nodes);
        let later = vec![(4000, 3), (4103, 2)];
        assert_eq!(
            decode_nodes(BLOCK + 7, &encode_nodes(BLOCK + 7, &later)).unwrap(),
            later
        );
        assert!(decode_frames(&[5, b'a']).is_err());
    }

    #[test]
    fn dirty_blocks_cover_what_is_new() {
        assert_eq!(dirty_blocks(10, 10).count(), 0);
        assert_eq!(dirty_blocks(0, 3).collect::<Vec<_>>(), vec![(0, 0..3)]);
        assert_eq!(
            dirty_blocks(BLOCK - 1, BLOCK + 2).collect::<Vec<_>>(),
            vec![(0, 0..BLOCK), (1, BLOCK..BLOCK + 2)]
        );
        assert_eq!(
            dirty_blocks(BLOCK, BLOCK + 1).collect::<Vec<_>>(),
            vec![(1, BLOCK..BLOCK + 1)]
        );
    }
}
