//! The on-disk chunk: one series, one time bucket, a column of `(stack id, value)` sorted by
//! stack id, with the number of profiles merged into it and their total.
//!
//! ```text
//! u8 version (1) | varint profiles | zigzag total | varint n | n × (varint Δstack, zigzag value)
//! ```
//!
//! Values that share a factor (CPU time sampled every 10 ms is a multiple of 10,000,000 ns)
//! are stored divided by it, which takes a Go CPU column from about 5 bytes an entry to 2:
//!
//! ```text
//! u8 version (3) | varint profiles | zigzag total | varint scale | varint n | n × (varint Δstack, zigzag value / scale)
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
//!
//! A profile with several sample types often has two whose values are proportional: a Go CPU
//! profile's `samples` and `cpu` (every sample counts 10,000,000 ns). Their chunks hold the same
//! stacks and the same column up to a factor, so one of them is stored as a reference to its
//! sibling series' chunk of the same level and bucket ([`Stored::ScaledSibling`]), its values
//! being the sibling's `× multiply ÷ divide` (one of the two is 1, and the division is exact):
//!
//! ```text
//! u8 version (4) | varint profiles | zigzag total | varint sibling series | varint multiply | varint divide
//! ```

use kiln_plugin_api::varint::read_uvarint;

use crate::error::ChunkError;

const VERSION: u8 = 1;
const SAME_AS_FINEST: u8 = 2;
const SCALED: u8 = 3;
const SCALED_SIBLING: u8 = 4;

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
    /// The column of `series`' chunk at the same level and bucket, each value `× multiply ÷
    /// divide` (exact), with this chunk's header.
    ScaledSibling {
        series: u32,
        ratio: Ratio,
        profiles: u64,
        total: i64,
    },
}

/// `× multiply ÷ divide`, one of the two being 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub multiply: u64,
    pub divide: u64,
}

impl Ratio {
    /// `v × multiply ÷ divide`, or `None` where that overflows or does not divide.
    pub fn apply(self, v: i64) -> Option<i64> {
        let m = i64::try_from(self.multiply).ok()?;
        let d = i64::try_from(self.divide).ok()?;
        let scaled = v.checked_mul(m)?;
        (d != 0 && scaled % d == 0).then(|| scaled / d)
    }
}

impl Stored {
    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        if bytes.first() == Some(&SCALED_SIBLING) {
            let mut r = Reader { bytes, pos: 1 };
            let profiles = r.varint()?;
            let total = unzigzag(r.varint()?);
            let series = u32::try_from(r.varint()?).map_err(|_| ChunkError::Truncated(r.pos))?;
            let ratio = Ratio {
                multiply: r.varint()?,
                divide: r.varint()?,
            };
            if ratio.multiply == 0 || ratio.divide == 0 {
                return Err(ChunkError::Truncated(r.pos));
            }
            return Ok(Self::ScaledSibling {
                series,
                ratio,
                profiles,
                total,
            });
        }
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

    /// The series a stored chunk refers to, when it is a [`Stored::ScaledSibling`]: read from
    /// its header, without decoding a column.
    pub fn sibling_of(bytes: &[u8]) -> Option<u32> {
        if bytes.first() != Some(&SCALED_SIBLING) {
            return None;
        }
        let mut r = Reader { bytes, pos: 1 };
        r.varint().ok()?;
        r.varint().ok()?;
        u32::try_from(r.varint().ok()?).ok()
    }

    pub fn encode_scaled_sibling(series: u32, ratio: Ratio, profiles: u64, total: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.push(SCALED_SIBLING);
        put_varint(&mut out, profiles);
        put_varint(&mut out, zigzag(total));
        put_varint(&mut out, u64::from(series));
        put_varint(&mut out, ratio.multiply);
        put_varint(&mut out, ratio.divide);
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
        // Wrapping: the header total is informational and must not panic on extreme values.
        self.entries.iter().fold(0i64, |t, e| t.wrapping_add(e.1))
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

    /// The ratio that turns `base` into `self` exactly, if there is one: the same stacks, the
    /// same number of profiles, and every value `base`'s `× multiply ÷ divide` for one ratio.
    pub fn ratio_to(&self, base: &Column) -> Option<Ratio> {
        if self.profiles != base.profiles || self.entries.len() != base.entries.len() {
            return None;
        }
        let (&(_, first), &(_, first_base)) = (self.entries.first()?, base.entries.first()?);
        let (a, b) = (first.unsigned_abs(), first_base.unsigned_abs());
        let ratio = if a != 0 && b != 0 && a % b == 0 {
            Ratio {
                multiply: a / b,
                divide: 1,
            }
        } else if a != 0 && b != 0 && b % a == 0 {
            Ratio {
                multiply: 1,
                divide: b / a,
            }
        } else {
            return None;
        };
        let same = self
            .entries
            .iter()
            .zip(&base.entries)
            .all(|(&(id, v), &(base_id, base_v))| id == base_id && ratio.apply(base_v) == Some(v));
        same.then_some(ratio)
    }

    /// Every value `× multiply ÷ divide`, with `profiles`; `None` where a value does not fit
    /// or divide.
    pub fn scaled(mut self, ratio: Ratio, profiles: u64) -> Option<Column> {
        for e in &mut self.entries {
            e.1 = ratio.apply(e.1)?;
        }
        self.profiles = profiles;
        Some(self)
    }

    /// The largest factor every value shares (1 when there is none, or no values).
    fn scale(&self) -> u64 {
        let mut g = 0u64;
        for &(_, v) in &self.entries {
            let mut b = v.unsigned_abs();
            while b != 0 {
                (g, b) = (b, g % b);
            }
            if g == 1 {
                break;
            }
        }
        // 2^63 (every value i64::MIN) does not fit the signed division below.
        if g > i64::MAX as u64 {
            1
        } else {
            g.max(1)
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.entries.len() * 4);
        let scale = self.scale();
        out.push(if scale > 1 { SCALED } else { VERSION });
        put_varint(&mut out, self.profiles);
        put_varint(&mut out, zigzag(self.total()));
        if scale > 1 {
            put_varint(&mut out, scale);
        }
        put_varint(&mut out, self.entries.len() as u64);
        let mut prev = 0u32;
        for &(id, v) in &self.entries {
            put_varint(&mut out, u64::from(id - prev));
            // Exact: `scale` divides every value.
            put_varint(&mut out, zigzag(v / scale as i64));
            prev = id;
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ChunkError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.byte()?;
        if version != VERSION && version != SCALED {
            return Err(ChunkError::Version(version));
        }
        let profiles = r.varint()?;
        let _total = r.varint()?;
        let scale = if version == SCALED {
            i64::try_from(r.varint()?).map_err(|_| ChunkError::Truncated(r.pos))?
        } else {
            1
        };
        let n = r.varint()? as usize;
        // Each entry takes at least two bytes: never trust `n` for the allocation.
        let mut entries = Vec::with_capacity(n.min(bytes.len() / 2));
        let mut id = 0u64;
        for _ in 0..n {
            id += r.varint()?;
            let v = unzigzag(r.varint()?).wrapping_mul(scale);
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
        if ![VERSION, SAME_AS_FINEST, SCALED, SCALED_SIBLING].contains(&version) {
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
        // Too long reads as truncated, as chunks always said.
        read_uvarint(self.bytes, &mut self.pos).map_err(|_| ChunkError::Truncated(self.pos))
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
        let sibling = Stored::encode_scaled_sibling(
            70_000,
            Ratio {
                multiply: 10_000_000,
                divide: 1,
            },
            1,
            -3,
        );
        for cut in 0..sibling.len() {
            assert!(Stored::decode(&sibling[..cut]).is_err());
        }
        // A zero ratio is corrupt, not a division by zero when read.
        assert!(Stored::decode(&Stored::encode_scaled_sibling(
            1,
            Ratio {
                multiply: 1,
                divide: 0
            },
            1,
            1
        ))
        .is_err());
    }

    #[test]
    fn proportional_columns_are_found_exactly() {
        let samples = Column {
            profiles: 1,
            entries: vec![(1, 1), (4, 3), (9, -2)],
        };
        let cpu = Column {
            profiles: 1,
            entries: vec![(1, 10_000_000), (4, 30_000_000), (9, -20_000_000)],
        };
        let up = cpu.ratio_to(&samples).unwrap();
        assert_eq!(
            up,
            Ratio {
                multiply: 10_000_000,
                divide: 1
            }
        );
        assert_eq!(samples.clone().scaled(up, 1).unwrap(), cpu);
        let down = samples.ratio_to(&cpu).unwrap();
        assert_eq!(
            down,
            Ratio {
                multiply: 1,
                divide: 10_000_000
            }
        );
        assert_eq!(cpu.clone().scaled(down, 1).unwrap(), samples);
        assert_eq!(samples.ratio_to(&samples).map(|r| r.multiply), Some(1));
        // One value off, another stack, another profile count, a zero first value: no ratio.
        let mut off = cpu.clone();
        off.entries[2].1 -= 1;
        assert_eq!(off.ratio_to(&samples), None);
        let mut other_stack = cpu.clone();
        other_stack.entries[1].0 = 5;
        assert_eq!(other_stack.ratio_to(&samples), None);
        let mut more = cpu.clone();
        more.profiles = 2;
        assert_eq!(more.ratio_to(&samples), None);
        let zero = Column {
            profiles: 1,
            entries: vec![(1, 0), (4, 3), (9, -2)],
        };
        assert_eq!(zero.ratio_to(&samples), None);
        assert_eq!(Column::default().ratio_to(&Column::default()), None);
        // Overflow is no ratio, never a panic.
        let huge = Column {
            profiles: 1,
            entries: vec![(1, 2), (4, i64::MAX)],
        };
        let small = Column {
            profiles: 1,
            entries: vec![(1, 1), (4, 1)],
        };
        assert_eq!(huge.ratio_to(&small), None);
    }

    #[test]
    fn values_sharing_a_factor_are_stored_divided_by_it() {
        let cpu = Column {
            profiles: 2,
            entries: vec![(1, 10_000_000), (4, 30_000_000), (9, -20_000_000)],
        };
        let plain = Column {
            profiles: 2,
            entries: vec![(1, 1), (4, 3), (9, -2)],
        };
        let enc = cpu.encode();
        assert_eq!(enc[0], SCALED);
        // The entries take what 1, 3, -2 take; the header grows by the scale (4 bytes) and the
        // larger total (3 bytes).
        assert_eq!(enc.len(), plain.encode().len() + 4 + 3);
        assert_eq!(Column::decode(&enc).unwrap(), cpu);
        assert_eq!(Column::decode_header(&enc).unwrap(), (2, 20_000_000));
        assert_eq!(plain.encode()[0], VERSION);
        assert_eq!(Column::default().encode()[0], VERSION);
        for cut in 0..enc.len() {
            assert!(Column::decode(&enc[..cut]).is_err());
        }
        let extreme = Column {
            profiles: 1,
            entries: vec![(0, i64::MIN), (1, i64::MAX)],
        };
        assert_eq!(Column::decode(&extreme.encode()).unwrap(), extreme);
        let minimum = Column {
            profiles: 1,
            entries: vec![(0, i64::MIN), (1, i64::MIN)],
        };
        assert_eq!(Column::decode(&minimum.encode()).unwrap(), minimum);
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
        let ratio = Ratio {
            multiply: 1,
            divide: 10_000_000,
        };
        let sibling = Stored::encode_scaled_sibling(7, ratio, 3, 12);
        assert_eq!(
            Stored::decode(&sibling).unwrap(),
            Stored::ScaledSibling {
                series: 7,
                ratio,
                profiles: 3,
                total: 12
            }
        );
        assert_eq!(Column::decode_header(&sibling).unwrap(), (3, 12));
        assert_eq!(Stored::sibling_of(&sibling), Some(7));
        assert_eq!(Stored::sibling_of(&reference), None);
        assert_eq!(Stored::sibling_of(&sibling[..3]), None);
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
