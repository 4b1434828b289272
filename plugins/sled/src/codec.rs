//! Values as sled stores them.
//!
//! sled 0.34 compresses every log message on its own and creates a zstd context for each: on
//! the side-by-side load that was 12–15 % of ingest CPU, and a restart spent about 65 % of its
//! time creating decompression contexts while it read the log back (seconds per 20 MB). Data
//! directories created since keep sled's compression off and compress values here, with one
//! reused context per thread; directories created before keep sled's compression (sled refuses
//! to open a database with the other setting) and store values as they are.
//!
//! ```text
//! packed value = 0x00 raw bytes                         (short, or not worth compressing)
//!              | 0x01 varint raw length, zstd frame
//!              | 0x02 varint dictionary id, varint raw length, zstd frame packed with it
//! ```
//!
//! Chunks of a service that has a compression dictionary ([`crate::zdict`]) are packed with it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;

use kiln_plugin_api::StorageError;

use crate::column::{put_varint, Reader};
use crate::zdict::{Dictionaries, Prepared};

/// zstd level: 3 compresses columns of varints about as well as higher levels here, faster.
const LEVEL: i32 = 3;
/// Values shorter than this are kept raw: a zstd frame's header would eat the gain.
const MIN_COMPRESS: usize = 64;
const RAW: u8 = 0;
const ZSTD: u8 = 1;
const DICT: u8 = 2;

thread_local! {
    static COMPRESSOR: RefCell<zstd::block::Compressor> = RefCell::new(zstd::block::Compressor::new());
    static DECOMPRESSOR: RefCell<zstd::block::Decompressor> =
        RefCell::new(zstd::block::Decompressor::new());
    static DICT_COMPRESSOR: RefCell<(zstd::zstd_safe::CCtx<'static>, Vec<u8>)> =
        RefCell::new((zstd::zstd_safe::CCtx::create(), Vec::new()));
    static DICT_DECOMPRESSOR: RefCell<zstd::zstd_safe::DCtx<'static>> =
        RefCell::new(zstd::zstd_safe::DCtx::create());
}

/// How values are stored in one data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// sled compresses (directories created before packing): values as they are.
    SledCompressed,
    /// Values packed here; sled's compression off.
    Packed,
}

impl Codec {
    /// The codec of the data directory at `path`: what its sled `conf` says; `for_new` when
    /// the directory is new.
    pub fn of_directory(path: &Path, for_new: Codec) -> Self {
        // The file ends in a binary checksum: read it as bytes.
        match std::fs::read(path.join("conf")) {
            Ok(conf)
                if String::from_utf8_lossy(&conf)
                    .lines()
                    .any(|l| l.trim() == "use_compression: true") =>
            {
                Codec::SledCompressed
            }
            Ok(_) => Codec::Packed,
            Err(_) => for_new,
        }
    }

    pub fn sled_compression(self) -> bool {
        self == Codec::SledCompressed
    }

    pub fn pack(self, raw: &[u8]) -> Vec<u8> {
        if self == Codec::SledCompressed {
            return raw.to_vec();
        }
        if raw.len() >= MIN_COMPRESS {
            let compressed = COMPRESSOR.with(|c| c.borrow_mut().compress(raw, LEVEL));
            if let Ok(compressed) = compressed {
                if compressed.len() + 6 < raw.len() {
                    let mut out = Vec::with_capacity(compressed.len() + 6);
                    out.push(ZSTD);
                    put_varint(&mut out, raw.len() as u64);
                    out.extend_from_slice(&compressed);
                    return out;
                }
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 1);
        out.push(RAW);
        out.extend_from_slice(raw);
        out
    }

    /// [`Codec::pack`] with `dict` when there is one (directories whose values are packed here).
    pub fn pack_with(self, raw: &[u8], dict: Option<&Prepared>) -> Vec<u8> {
        let Some(dict) = dict.filter(|_| self == Codec::Packed && raw.len() >= MIN_COMPRESS) else {
            return self.pack(raw);
        };
        let packed = DICT_COMPRESSOR.with(|c| {
            let (cctx, scratch) = &mut *c.borrow_mut();
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(raw.len()));
            cctx.compress_using_cdict(scratch, raw, &dict.cdict)
                .ok()
                .filter(|&n| n + 12 < raw.len())
                .map(|_| {
                    let mut out = Vec::with_capacity(scratch.len() + 12);
                    out.push(DICT);
                    put_varint(&mut out, dict.id as u64);
                    put_varint(&mut out, raw.len() as u64);
                    out.extend_from_slice(scratch);
                    out
                })
        });
        packed.unwrap_or_else(|| self.pack(raw))
    }

    /// [`Codec::unpack`] of a value that may be packed with a dictionary of `dicts`.
    pub fn unpack_with<'a>(
        self,
        stored: &'a [u8],
        dicts: &Dictionaries,
    ) -> Result<Cow<'a, [u8]>, StorageError> {
        if self != Codec::Packed || stored.first() != Some(&DICT) {
            return self.unpack(stored);
        }
        let mut r = Reader {
            bytes: stored,
            pos: 1,
        };
        let id = u32::try_from(r.varint()?)
            .map_err(|_| StorageError::Corrupt("compression dictionary id out of range".into()))?;
        let dict = dicts.get(id)?;
        unpack_frame(r, |frame, len| {
            let mut raw = Vec::with_capacity(len);
            DICT_DECOMPRESSOR
                .with(|d| {
                    d.borrow_mut()
                        .decompress_using_ddict(&mut raw, frame, &dict.ddict)
                })
                .map(|_| raw)
                .map_err(|e| zstd::zstd_safe::get_error_name(e).to_string())
        })
    }

    pub fn unpack(self, stored: &[u8]) -> Result<Cow<'_, [u8]>, StorageError> {
        if self == Codec::SledCompressed {
            return Ok(Cow::Borrowed(stored));
        }
        match stored.first() {
            Some(&RAW) => Ok(Cow::Borrowed(&stored[1..])),
            Some(&ZSTD) => unpack_frame(
                Reader {
                    bytes: stored,
                    pos: 1,
                },
                |frame, len| {
                    DECOMPRESSOR
                        .with(|d| d.borrow_mut().decompress(frame, len))
                        .map_err(|e| e.to_string())
                },
            ),
            Some(&DICT) => Err(StorageError::Corrupt(
                "a value packed with a compression dictionary where none is used".into(),
            )),
            Some(other) => Err(StorageError::Corrupt(format!(
                "packed value of unknown kind {other}"
            ))),
            None => Err(StorageError::Corrupt("empty packed value".into())),
        }
    }
}

/// The rest of a packed value at `r`: its raw length, then a zstd frame, inflated by `inflate`
/// (given the frame and the length) and checked against that length.
fn unpack_frame(
    mut r: Reader,
    inflate: impl FnOnce(&[u8], usize) -> Result<Vec<u8>, String>,
) -> Result<Cow<'static, [u8]>, StorageError> {
    let len = r.varint()? as usize;
    let frame = &r.bytes[r.pos..];
    // A frame never expands more than this; a larger length is corruption.
    if len > frame.len().saturating_mul(1024).max(1 << 16) {
        return Err(StorageError::Corrupt(format!(
            "packed value claims {len} bytes from {}",
            frame.len()
        )));
    }
    let raw =
        inflate(frame, len).map_err(|e| StorageError::Corrupt(format!("packed value: {e}")))?;
    if raw.len() != len {
        return Err(StorageError::Corrupt(format!(
            "packed value is {} bytes, expected {len}",
            raw.len()
        )));
    }
    Ok(Cow::Owned(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks_short_long_and_incompressible_values() {
        let long: Vec<u8> = (0..4000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        let noise: Vec<u8> = (0..500u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        for raw in [&b""[..], b"short", &long, &noise] {
            let packed = Codec::Packed.pack(raw);
            assert_eq!(Codec::Packed.unpack(&packed).unwrap().as_ref(), raw);
            assert!(packed.len() <= raw.len() + 1);
            assert_eq!(Codec::SledCompressed.pack(raw), raw);
        }
        assert!(Codec::Packed.pack(&long).len() < long.len() / 10);
    }

    #[test]
    fn corrupt_packed_values_are_errors() {
        let long = vec![7u8; 1000];
        let packed = Codec::Packed.pack(&long);
        for cut in 0..packed.len() {
            assert!(
                Codec::Packed.unpack(&packed[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(Codec::Packed.unpack(&[9, 1, 2]).is_err());
        let mut lying = vec![ZSTD];
        put_varint(&mut lying, u64::MAX >> 1);
        lying.extend_from_slice(&packed[3..]);
        assert!(Codec::Packed.unpack(&lying).is_err());
    }
}
