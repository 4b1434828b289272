//! Bounds-checked reading of JFR's primitive encodings.

use kiln_plugin_api::DecodeError;

pub struct Reader<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
    /// Whether integers are LEB128-compressed (the chunk header's feature bit 0).
    pub compressed: bool,
}

pub fn err(pos: usize, what: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(format!("jfr: {what} at byte {pos}"))
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8], pos: usize, compressed: bool) -> Self {
        Self {
            bytes,
            pos,
            compressed,
        }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| err(self.pos, "unexpected end of data"))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| err(self.pos, format!("{n} bytes run past the end")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn be_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn be_u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A JFR compressed integer: 7 bits per byte, low first; the 9th byte carries 8 bits.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        // Most integers are one byte (small counts, lengths, ids, deltas).
        if let Some(&b) = self.bytes.get(self.pos) {
            if b & 0x80 == 0 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        let mut v = 0u64;
        for i in 0..8 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Ok(v | (u64::from(self.u8()?) << 56))
    }

    /// Moves past an `int`/`long`/`short`/`char` without decoding it: [`Reader::skip_ints`]
    /// for one, without its loop (the skipping of values not compiled into steps takes it).
    #[inline]
    pub fn skip_int(&mut self, width: usize) -> Result<(), DecodeError> {
        if !self.compressed {
            return self.take(width).map(drop);
        }
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        // The first byte without the continuation bit ends it; the 9th byte always does.
        match rest.iter().take(8).position(|&b| b & 0x80 == 0) {
            Some(i) => self.pos += i + 1,
            None if rest.len() >= 9 => self.pos += 9,
            None => return Err(err(self.pos, "unexpected end of data")),
        }
        Ok(())
    }

    /// Moves past `count` integers, `bytes` wide in all when the chunk does not compress them.
    pub fn skip_ints(&mut self, count: usize, bytes: usize) -> Result<(), DecodeError> {
        if !self.compressed {
            return self.take(bytes).map(drop);
        }
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (mut left, mut run) = (count, 0);
        let mut used = 0;
        for &b in rest {
            if left == 0 {
                break;
            }
            used += 1;
            // A byte without the continuation bit ends an integer; so does the 9th byte.
            if b & 0x80 == 0 || run == 8 {
                left -= 1;
                run = 0;
            } else {
                run += 1;
            }
        }
        if left > 0 {
            return Err(err(self.pos, "unexpected end of data"));
        }
        self.pos += used;
        Ok(())
    }

    /// An `int`/`long`/`short`/`char` in the chunk's integer encoding.
    pub fn int(&mut self, width: usize) -> Result<i64, DecodeError> {
        if self.compressed {
            return Ok(self.varint()? as i64);
        }
        let b = self.take(width)?;
        let mut v: u64 = 0;
        for &x in b {
            v = (v << 8) | u64::from(x);
        }
        // Sign-extend narrower values.
        let shift = 64 - 8 * width as u32;
        Ok(((v << shift) as i64) >> shift)
    }

    /// A length or count, refused when larger than the bytes left could hold.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.int(4)?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.remaining())
            .ok_or_else(|| err(at, format!("count {n} exceeds the data left")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skipping integers by scanning bytes ends where reading them one by one does, 9-byte
    /// integers (whose last byte has its top bit set) included, and fails at the end of data.
    #[test]
    fn skipped_integers_end_where_read_ones_do() {
        let mut bytes = vec![0x05, 0x80, 0x01, 0xff, 0xff, 0x7f];
        bytes.extend([0xff; 8]);
        bytes.push(0xff); // the 9th byte of a full-width integer
        bytes.extend([0x00, 0x81, 0x00]);
        let mut read = Reader::new(&bytes, 0, true);
        let mut ends = Vec::new();
        while read.remaining() > 0 {
            read.int(8).unwrap();
            ends.push(read.pos);
        }
        assert_eq!(ends.len(), 6);
        for (n, end) in ends.iter().enumerate() {
            let mut skip = Reader::new(&bytes, 0, true);
            skip.skip_ints(n + 1, 0).unwrap();
            assert_eq!(skip.pos, *end, "{} integers", n + 1);
        }
        let mut skip = Reader::new(&bytes, 0, true);
        assert!(skip.skip_ints(7, 0).is_err());
        let mut skip = Reader::new(&bytes[..bytes.len() - 1], 0, true);
        assert!(skip.skip_int(8).is_ok() && skip.skip_ints(6, 0).is_err());

        // Uncompressed chunks: fixed widths.
        let mut fixed = Reader::new(&bytes, 0, false);
        fixed.skip_ints(3, 14).unwrap();
        assert_eq!(fixed.pos, 14);
        assert!(fixed.skip_ints(1, 8).is_err());
    }
}
