//! Addresses to function names, from the ELF symbol tables of the loaded objects.
//!
//! No debug info is read: parsing DWARF costs tens of MB for a program of some size, the symbol
//! table a few hundred KB. What that gives up: inlined functions show as their caller, and
//! there are no file names or line numbers. Per object only (address, size, name offset) is
//! kept in memory; a name is read from the file when an address first needs it, demangled, and
//! cached (the cache is bounded).

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Distinct addresses whose names are kept between reports; beyond it the cache starts over.
const MAX_CACHED: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum SymbolError {
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: not a 64-bit little-endian ELF file")]
    NotElf(PathBuf),
    #[error("{0}: malformed ELF: {1}")]
    Malformed(PathBuf, &'static str),
}

#[derive(Clone, Copy)]
struct Sym {
    /// Link-time address (add the object's load bias for the runtime one).
    addr: u64,
    size: u32,
    /// Offset of the name in the string table.
    name: u32,
}

/// One object's function symbols, sorted by address.
struct SymbolTable {
    file: File,
    strtab_offset: u64,
    strtab_size: u64,
    syms: Vec<Sym>,
}

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const STT_FUNC: u8 = 2;
const STT_GNU_IFUNC: u8 = 10;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    entsize: u64,
}

impl SymbolTable {
    /// Reads the function symbols of `path`: its full symbol table, or the dynamic one when the
    /// file is stripped.
    fn load(path: &Path) -> Result<Self, SymbolError> {
        let io = |e| SymbolError::Io(path.to_path_buf(), e);
        let bad = |what| SymbolError::Malformed(path.to_path_buf(), what);
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut header = [0u8; 64];
        file.read_exact_at(&mut header, 0).map_err(io)?;
        // ELF magic, 64-bit, little-endian.
        if &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
            return Err(SymbolError::NotElf(path.to_path_buf()));
        }
        let (shoff, shentsize, shnum) = (
            u64_at(&header, 0x28),
            u16_at(&header, 0x3a) as u64,
            u16_at(&header, 0x3c) as u64,
        );
        if shentsize < 64 || shoff.saturating_add(shentsize * shnum) > len {
            return Err(bad("section headers out of the file"));
        }
        let mut headers = vec![0u8; (shentsize * shnum) as usize];
        file.read_exact_at(&mut headers, shoff).map_err(io)?;
        let sections: Vec<Section> = headers
            .chunks_exact(shentsize as usize)
            .map(|h| Section {
                kind: u32_at(h, 4),
                offset: u64_at(h, 0x18),
                size: u64_at(h, 0x20),
                link: u32_at(h, 0x28),
                entsize: u64_at(h, 0x38),
            })
            .collect();
        let symtab = sections
            .iter()
            .find(|s| s.kind == SHT_SYMTAB)
            .or_else(|| sections.iter().find(|s| s.kind == SHT_DYNSYM))
            .ok_or_else(|| bad("no symbol table"))?;
        let strtab = sections
            .get(symtab.link as usize)
            .ok_or_else(|| bad("symbol table without strings"))?;
        if symtab.entsize < 24
            || symtab.offset.saturating_add(symtab.size) > len
            || strtab.offset.saturating_add(strtab.size) > len
        {
            return Err(bad("symbol table out of the file"));
        }
        // Streamed through a small buffer: the table itself may be several MB.
        let mut reader = BufReader::with_capacity(64 << 10, &file);
        reader.seek(SeekFrom::Start(symtab.offset)).map_err(io)?;
        let mut entry = vec![0u8; symtab.entsize as usize];
        let mut syms = Vec::new();
        for _ in 0..symtab.size / symtab.entsize {
            reader.read_exact(&mut entry).map_err(io)?;
            let (name, info, shndx) = (u32_at(&entry, 0), entry[4], u16_at(&entry, 6));
            let (addr, size) = (u64_at(&entry, 8), u64_at(&entry, 16));
            let kind = info & 0xf;
            if (kind == STT_FUNC || kind == STT_GNU_IFUNC) && shndx != 0 && addr != 0 {
                syms.push(Sym {
                    addr,
                    size: size.min(u32::MAX as u64) as u32,
                    name,
                });
            }
        }
        drop(reader);
        syms.sort_unstable_by_key(|s| (s.addr, std::cmp::Reverse(s.size)));
        syms.dedup_by_key(|s| s.addr);
        syms.shrink_to_fit();
        Ok(SymbolTable {
            file,
            strtab_offset: strtab.offset,
            strtab_size: strtab.size,
            syms,
        })
    }

    /// The raw (mangled) name of the function holding link-time address `addr`.
    fn lookup(&self, addr: u64) -> Option<String> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = self.syms[i];
        // A symbol without a size extends to the next one.
        if s.size != 0 && addr >= s.addr + s.size as u64 {
            return None;
        }
        self.name_at(s.name as u64)
    }

    fn name_at(&self, offset: u64) -> Option<String> {
        let mut name = Vec::new();
        let mut chunk = [0u8; 256];
        let mut at = offset;
        while at < self.strtab_size && name.len() < 64 << 10 {
            let want = chunk.len().min((self.strtab_size - at) as usize);
            let n = self
                .file
                .read_at(&mut chunk[..want], self.strtab_offset + at)
                .ok()?;
            if n == 0 {
                break;
            }
            if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
                name.extend_from_slice(&chunk[..end]);
                return String::from_utf8(name).ok();
            }
            name.extend_from_slice(&chunk[..n]);
            at += n as u64;
        }
        None
    }
}

/// A loaded object: where it sits in memory, and its symbols once first needed.
struct Object {
    path: PathBuf,
    bias: usize,
    /// Runtime address ranges of its loaded segments.
    ranges: Vec<(usize, usize)>,
    table: Option<Result<SymbolTable, ()>>,
}

impl Object {
    fn contains(&self, addr: usize) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= addr && addr < hi)
    }
}

/// A loaded object as the dynamic loader lists it: file, load bias, runtime address ranges.
struct Loaded {
    path: PathBuf,
    bias: usize,
    ranges: Vec<(usize, usize)>,
}

/// The loaded objects of this process.
fn loaded_objects() -> Vec<Loaded> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        let out = &mut *(out as *mut Vec<Loaded>);
        let info = &*info;
        let bias = info.dlpi_addr as usize;
        let name = if info.dlpi_name.is_null() {
            ""
        } else {
            CStr::from_ptr(info.dlpi_name).to_str().unwrap_or("")
        };
        // The main program has no name here.
        let path = if name.is_empty() && out.is_empty() {
            PathBuf::from("/proc/self/exe")
        } else {
            PathBuf::from(name)
        };
        let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
        let ranges = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD)
            .map(|p| {
                let lo = bias.wrapping_add(p.p_vaddr as usize);
                (lo, lo.wrapping_add(p.p_memsz as usize))
            })
            .collect();
        out.push(Loaded { path, bias, ranges });
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: the callback only reads the loader's entries and writes to `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut _ as *mut libc::c_void) };
    out
}

/// The address range of the loaded object whose file name contains `needle` (e.g. the unwinder's
/// own library, which the signal handler does not unwind from).
pub(crate) fn object_range(needle: &str) -> Option<(usize, usize)> {
    loaded_objects()
        .into_iter()
        .find(|o| o.path.to_string_lossy().contains(needle))
        .and_then(|o| {
            let lo = o.ranges.iter().map(|x| x.0).min()?;
            let hi = o.ranges.iter().map(|x| x.1).max()?;
            Some((lo, hi))
        })
}

/// Names addresses, caching what it resolved.
pub(crate) struct Symbolizer {
    objects: Vec<Object>,
    cache: HashMap<usize, Arc<str>>,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Symbolizer {
            objects: Vec::new(),
            cache: HashMap::new(),
        }
    }

    /// Re-reads the list of loaded objects (libraries come and go), keeping the symbol tables
    /// of those still loaded at the same place. Called once per report.
    pub(crate) fn refresh(&mut self) {
        let mut old = std::mem::take(&mut self.objects);
        for Loaded { path, bias, ranges } in loaded_objects() {
            let table = old
                .iter()
                .position(|o| o.path == path && o.bias == bias)
                .and_then(|i| old.swap_remove(i).table);
            self.objects.push(Object {
                path,
                bias,
                ranges,
                table,
            });
        }
        if !old.is_empty() || self.cache.len() > MAX_CACHED {
            // Cached names of addresses in an unloaded object could now be wrong.
            self.cache.clear();
            self.cache.shrink_to_fit();
        }
    }

    /// The function name at `addr`. `return_address`: the address is one a call returns to (all
    /// frames but the innermost), so the call itself is one byte before it.
    pub(crate) fn name(&mut self, addr: usize, return_address: bool) -> Arc<str> {
        let at = if return_address {
            addr.saturating_sub(1)
        } else {
            addr
        };
        if let Some(n) = self.cache.get(&at) {
            return n.clone();
        }
        let name: Arc<str> = self.resolve(at).into();
        self.cache.insert(at, name.clone());
        name
    }

    fn resolve(&mut self, addr: usize) -> String {
        let Some(o) = self.objects.iter_mut().find(|o| o.contains(addr)) else {
            return format!("0x{addr:x}");
        };
        let table = o.table.get_or_insert_with(|| {
            SymbolTable::load(&o.path).map_err(|e| log::debug!("kiln: no symbols: {e}"))
        });
        let vaddr = addr.wrapping_sub(o.bias) as u64;
        match table.as_ref().ok().and_then(|t| t.lookup(vaddr)) {
            Some(raw) => format!("{:#}", rustc_demangle::demangle(&raw)),
            None => {
                let file = o.path.file_name().unwrap_or_default().to_string_lossy();
                format!("{file}+0x{vaddr:x}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_function_with_a_name() -> usize {
        std::hint::black_box(42)
    }

    #[test]
    fn names_functions_of_the_program_and_of_libc() {
        let mut s = Symbolizer::new();
        s.refresh();
        let here = a_function_with_a_name as *const () as usize;
        let name = s.name(here + 1, false);
        assert!(
            name.ends_with("symbols::tests::a_function_with_a_name"),
            "{name}"
        );
        // As a return address (the call sits just before it) and from the cache.
        assert_eq!(s.name(here + 2, true), s.name(here + 1, false));
        let getpid = libc::getpid as *const () as usize;
        let name = s.name(getpid, false);
        assert!(name.contains("getpid"), "{name}");
        assert_eq!(a_function_with_a_name(), 42);
    }

    #[test]
    fn unknown_addresses_and_files_are_named_not_fatal() {
        let mut s = Symbolizer::new();
        s.refresh();
        assert_eq!(&*s.name(0x10, false), "0x10");
        let err = SymbolTable::load(Path::new("/proc/self/status"))
            .err()
            .unwrap();
        assert!(matches!(err, SymbolError::NotElf(_)), "{err}");
        assert!(SymbolTable::load(Path::new("/nonexistent/lib.so")).is_err());
    }
}
