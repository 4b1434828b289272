use std::sync::Arc;

use super::*;

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        sync: true,
    }
}

fn replayed(wal: &Wal, after: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    wal.replay(after, |seq, p| {
        out.push((seq, p.to_vec()));
        Ok::<_, WalError>(())
    })
    .unwrap();
    out
}

#[test]
fn appends_survive_reopen_and_checkpoint_skips_them() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec, Recovery::default());
    for i in 0..10u8 {
        assert_eq!(wal.append(&[i; 100]).unwrap(), u64::from(i) + 1);
    }
    drop(wal);
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec.records, 10);
    assert_eq!(rec.bytes, 1000);
    let all = replayed(&wal, 0);
    assert_eq!(all.len(), 10);
    assert_eq!(all[3], (4, vec![3u8; 100]));
    wal.checkpoint(7).unwrap();
    assert_eq!(wal.append(b"next").unwrap(), 11);
    drop(wal);
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec.checkpoint, 7);
    assert_eq!(rec.records, 4);
    let seqs: Vec<u64> = replayed(&wal, 7).iter().map(|r| r.0).collect();
    assert_eq!(seqs, vec![8, 9, 10, 11]);
}

#[test]
fn a_torn_tail_is_cut_and_appends_go_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    for _ in 0..3 {
        wal.append(&[7u8; 50]).unwrap();
    }
    drop(wal);
    let seg = list_segments(dir.path()).unwrap().pop().unwrap().path;
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the third record.
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec.records, 2);
    assert_eq!(rec.dropped_bytes, (HEADER + 50 - 10) as u64);
    assert_eq!(wal.append(b"after").unwrap(), 3);
    drop(wal);
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec.records, 3);
    assert_eq!(replayed(&wal, 0)[2], (3, b"after".to_vec()));
}

#[test]
fn a_flipped_bit_ends_the_segment_there() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    for _ in 0..3 {
        wal.append(&[1u8; 20]).unwrap();
    }
    drop(wal);
    let seg = list_segments(dir.path()).unwrap().pop().unwrap().path;
    let mut bytes = fs::read(&seg).unwrap();
    bytes[HEADER + 20 + HEADER + 3] ^= 0xff;
    fs::write(&seg, bytes).unwrap();
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!(rec.records, 1);
    assert_eq!(replayed(&wal, 0).len(), 1);
}

#[test]
fn checkpoints_delete_covered_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.segment_bytes = 1000;
    let (wal, _) = Wal::open(c).unwrap();
    for _ in 0..100 {
        wal.append(&[0u8; 200]).unwrap();
    }
    let before = wal.stats();
    assert!(before.segments > 10, "{before:?}");
    wal.checkpoint(100).unwrap();
    wal.append(b"x").unwrap();
    wal.checkpoint(101).unwrap();
    let after = wal.stats();
    assert_eq!(after.segments, 1, "{after:?}");
    assert_eq!(after.checkpoint, 101);
    assert_eq!(replayed(&wal, 101).len(), 0);
}

#[test]
fn concurrent_appends_are_grouped_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| wal.append(format!("{t}-{i}").as_bytes()).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1600).collect::<Vec<u64>>());
    assert_eq!(wal.durable_seq(), 1600);
    let all = replayed(&wal, 0);
    assert_eq!(all.len(), 1600);
    assert!(all.windows(2).all(|w| w[0].0 + 1 == w[1].0));
}

#[test]
fn a_damaged_checkpoint_is_an_error_not_a_silent_replay() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(CHECKPOINT_FILE), [1, 2, 3]).unwrap();
    let err = Wal::open(config(dir.path())).err().unwrap();
    assert!(err.to_string().contains("checkpoint"), "{err}");
}

#[test]
fn thens_run_in_sequence_order_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    let wal = Arc::new(wal);
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (wal, seen) = (wal.clone(), seen.clone());
            std::thread::spawn(move || {
                for _ in 0..100 {
                    let into = seen.clone();
                    let seq = wal
                        .append_then(vec![Bytes::from_static(b"r")], move |s| into.lock().push(s))
                        .unwrap();
                    // Ran before append_then returned.
                    assert!(seen.lock().contains(&seq));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(*seen.lock(), (1..=800).collect::<Vec<u64>>());
}

#[test]
fn close_after_a_full_checkpoint_leaves_no_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    wal.append(b"a").unwrap();
    wal.append(b"b").unwrap();
    wal.checkpoint(1).unwrap();
    wal.close().unwrap();
    assert_eq!(
        wal.stats().segments,
        1,
        "record 2 is not checkpointed: kept"
    );
    wal.checkpoint(2).unwrap();
    wal.close().unwrap();
    assert_eq!(wal.stats().segments, 0);
    drop(wal);
    let (wal, rec) = Wal::open(config(dir.path())).unwrap();
    assert_eq!((rec.checkpoint, rec.records), (2, 0));
    assert_eq!(
        wal.append(b"c").unwrap(),
        3,
        "sequence numbers go on after the checkpoint"
    );
}

#[test]
fn advance_past_moves_the_next_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    wal.advance_past(41);
    assert_eq!(wal.append(b"x").unwrap(), 42);
    wal.advance_past(10);
    assert_eq!(wal.append(b"y").unwrap(), 43);
}

fn spares_in(dir: &Path) -> usize {
    list_spares(dir).unwrap().len()
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap())
}

/// A log in `dir` with `segment_bytes` segments, `records` records of `len` bytes (record `i`
/// made of byte `i`) appended and checkpointed: its spares are full of valid old records.
fn with_spares(dir: &Path, segment_bytes: u64, records: u8, len: usize) -> (Wal, WalConfig) {
    let mut c = config(dir);
    c.segment_bytes = segment_bytes;
    let (wal, _) = Wal::open(c.clone()).unwrap();
    for i in 0..records {
        wal.append(&vec![i; len]).unwrap();
    }
    wal.checkpoint(records.into()).unwrap();
    assert_eq!(spares_in(dir), SPARE_SEGMENTS, "the rest deleted");
    (wal, c)
}

#[test]
fn checkpointed_segments_become_spares_and_spares_become_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = with_spares(dir.path(), 1000, 40, 200);
    // The next segments reuse the spares: no new files while spares last.
    let spare_inodes: Vec<u64> = list_spares(dir.path())
        .unwrap()
        .iter()
        .map(|p| inode(p))
        .collect();
    wal.append(&[1u8; 200]).unwrap();
    assert_eq!(spares_in(dir.path()), SPARE_SEGMENTS - 1);
    let seg = list_segments(dir.path()).unwrap().pop().unwrap();
    assert!(
        spare_inodes.contains(&inode(&seg.path)),
        "a spare renamed into service"
    );
    assert_eq!(seg.first_seq, 41);
    assert!(
        wal.stats().disk_bytes > 1000,
        "spares are counted as disk used"
    );
}

#[test]
fn records_left_in_a_reused_segment_are_never_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, c) = with_spares(dir.path(), 4000, 60, 300);
    // Shorter new records over them, some of them ending in the middle of an old one.
    for i in 0..7u8 {
        wal.append(&[100 + i; 77]).unwrap();
    }
    wal.checkpoint(62).unwrap();
    for i in 7..9u8 {
        wal.append(&[100 + i; 77]).unwrap();
    }
    drop(wal);
    let (wal, rec) = Wal::open(c.clone()).unwrap();
    assert_eq!(rec.checkpoint, 62);
    assert_eq!(rec.records, 7, "{rec:?}");
    assert_eq!(rec.dropped_bytes, 0, "old records are not damage: {rec:?}");
    let replay = replayed(&wal, 62);
    let expected: Vec<(u64, Vec<u8>)> = (2..9u8)
        .map(|i| (61 + u64::from(i), vec![100 + i; 77]))
        .collect();
    assert_eq!(replay, expected);
    // Appends go on after them, and a second reopen sees the same.
    assert_eq!(wal.append(b"after").unwrap(), 70);
    drop(wal);
    let (wal, rec) = Wal::open(c).unwrap();
    assert_eq!(rec.records, 8);
    assert_eq!(replayed(&wal, 62).last().unwrap(), &(70, b"after".to_vec()));
}

#[test]
fn a_torn_record_in_a_reused_segment_is_still_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, c) = with_spares(dir.path(), 4000, 60, 300);
    for _ in 0..3 {
        wal.append(&[9u8; 50]).unwrap();
    }
    drop(wal);
    let seg = list_segments(dir.path()).unwrap().pop().unwrap();
    assert_eq!(seg.first_seq, 61);
    // A crash that left the third record's header and half its payload over the old bytes.
    let mut bytes = fs::read(&seg.path).unwrap();
    let third = 2 * (HEADER + 50) + HEADER + 25;
    bytes[third..third + 25].fill(0xee);
    fs::write(&seg.path, bytes).unwrap();
    let (wal, rec) = Wal::open(c).unwrap();
    assert_eq!(rec.records, 2);
    assert!(rec.dropped_bytes > 0, "{rec:?}");
    assert_eq!(replayed(&wal, 60).len(), 2);
}

#[test]
fn close_deletes_spares_and_reopen_reuses_those_left() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, c) = with_spares(dir.path(), 1000, 20, 200);
    drop(wal);
    // A crash: the spares stay and the next process takes them.
    let (wal, _) = Wal::open(c.clone()).unwrap();
    wal.append(b"x").unwrap();
    assert_eq!(spares_in(dir.path()), SPARE_SEGMENTS - 1);
    wal.checkpoint(21).unwrap();
    wal.close().unwrap();
    assert_eq!(spares_in(dir.path()), 0);
    assert_eq!(wal.stats().segments, 0);
}

#[test]
fn a_record_in_parts_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    let parts = vec![
        Bytes::from_static(b"head-"),
        Bytes::new(),
        Bytes::from(vec![5u8; 3000]),
        Bytes::from_static(b"-tail"),
    ];
    let seq = wal.append_then(parts, |_| {}).unwrap();
    drop(wal);
    let (wal, _) = Wal::open(config(dir.path())).unwrap();
    let mut whole = b"head-".to_vec();
    whole.extend([5u8; 3000]);
    whole.extend(b"-tail");
    assert_eq!(replayed(&wal, 0), vec![(seq, whole)]);
}
