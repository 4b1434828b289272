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
                    let seq = wal.append_then(b"r", move |s| into.lock().push(s)).unwrap();
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
