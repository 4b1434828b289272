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
