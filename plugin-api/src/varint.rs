//! Unsigned LEB128 varints (protobuf, Pyroscope's binary trees, Kiln's own chunks): 7 bits per
//! byte, low first, at most ten bytes. Each format maps the error into its own.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes ended inside it.
    Truncated,
    /// Longer than the ten bytes a `u64` needs.
    TooLong,
}

/// Reads the varint at `*pos` and moves `*pos` past every byte it read (also on error).
///
/// Inlined: decoders call it for every field of every sample, and most varints are one byte.
#[inline]
pub fn read_uvarint(bytes: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    if let Some(&b) = bytes.get(*pos) {
        if b & 0x80 == 0 {
            *pos += 1;
            return Ok(u64::from(b));
        }
    }
    read_long_uvarint(bytes, pos)
}

/// [`read_uvarint`] past its one-byte case.
#[inline(never)]
fn read_long_uvarint(bytes: &[u8], pos: &mut usize) -> Result<u64, VarintError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos).ok_or(VarintError::Truncated)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(VarintError::TooLong)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_and_many_bytes_and_says_why_not() {
        let mut pos = 0;
        assert_eq!(read_uvarint(&[0x05, 0xac, 0x02], &mut pos), Ok(5));
        assert_eq!(read_uvarint(&[0x05, 0xac, 0x02], &mut pos), Ok(300));
        assert_eq!(pos, 3);
        let mut pos = 0;
        assert_eq!(read_uvarint(&[0x80], &mut pos), Err(VarintError::Truncated));
        assert_eq!(pos, 1);
        let mut pos = 0;
        assert_eq!(
            read_uvarint(&[0xff; 11], &mut pos),
            Err(VarintError::TooLong)
        );
        assert_eq!(pos, 10);
    }
}
