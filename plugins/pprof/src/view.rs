//! A pprof read in place: the protobuf's strings and samples borrow the request's bytes.
//!
//! prost builds a `Vec` per sample (location ids, values, labels), per location (lines) and a
//! `String` per string-table entry, and decoding spent about half its time in the allocator.
//! Here samples stay as their encoded bytes until [`SampleReader::read`] takes each into
//! reused buffers, and strings are `&str` into the body. Locations and functions are read
//! into flat vectors once. Fields Kiln does not use (mappings, comments, columns) are skipped.

use kiln_plugin_api::varint::{read_uvarint, VarintError};
use kiln_plugin_api::DecodeError;

use crate::proto::{Function, Label, Line, ValueType};

/// A location: its id, address and lines (`ProfileView::lines[start..start + len]`).
pub struct LocationView {
    pub id: u64,
    pub address: u64,
    pub lines: (u32, u32),
}

/// The parts of a `perftools.profiles.Profile` that decoding uses.
#[derive(Default)]
pub struct ProfileView<'a> {
    pub sample_type: Vec<ValueType>,
    /// Each sample's encoded message.
    pub samples: Vec<&'a [u8]>,
    pub locations: Vec<LocationView>,
    pub lines: Vec<Line>,
    pub functions: Vec<Function>,
    pub strings: Vec<&'a str>,
    pub time_nanos: i64,
    pub duration_nanos: i64,
    pub period_type: Option<ValueType>,
    pub period: i64,
}

/// Why bytes are not a pprof protobuf.
#[derive(Debug)]
pub struct WireError(String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError::Malformed(e.0)
    }
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const BYTES: u8 = 2;
const FIXED32: u8 = 5;

/// A cursor over one protobuf message.
struct Wire<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        read_uvarint(self.bytes, &mut self.pos).map_err(|e| {
            WireError(match e {
                VarintError::Truncated => "a varint runs past the end of its message".into(),
                VarintError::TooLong => "a varint is longer than ten bytes".into(),
            })
        })
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u64, u8), WireError> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 {
            return Err(WireError("a field has number 0".into()));
        }
        Ok((field, (k & 7) as u8))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| WireError(format!("a field of {n} bytes runs past its message")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn bytes_field(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.varint()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn skip(&mut self, wire: u8) -> Result<(), WireError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.take(8).map(drop),
            BYTES => self.bytes_field().map(drop),
            FIXED32 => self.take(4).map(drop),
            other => Err(WireError(format!("unsupported wire type {other}"))),
        }
    }

    /// A scalar field's value, checked to be a varint.
    fn scalar(&mut self, wire: u8) -> Result<u64, WireError> {
        if wire != VARINT {
            return Err(WireError(format!("an integer field has wire type {wire}")));
        }
        self.varint()
    }

    /// A repeated integer field, packed or not, appended to `out`.
    fn repeated(&mut self, wire: u8, mut out: impl FnMut(u64)) -> Result<(), WireError> {
        match wire {
            VARINT => out(self.varint()?),
            BYTES => {
                let mut packed = Wire::new(self.bytes_field()?);
                while !packed.at_end() {
                    out(packed.varint()?);
                }
            }
            other => {
                return Err(WireError(format!(
                    "a repeated integer field has wire type {other}"
                )))
            }
        }
        Ok(())
    }

    fn message(&mut self, wire: u8) -> Result<Wire<'a>, WireError> {
        if wire != BYTES {
            return Err(WireError(format!("a message field has wire type {wire}")));
        }
        Ok(Wire::new(self.bytes_field()?))
    }
}

fn value_type(mut w: Wire) -> Result<ValueType, WireError> {
    let mut vt = ValueType::default();
    while !w.at_end() {
        match w.key()? {
            (1, t) => vt.r#type = w.scalar(t)? as i64,
            (2, t) => vt.unit = w.scalar(t)? as i64,
            (_, t) => w.skip(t)?,
        }
    }
    Ok(vt)
}

fn function(mut w: Wire) -> Result<Function, WireError> {
    let mut f = Function::default();
    while !w.at_end() {
        match w.key()? {
            (1, t) => f.id = w.scalar(t)?,
            (2, t) => f.name = w.scalar(t)? as i64,
            (3, t) => f.system_name = w.scalar(t)? as i64,
            (4, t) => f.filename = w.scalar(t)? as i64,
            (5, t) => f.start_line = w.scalar(t)? as i64,
            (_, t) => w.skip(t)?,
        }
    }
    Ok(f)
}

fn line(mut w: Wire) -> Result<Line, WireError> {
    let mut l = Line::default();
    while !w.at_end() {
        match w.key()? {
            (1, t) => l.function_id = w.scalar(t)?,
            (2, t) => l.line = w.scalar(t)? as i64,
            (3, t) => l.column = w.scalar(t)? as i64,
            (_, t) => w.skip(t)?,
        }
    }
    Ok(l)
}

fn label(mut w: Wire) -> Result<Label, WireError> {
    let mut l = Label::default();
    while !w.at_end() {
        match w.key()? {
            (1, t) => l.key = w.scalar(t)? as i64,
            (2, t) => l.str = w.scalar(t)? as i64,
            (3, t) => l.num = w.scalar(t)? as i64,
            (4, t) => l.num_unit = w.scalar(t)? as i64,
            (_, t) => w.skip(t)?,
        }
    }
    Ok(l)
}

impl<'a> ProfileView<'a> {
    /// Reads the profile in `bytes` (uncompressed).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut p = ProfileView::default();
        // Sized up front: growing them by doubling cost more than this pass, which reads only
        // the top-level keys and lengths.
        if let Ok(counts) = count_fields(bytes) {
            p.samples.reserve_exact(counts[2]);
            p.locations.reserve_exact(counts[4]);
            // Most locations have one line; inlined calls add more.
            p.lines.reserve(counts[4]);
            p.functions.reserve_exact(counts[5]);
            p.strings.reserve_exact(counts[6]);
        }
        let mut w = Wire::new(bytes);
        while !w.at_end() {
            match w.key()? {
                (1, t) => {
                    let m = w.message(t)?;
                    p.sample_type.push(value_type(m)?);
                }
                (2, t) => {
                    let m = w.message(t)?;
                    p.samples.push(m.bytes);
                }
                (4, t) => {
                    let m = w.message(t)?;
                    p.read_location(m)?;
                }
                (5, t) => {
                    let m = w.message(t)?;
                    p.functions.push(function(m)?);
                }
                (6, t) => {
                    if t != BYTES {
                        return Err(WireError(format!("a string has wire type {t}")));
                    }
                    let s = std::str::from_utf8(w.bytes_field()?).map_err(|_| {
                        WireError(format!(
                            "string table entry {} is not valid UTF-8",
                            p.strings.len()
                        ))
                    })?;
                    p.strings.push(s);
                }
                (9, t) => p.time_nanos = w.scalar(t)? as i64,
                (10, t) => p.duration_nanos = w.scalar(t)? as i64,
                (11, t) => {
                    let m = w.message(t)?;
                    p.period_type = Some(value_type(m)?);
                }
                (12, t) => p.period = w.scalar(t)? as i64,
                // Mappings, drop/keep frames, comments, the default sample type: unused.
                (_, t) => w.skip(t)?,
            }
        }
        Ok(p)
    }

    fn read_location(&mut self, mut w: Wire) -> Result<(), WireError> {
        let start = self.lines.len() as u32;
        let (mut id, mut address) = (0, 0);
        while !w.at_end() {
            match w.key()? {
                (1, t) => id = w.scalar(t)?,
                (3, t) => address = w.scalar(t)?,
                (4, t) => {
                    let m = w.message(t)?;
                    self.lines.push(line(m)?);
                }
                (_, t) => w.skip(t)?,
            }
        }
        self.locations.push(LocationView {
            id,
            address,
            lines: (start, self.lines.len() as u32 - start),
        });
        Ok(())
    }

    pub fn location_lines(&self, loc: &LocationView) -> &[Line] {
        let (start, len) = loc.lines;
        &self.lines[start as usize..(start + len) as usize]
    }
}

/// How many times each of the fields 1–7 occurs at the top level of a profile message.
fn count_fields(bytes: &[u8]) -> Result<[usize; 8], WireError> {
    let mut counts = [0; 8];
    let mut w = Wire::new(bytes);
    while !w.at_end() {
        let (field, t) = w.key()?;
        if let Some(c) = counts.get_mut(field as usize) {
            *c += 1;
        }
        w.skip(t)?;
    }
    Ok(counts)
}

/// Reused buffers one sample at a time is read into.
#[derive(Default)]
pub struct SampleReader {
    pub location_ids: Vec<u64>,
    pub values: Vec<i64>,
    pub labels: Vec<Label>,
}

impl SampleReader {
    /// Reads the sample message `bytes`, replacing what the buffers held.
    pub fn read(&mut self, bytes: &[u8]) -> Result<(), WireError> {
        self.location_ids.clear();
        self.values.clear();
        self.labels.clear();
        let mut w = Wire::new(bytes);
        while !w.at_end() {
            match w.key()? {
                (1, t) => w.repeated(t, |v| self.location_ids.push(v))?,
                (2, t) => w.repeated(t, |v| self.values.push(v as i64))?,
                (3, t) => {
                    let m = w.message(t)?;
                    self.labels.push(label(m)?);
                }
                (_, t) => w.skip(t)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message;

    fn sample_profile() -> proto::Profile {
        proto::Profile {
            sample_type: vec![proto::ValueType { r#type: 1, unit: 2 }],
            sample: vec![
                proto::Sample {
                    location_id: vec![1, 2, 300],
                    value: vec![-5],
                    label: vec![proto::Label {
                        key: 3,
                        str: 4,
                        ..Default::default()
                    }],
                },
                proto::Sample {
                    location_id: vec![2],
                    value: vec![1 << 40],
                    label: vec![],
                },
            ],
            location: vec![proto::Location {
                id: 300,
                address: 0xdead_beef,
                line: vec![
                    proto::Line {
                        function_id: 9,
                        line: 12,
                        column: 0,
                    },
                    proto::Line {
                        function_id: 8,
                        line: -1,
                        column: 3,
                    },
                ],
                ..Default::default()
            }],
            function: vec![proto::Function {
                id: 9,
                name: 1,
                system_name: 2,
                filename: 3,
                start_line: 4,
            }],
            string_table: vec![
                "".into(),
                "cpu".into(),
                "ns".into(),
                "ключ".into(),
                "v".into(),
            ],
            time_nanos: 7,
            duration_nanos: -8,
            period_type: Some(proto::ValueType { r#type: 1, unit: 2 }),
            period: 10_000_000,
            mapping: vec![proto::Mapping {
                id: 1,
                ..Default::default()
            }],
            comment: vec![4],
            ..Default::default()
        }
    }

    #[test]
    fn reads_what_prost_reads() {
        let p = sample_profile();
        let bytes = p.encode_to_vec();
        let v = ProfileView::parse(&bytes).unwrap();
        assert_eq!(v.sample_type, p.sample_type);
        assert_eq!(
            v.strings,
            p.string_table
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(v.functions, p.function);
        assert_eq!(
            (v.time_nanos, v.duration_nanos, v.period),
            (7, -8, 10_000_000)
        );
        assert_eq!(v.period_type, p.period_type);
        assert_eq!(v.locations.len(), 1);
        assert_eq!(
            (v.locations[0].id, v.locations[0].address),
            (300, 0xdead_beef)
        );
        assert_eq!(v.location_lines(&v.locations[0]), &p.location[0].line[..]);
        assert_eq!(v.samples.len(), 2);
        let mut r = SampleReader::default();
        for (raw, s) in v.samples.iter().zip(&p.sample) {
            r.read(raw).unwrap();
            assert_eq!(r.location_ids, s.location_id);
            assert_eq!(r.values, s.value);
            assert_eq!(r.labels, s.label);
        }
    }

    #[test]
    fn unpacked_repeated_fields_read_as_packed_ones() {
        // Sample { location_id: 1, location_id: 2 (unpacked), value: [3] (packed) }
        let bytes = [0x08, 1, 0x08, 2, 0x12, 1, 3];
        let mut r = SampleReader::default();
        r.read(&bytes).unwrap();
        assert_eq!(r.location_ids, [1, 2]);
        assert_eq!(r.values, [3]);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let bytes = sample_profile().encode_to_vec();
        for cut in 1..bytes.len() {
            // Any prefix either parses (it ended between fields) or says why not.
            let _ = ProfileView::parse(&bytes[..cut]);
        }
        assert!(ProfileView::parse(&[0x32, 5, b'a']).is_err());
        assert!(
            ProfileView::parse(&[0x32, 1, 0xff]).is_err(),
            "invalid UTF-8"
        );
        assert!(ProfileView::parse(&[0x0b]).is_err(), "a group");
        assert!(ProfileView::parse(&[0x00]).is_err(), "field 0");
    }
}
