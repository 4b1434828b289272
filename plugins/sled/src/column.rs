//! The on-disk chunk: one series, one time bucket, a column of `(stack id, value)` sorted by
//! stack id, with the number of profiles merged into it and their total.
//!
//! ```text
//! u8 version (1) | varint profiles | zigzag total | varint n | n × (varint Δstack, zigzag value)
//! ```
//!
//! A coarse bucket whose profiles all fell into one bucket of the finest level holds the same
//! column as that bucket; it is stored as a reference instead ([`Stored::SameAsFinest`]):
//!
//! ```text
//! u8 version (2) | varint profiles | zigzag total | varint finest bucket (seconds)
//! ```
//!
//! Where series send less often than the coarser resolutions — a fleet's late uploads spread
//! over the day, agents on a 60 s cycle — most coarse buckets hold one profile, and the
//! references keep the column from being stored at every level.

use crate::error::ChunkError;

const VERSION: u8 = 1;
const SAME_AS_FINEST: u8 = 2;

/// What a chunk key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Column(Column),
    /// The column of the same series' finest-level chunk at `bucket` (seconds), with its header.
    SameAsFinest {
        bucket: u64,
        profiles: u64,
        total: i64,
    },
}

impl Stored {
    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        if bytes.first() == Some(&SAME_AS_FINEST) {
            let mut r = Reader { bytes, pos: 1 };
            let profiles = r.varint()?;
            let total = unzigzag(r.varint()?);
            let bucket = r.varint()?;
            return Ok(Self::SameAsFinest {
                bucket,
                profiles,
                total,
            });
        }
        Column::decode(bytes).map(Self::Column)
    }

    pub fn encode_same_as_finest(bucket: u64, profiles: u64, total: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(SAME_AS_FINEST);
        put_varint(&mut out, profiles);
        put_varint(&mut out, zigzag(total));
        put_varint(&mut out, bucket);
        out
    }
}

/// A decoded chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    pub profiles: u64,
    /// `(stack id, value)`, sorted by stack id, ids unique.
    pub entries: Vec<(u32, i64)>,
}

impl Column {
    pub fn total(&self) -> i64 {
        self.entries.iter().map(|e| e.1).sum()
    }

    /// Adds `other` into `self`, keeping ids sorted and unique.
    pub fn merge(&mut self, other: &Column) {
        self.profiles += other.profiles;
        let mut out = Vec::with_capacity(self.entries.len() + other.entries.len());
        let (mut a, mut b) = (
            self.entries.iter().peekable(),
            other.entries.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, va)), Some(&&(ib, vb))) => {
                    if ia == ib {
                        out.push((ia, va + vb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        out.push((ia, va));
                        a.next();
                    } else {
                        out.push((ib, vb));
                        b.next();
                    }
                }
                (Some(&&e), None) => {
                    out.push(e);
                    a.next();
                }
                (None, Some(&&e)) => {
                    out.push(e);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.entries = out;
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.entries.len() * 4);
        out.push(VERSION);
        put_varint(&mut out, self.profiles);
        put_varint(&mut out, zigzag(self.total()));
        put_varint(&mut out, self.entries.len() as u64);
        let mut prev = 0u32;
        for &(id, v) in &self.entries {
            put_varint(&mut out, u64::from(id - prev));
            put_varint(&mut out, zigzag(v));
            prev = id;
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.byte()?;
        if version != VERSION {
            return Err(ChunkError::Version(version));
        }
        let profiles = r.varint()?;
        let _total = r.varint()?;
        let n = r.varint()? as usize;
        // Each entry takes at least two bytes: never trust `n` for the allocation.
        let mut entries = Vec::with_capacity(n.min(bytes.len() / 2));
        let mut id = 0u64;
        for _ in 0..n {
            id += r.varint()?;
            let v = unzigzag(r.varint()?);
            entries.push((
                u32::try_from(id).map_err(|_| ChunkError::Truncated(r.pos))?,
                v,
            ));
        }
        Ok(Self { profiles, entries })
    }

    /// Reads only the header, `(profiles, total)`, of a column or a reference.
    pub fn decode_header(bytes: &[u8]) -> Result<(u64, i64), ChunkError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.byte()?;
        if version != VERSION && version != SAME_AS_FINEST {
            return Err(ChunkError::Version(version));
        }
        Ok((r.varint()?, unzigzag(r.varint()?)))
    }
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl Reader<'_> {
    pub fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    pub fn byte(&mut self) -> Result<u8, ChunkError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(ChunkError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn varint(&mut self) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ChunkError::Truncated(self.pos))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&[u8], ChunkError> {
        let b = self
            .bytes
            .get(self.pos..self.pos + n)
            .ok_or(ChunkError::Truncated(self.pos))?;
        self.pos += n;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_merges() {
        let a = Column {
            profiles: 1,
            entries: vec![(1, 5), (7, -3), (300_000, 1 << 40)],
        };
        let b = Column {
            profiles: 2,
            entries: vec![(0, 1), (7, 3), (9, 9)],
        };
        assert_eq!(Column::decode(&a.encode()).unwrap(), a);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.profiles, 3);
        assert_eq!(
            m.entries,
            vec![(0, 1), (1, 5), (7, 0), (9, 9), (300_000, 1 << 40)]
        );
        assert_eq!(
            Column::decode_header(&m.encode()).unwrap(),
            (3, 15 + (1 << 40))
        );
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let enc = Column {
            profiles: 1,
            entries: vec![(1, 5), (2, 6)],
        }
        .encode();
        for cut in 0..enc.len() {
            assert!(Column::decode(&enc[..cut]).is_err());
        }
        assert!(matches!(Column::decode(&[9]), Err(ChunkError::Version(9))));
        assert!(Column::decode(&[1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        let reference = Stored::encode_same_as_finest(1_700_000_000, 3, -4);
        for cut in 0..reference.len() {
            assert!(Stored::decode(&reference[..cut]).is_err());
        }
    }

    #[test]
    fn references_round_trip_with_their_header() {
        let reference = Stored::encode_same_as_finest(1_700_000_010, 2, 42);
        assert_eq!(
            Stored::decode(&reference).unwrap(),
            Stored::SameAsFinest {
                bucket: 1_700_000_010,
                profiles: 2,
                total: 42
            }
        );
        assert_eq!(Column::decode_header(&reference).unwrap(), (2, 42));
        let column = Column {
            profiles: 1,
            entries: vec![(3, 4)],
        };
        assert_eq!(
            Stored::decode(&column.encode()).unwrap(),
            Stored::Column(column)
        );
    }
}
