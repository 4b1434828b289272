//! ClickHouse's `RowBinary` format: the columns of each row in order, little-endian numbers,
//! strings and arrays prefixed by their length as an unsigned LEB128 varint.

use kiln_plugin_api::varint::{read_uvarint, VarintError};

use crate::error::ClickHouseError;

/// Rows being encoded for one `INSERT … FORMAT RowBinary`.
#[derive(Debug, Default, Clone)]
pub struct RowWriter {
    pub bytes: Vec<u8>,
    pub rows: usize,
}

impl RowWriter {
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Counts one more row (call once its columns are written).
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    /// Appends the rows of `other`.
    pub fn append(&mut self, other: RowWriter) {
        self.bytes.extend_from_slice(&other.bytes);
        self.rows += other.rows;
    }

    fn varint(&mut self, mut n: u64) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.bytes.push(b);
                return;
            }
            self.bytes.push(b | 0x80);
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.varint(v.len() as u64);
        self.bytes.extend_from_slice(v.as_bytes());
        self
    }

    pub fn array_u64(&mut self, v: &[u64]) -> &mut Self {
        self.varint(v.len() as u64);
        for &x in v {
            self.u64(x);
        }
        self
    }

    pub fn array_i64(&mut self, v: &[i64]) -> &mut Self {
        self.varint(v.len() as u64);
        for &x in v {
            self.i64(x);
        }
        self
    }
}

/// Reads rows of a `FORMAT RowBinary` answer.
pub struct RowReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> RowReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    pub fn at_end(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ClickHouseError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| {
            ClickHouseError::Decode(format!(
                "a RowBinary answer ends after {} bytes, inside a value",
                self.bytes.len()
            ))
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, ClickHouseError> {
        read_uvarint(self.bytes, &mut self.at).map_err(|e| match e {
            VarintError::Truncated => ClickHouseError::Decode(format!(
                "a RowBinary answer ends after {} bytes, inside a value",
                self.bytes.len()
            )),
            VarintError::TooLong => ClickHouseError::Decode("a length varint is too long".into()),
        })
    }

    #[cfg(test)]
    pub fn u8(&mut self) -> Result<u8, ClickHouseError> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, ClickHouseError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn u64(&mut self) -> Result<u64, ClickHouseError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn i64(&mut self) -> Result<i64, ClickHouseError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn string(&mut self) -> Result<String, ClickHouseError> {
        let n = self.varint()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| ClickHouseError::Decode("a string is not UTF-8".into()))
    }

    pub fn array_u64(&mut self) -> Result<Vec<u64>, ClickHouseError> {
        let n = self.varint()? as usize;
        (0..n).map(|_| self.u64()).collect()
    }

    #[cfg(test)]
    pub fn array_i64(&mut self) -> Result<Vec<i64>, ClickHouseError> {
        let n = self.varint()? as usize;
        (0..n).map(|_| self.i64()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type() {
        let mut w = RowWriter::default();
        w.u8(7)
            .u32(70_000)
            .u64(u64::MAX)
            .i64(-5)
            .str(&"é".repeat(100))
            .array_u64(&[1, 2, 3])
            .array_i64(&[-1, 2]);
        w.end_row();
        let mut r = RowReader::new(&w.bytes);
        assert_eq!(r.take(1).unwrap(), [7]);
        assert_eq!(r.u32().unwrap(), 70_000);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.string().unwrap(), "é".repeat(100));
        assert_eq!(r.array_u64().unwrap(), vec![1, 2, 3]);
        assert_eq!(r.array_i64().unwrap(), vec![-1, 2]);
        assert!(r.at_end());
        assert!(RowReader::new(&[3, b'a']).string().is_err(), "truncated");
    }
}
