//! # kiln-wal
//!
//! A write-ahead log: what a caller [`append`](Wal::append)s is on disk (written and fsynced)
//! when the call returns. Concurrent appends are committed in groups: one caller writes and
//! fsyncs everything queued so far while the others wait, so a busy log costs one fsync per
//! group, not per record.
//!
//! Records live in segment files `<first seq>.log` in one directory:
//!
//! ```text
//! record = u32 LE payload length | u32 LE CRC-32 of (seq, payload) | u64 LE seq | payload
//! ```
//!
//! Sequence numbers start at 1 and grow by one per record. A caller that has made the effect of
//! every record up to `seq` durable elsewhere calls [`checkpoint`](Wal::checkpoint); segments
//! wholly at or below the checkpoint are deleted, so the log holds about what has not been
//! checkpointed yet. After a crash, [`replay`](Wal::replay) hands back the records after the
//! checkpoint. A record cut short by the crash (the tail of the last segment) fails its
//! checksum and is dropped: it was never acknowledged.
//!
//! Segments below the checkpoint are not all deleted: up to [`SPARE_SEGMENTS`] are kept as
//! `<n>.spare` and renamed into the next new segments, which then overwrite blocks the file
//! already has. An fsync of an overwrite commits data only, where one of an append also commits
//! the file's new size and blocks through the filesystem's journal: on ext4 that halves the CPU
//! and the time of each group commit. Records left over from a spare's earlier life have
//! valid checksums but older sequence numbers than the segment's name, which is where a scan
//! stops.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

const HEADER: usize = 16;
/// Checkpointed segments kept for reuse instead of deleted (at most this many times
/// `segment_bytes` of disk, plus a group).
pub const SPARE_SEGMENTS: usize = 3;
/// A record larger than this is refused on append and taken for corruption on replay.
pub const MAX_RECORD_BYTES: usize = 1 << 30;
const CHECKPOINT_FILE: &str = "checkpoint";

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("write-ahead log in {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write-ahead log: record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("write-ahead log: writing or syncing failed, the record is not durable: {0}")]
    NotDurable(String),
}

/// Settings of a log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    pub dir: PathBuf,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
    /// fsync after each group (off only for tests and benchmarks of the cost).
    pub sync: bool,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Every record at or below this is covered by the checkpoint.
    pub checkpoint: u64,
    /// Records after the checkpoint, to replay.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Bytes dropped: a torn tail, or a damaged record and what followed it in its segment.
    pub dropped_bytes: u64,
}

/// Sizes of the log now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub segments: u64,
    pub disk_bytes: u64,
    /// The last durable record.
    pub durable_seq: u64,
    pub checkpoint: u64,
}

struct Segment {
    first_seq: u64,
    path: PathBuf,
}

struct Writer {
    file: Option<File>,
    len: u64,
    /// Start a new segment with the next group (the current one is wholly checkpointed).
    rotate: bool,
}

/// Runs once a record is durable, in sequence order.
type OnDurable = Box<dyn FnOnce(u64) + Send>;

struct State {
    next_seq: u64,
    /// Encoded records not yet handed to a writer: each record's header, then its payload's
    /// parts (shared with the caller, not copied).
    queued: Vec<Bytes>,
    queued_bytes: usize,
    queued_last: u64,
    /// What to run for the queued records once they are durable.
    queued_then: Vec<(u64, OnDurable)>,
    /// Every record up to here is durable or failed.
    resolved: u64,
    durable: u64,
    /// Recent groups that failed: `(first, last, why)`.
    failed: Vec<(u64, u64, String)>,
    writing: bool,
}

/// An open log. Share it behind an `Arc`; every method takes `&self`.
pub struct Wal {
    config: WalConfig,
    state: Mutex<State>,
    done: Condvar,
    writer: Mutex<Writer>,
    checkpoint: Mutex<u64>,
    /// Checkpointed segment files waiting to be reused, oldest first.
    spares: Mutex<Vec<PathBuf>>,
}

fn seg_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    crc_parts(seq, &[payload])
}

fn crc_parts<P: AsRef<[u8]>>(seq: u64, parts: &[P]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    for p in parts {
        h.update(p.as_ref());
    }
    h.finalize()
}

impl Wal {
    /// Opens (or creates) the log in `config.dir`, checks every record after the checkpoint and
    /// cuts a torn tail. Appends then go to a new segment.
    pub fn open(config: WalConfig) -> Result<(Self, Recovery), WalError> {
        let dir = config.dir.clone();
        let err = |source| WalError::Io {
            dir: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let checkpoint = read_checkpoint(&dir).map_err(err)?;
        let mut recovery = Recovery {
            checkpoint,
            ..Recovery::default()
        };
        let mut last_seq = checkpoint;
        let segments = list_segments(&dir).map_err(err)?;
        for seg in &segments {
            let scan = scan_segment(seg, |seq, payload| {
                if seq > checkpoint {
                    recovery.records += 1;
                    recovery.bytes += payload.len() as u64;
                }
                last_seq = last_seq.max(seq);
                Ok(())
            })
            .map_err(err)?;
            if scan.good_len < scan.file_len {
                if scan.damaged {
                    recovery.dropped_bytes += scan.file_len - scan.good_len;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(&seg.path)
                    .map_err(err)?;
                f.set_len(scan.good_len).map_err(err)?;
                f.sync_all().map_err(err)?;
            }
        }
        let spares = list_spares(&dir).map_err(err)?;
        let wal = Self {
            state: Mutex::new(State {
                next_seq: last_seq + 1,
                queued: Vec::new(),
                queued_bytes: 0,
                queued_last: last_seq,
                queued_then: Vec::new(),
                resolved: last_seq,
                durable: last_seq,
                failed: Vec::new(),
                writing: false,
            }),
            done: Condvar::new(),
            writer: Mutex::new(Writer {
                file: None,
                len: 0,
                rotate: true,
            }),
            checkpoint: Mutex::new(checkpoint),
            spares: Mutex::new(spares),
            config,
        };
        Ok((wal, recovery))
    }

    fn io_err(&self, source: io::Error) -> WalError {
        WalError::Io {
            dir: self.config.dir.clone(),
            source,
        }
    }

    /// Calls `f` with every record after `after`, in order, reading one segment at a time.
    /// Stops at the first error `f` returns.
    pub fn replay<E: From<WalError>>(
        &self,
        after: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let segments = list_segments(&self.config.dir).map_err(|e| self.io_err(e))?;
        for (i, seg) in segments.iter().enumerate() {
            if segments
                .get(i + 1)
                .is_some_and(|n| n.first_seq <= after + 1)
            {
                continue;
            }
            let mut out = Ok(());
            scan_segment(seg, |seq, payload| {
                if seq > after && out.is_ok() {
                    out = f(seq, payload);
                }
                Ok(())
            })
            .map_err(|e| self.io_err(e))?;
            out?;
        }
        Ok(())
    }

    /// Appends one record and returns its sequence number once it is durable.
    /// Blocks: call it from a thread that may wait (tokio: `spawn_blocking`).
    pub fn append(&self, payload: &[u8]) -> Result<u64, WalError> {
        self.append_inner(vec![Bytes::copy_from_slice(payload)], None)
    }

    /// [`append`](Self::append), and `then(seq)` once the record is durable. The `then`s of all
    /// records run in sequence order, each before its `append_then` returns (so a consumer fed
    /// from them sees records in log order); a record that fails never runs its `then`.
    ///
    /// The record's payload is `parts` one after the other; they are written as they are, not
    /// copied into one buffer first.
    pub fn append_then(
        &self,
        parts: Vec<Bytes>,
        then: impl FnOnce(u64) + Send + 'static,
    ) -> Result<u64, WalError> {
        self.append_inner(parts, Some(Box::new(then)))
    }

    fn append_inner(&self, parts: Vec<Bytes>, then: Option<OnDurable>) -> Result<u64, WalError> {
        let len: usize = parts.iter().map(Bytes::len).sum();
        if len > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge(len));
        }
        let mut st = self.state.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(&(len as u32).to_le_bytes());
        header.extend_from_slice(&crc_parts(seq, &parts).to_le_bytes());
        header.extend_from_slice(&seq.to_le_bytes());
        st.queued.push(header.into());
        st.queued.extend(parts);
        st.queued_bytes += HEADER + len;
        st.queued_last = seq;
        if let Some(then) = then {
            st.queued_then.push((seq, then));
        }
        loop {
            if st.resolved >= seq {
                return match st.failed.iter().find(|(a, b, _)| (*a..=*b).contains(&seq)) {
                    Some((_, _, why)) => Err(WalError::NotDurable(why.clone())),
                    None => Ok(seq),
                };
            }
            if st.writing {
                self.done.wait(&mut st);
                continue;
            }
            // Lead a group: write and sync everything queued, including other callers' records.
            st.writing = true;
            let group = std::mem::take(&mut st.queued);
            let group_bytes = std::mem::take(&mut st.queued_bytes);
            let thens = std::mem::take(&mut st.queued_then);
            let (first, last) = (st.resolved + 1, st.queued_last);
            drop(st);
            let result = self.write_group(first, &group, group_bytes as u64);
            drop(group);
            if result.is_ok() {
                // Still the only writer: the next group's `then`s cannot overtake these.
                for (seq, then) in thens {
                    then(seq);
                }
            }
            st = self.state.lock();
            st.writing = false;
            st.resolved = last;
            match result {
                Ok(()) => st.durable = last,
                Err(e) => {
                    st.failed.push((first, last, e.to_string()));
                    if st.failed.len() > 64 {
                        st.failed.remove(0);
                    }
                }
            }
            self.done.notify_all();
        }
    }

    /// A file for a new segment: a spare renamed (its blocks are overwritten), or a new file.
    fn new_segment_file(&self, path: &Path) -> io::Result<File> {
        while let Some(spare) = self.spares.lock().pop() {
            match fs::rename(&spare, path) {
                Ok(()) => return OpenOptions::new().write(true).open(path),
                // Removed by hand: try the next, or create.
                Err(_) => continue,
            }
        }
        OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(path)
    }

    /// A segment wholly below the checkpoint: kept as a spare while there are few, else deleted.
    fn retire(&self, seg: &Segment) -> io::Result<()> {
        let mut spares = self.spares.lock();
        if spares.len() < SPARE_SEGMENTS {
            let spare = seg.path.with_extension("spare");
            fs::rename(&seg.path, &spare)?;
            spares.push(spare);
            Ok(())
        } else {
            fs::remove_file(&seg.path)
        }
    }

    fn write_group(&self, first_seq: u64, group: &[Bytes], group_bytes: u64) -> io::Result<()> {
        let mut w = self.writer.lock();
        if w.file.is_none() || w.rotate || w.len >= self.config.segment_bytes {
            let path = self.config.dir.join(seg_name(first_seq));
            let file = self.new_segment_file(&path)?;
            if self.config.sync {
                File::open(&self.config.dir)?.sync_all()?;
            }
            *w = Writer {
                file: Some(file),
                len: 0,
                rotate: false,
            };
        }
        let len = w.len;
        let file = w.file.as_mut().expect("opened above");
        let written = write_all_parts(file, group).and_then(|()| {
            if self.config.sync {
                file.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                w.len += group_bytes;
                Ok(())
            }
            Err(e) => {
                // Leave no half group behind: later groups go to a fresh segment, this one is
                // cut back to its last whole group.
                let _ = file.set_len(len);
                w.rotate = true;
                Err(e)
            }
        }
    }

    /// Records up to `seq` are durable elsewhere: remember it and delete whole segments below it.
    pub fn checkpoint(&self, seq: u64) -> Result<(), WalError> {
        let mut cp = self.checkpoint.lock();
        if seq <= *cp {
            return Ok(());
        }
        let dir = &self.config.dir;
        let tmp = dir.join("checkpoint.tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&seq.to_le_bytes())?;
            f.write_all(&crc(seq, &[]).to_le_bytes())?;
            if self.config.sync {
                f.sync_all()?;
            }
            fs::rename(&tmp, dir.join(CHECKPOINT_FILE))?;
            if self.config.sync {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.io_err(e))?;
        *cp = seq;
        drop(cp);
        if self.state.lock().durable <= seq {
            // Everything written is covered: the next group starts a segment of its own so
            // this one can go.
            self.writer.lock().rotate = true;
        }
        let segments = list_segments(dir).map_err(|e| self.io_err(e))?;
        for pair in segments.windows(2) {
            if pair[1].first_seq <= seq + 1 {
                self.retire(&pair[0]).map_err(|e| self.io_err(e))?;
            }
        }
        Ok(())
    }

    /// Makes the next record's sequence number greater than `seq`: for a caller whose own
    /// record of applied sequence numbers is ahead of the log (a log directory removed by hand),
    /// so that new records are never taken for ones it already holds. Call before any append.
    pub fn advance_past(&self, seq: u64) {
        let mut st = self.state.lock();
        if st.next_seq <= seq {
            st.next_seq = seq + 1;
            st.queued_last = seq;
            st.resolved = seq;
            st.durable = seq;
        }
    }

    /// After a final checkpoint that covers every durable record (a clean shutdown): deletes
    /// every segment and spare, so the next start has nothing to scan. Appends after it start a new one.
    pub fn close(&self) -> Result<(), WalError> {
        let cp = *self.checkpoint.lock();
        if self.state.lock().durable > cp {
            return Ok(());
        }
        let mut w = self.writer.lock();
        w.file = None;
        w.rotate = true;
        for seg in list_segments(&self.config.dir).map_err(|e| self.io_err(e))? {
            fs::remove_file(&seg.path).map_err(|e| self.io_err(e))?;
        }
        for spare in self.spares.lock().drain(..) {
            fs::remove_file(&spare).map_err(|e| self.io_err(e))?;
        }
        Ok(())
    }

    /// `disk_bytes` counts spares too.
    pub fn stats(&self) -> WalStats {
        let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
        let (segments, segment_bytes) = list_segments(&self.config.dir)
            .map(|s| (s.len() as u64, s.iter().map(|s| size(&s.path)).sum::<u64>()))
            .unwrap_or_default();
        let spare_bytes: u64 = self.spares.lock().iter().map(|p| size(p)).sum();
        let disk_bytes = segment_bytes + spare_bytes;
        WalStats {
            segments,
            disk_bytes,
            durable_seq: self.state.lock().durable,
            checkpoint: *self.checkpoint.lock(),
        }
    }

    /// The last durable record.
    pub fn durable_seq(&self) -> u64 {
        self.state.lock().durable
    }
}

fn read_checkpoint(dir: &Path) -> io::Result<u64> {
    match fs::read(dir.join(CHECKPOINT_FILE)) {
        Ok(b) if b.len() == 12 => {
            let seq = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
            let sum = u32::from_le_bytes(b[8..].try_into().expect("4 bytes"));
            if sum == crc(seq, &[]) {
                Ok(seq)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the checkpoint file is damaged; remove it to replay the whole log",
                ))
            }
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the checkpoint file has the wrong size; remove it to replay the whole log",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn list_segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first_seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first_seq) = first_seq {
            out.push(Segment { first_seq, path });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

fn list_spares(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "spare") {
            out.push(path);
        }
    }
    Ok(out)
}

/// Writes `parts` in order with as few system calls as the kernel allows.
fn write_all_parts(file: &mut File, parts: &[Bytes]) -> io::Result<()> {
    const MAX_SLICES: usize = 512;
    let mut rest = parts;
    while !rest.is_empty() {
        let n = rest.len().min(MAX_SLICES);
        let mut slices: Vec<IoSlice> = rest[..n].iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut slices, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        rest = &rest[n..];
    }
    Ok(())
}

struct Scan {
    good_len: u64,
    file_len: u64,
    /// The scan stopped at what claims to be the segment's next record but is cut short or
    /// fails its checksum: a torn tail, or damage. Not set for the end of the file, nor for
    /// bytes left over from a reused file's earlier life (older sequence numbers, or the middle
    /// of an old record).
    damaged: bool,
}

/// Reads a segment's records until the end, the first damaged one, or the first that belongs
/// to an earlier life of the file (a sequence number below the segment's first).
fn scan_segment(
    seg: &Segment,
    mut f: impl FnMut(u64, &[u8]) -> io::Result<()>,
) -> io::Result<Scan> {
    let file = File::open(&seg.path)?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut good_len = 0u64;
    let mut header = [0u8; HEADER];
    let mut payload = Vec::new();
    let mut prev_seq = None::<u64>;
    let damaged = loop {
        if good_len + HEADER as u64 > file_len {
            // A header cut short (or a few bytes left over from a reused file's earlier life).
            break good_len < file_len;
        }
        r.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..].try_into().expect("8 bytes"));
        let next = prev_seq.map_or(seg.first_seq, |p| p + 1);
        if len > MAX_RECORD_BYTES || good_len + (HEADER + len) as u64 > file_len {
            break seq == next;
        }
        payload.resize(len, 0);
        r.read_exact(&mut payload)?;
        if crc(seq, &payload) != sum {
            break seq == next;
        }
        if seq < seg.first_seq || prev_seq.is_some_and(|p| seq <= p) {
            // Left over from the file's earlier life.
            break false;
        }
        f(seq, &payload)?;
        prev_seq = Some(seq);
        good_len += (HEADER + len) as u64;
    };
    Ok(Scan {
        good_len,
        file_len,
        damaged,
    })
}

#[cfg(test)]
mod tests;
