//! A fixed-size, lock-free buffer of raw stacks, written from the SIGPROF handler and drained by
//! the reporter thread.
//!
//! Each slot has a state word: a writer claims an empty slot with a compare-and-swap, fills it and
//! publishes it; the reader copies published slots out and frees them. No allocation, no lock and
//! no waiting on the writer side: when no slot is free the sample is dropped and counted.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// Frames kept per sample (the innermost ones when a stack is deeper).
pub(crate) const MAX_DEPTH: usize = 128;

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const FULL: u8 = 2;

struct Slot {
    state: AtomicU8,
    /// Written only by the writer holding the slot in `WRITING`, read only by the reader after
    /// seeing `FULL`.
    data: UnsafeCell<SlotData>,
}

struct SlotData {
    len: usize,
    tag: u32,
    frames: [usize; MAX_DEPTH],
}

pub(crate) struct Ring {
    slots: Box<[Slot]>,
    /// Where writers start looking for a free slot, so that they spread over the ring.
    next: AtomicUsize,
    dropped: AtomicU64,
}

// SAFETY: a slot's data is accessed by one side at a time, handed over through its state word
// with acquire/release ordering.
unsafe impl Sync for Ring {}

impl Ring {
    pub(crate) fn new(slots: usize) -> Self {
        let slots = (0..slots.max(1))
            .map(|_| Slot {
                state: AtomicU8::new(EMPTY),
                data: UnsafeCell::new(SlotData {
                    len: 0,
                    tag: 0,
                    frames: [0; MAX_DEPTH],
                }),
            })
            .collect();
        Ring {
            slots,
            next: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Stores one sample: `fill` writes its frames into the slot and returns how many it wrote.
    /// Async-signal-safe as long as `fill` is. Returns false (and counts a drop) when full.
    pub(crate) fn push(
        &self,
        tag: u32,
        fill: impl FnOnce(&mut [usize; MAX_DEPTH]) -> usize,
    ) -> bool {
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let slot = &self.slots[(start + i) % n];
            if slot
                .state
                .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                // SAFETY: this writer owns the slot until it stores FULL.
                let data = unsafe { &mut *slot.data.get() };
                data.tag = tag;
                data.len = fill(&mut data.frames).min(MAX_DEPTH);
                slot.state.store(FULL, Ordering::Release);
                return true;
            }
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Hands every published sample (frames innermost first, tag-set id) to `f` and frees its slot.
    pub(crate) fn drain(&self, mut f: impl FnMut(&[usize], u32)) {
        for slot in self.slots.iter() {
            if slot.state.load(Ordering::Acquire) == FULL {
                // SAFETY: FULL slots are not touched by writers until stored EMPTY below.
                let data = unsafe { &*slot.data.get() };
                f(&data.frames[..data.len], data.tag);
                slot.state.store(EMPTY, Ordering::Release);
            }
        }
    }

    /// Samples dropped for want of a free slot since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_drain_in_full_and_a_full_ring_drops_and_counts() {
        let ring = Ring::new(4);
        for i in 0..6usize {
            let ok = ring.push(i as u32, |f| {
                f[0] = 100 + i;
                f[1] = 200;
                2
            });
            assert_eq!(ok, i < 4, "push {i}");
        }
        assert_eq!(ring.take_dropped(), 2);
        assert_eq!(ring.take_dropped(), 0);
        let mut got = Vec::new();
        ring.drain(|frames, tag| got.push((frames.to_vec(), tag)));
        got.sort();
        let want: Vec<_> = (0..4usize)
            .map(|i| (vec![100 + i, 200], i as u32))
            .collect();
        assert_eq!(got, want);
        // Drained slots are free again.
        assert!(ring.push(9, |_| 0));
        let mut n = 0;
        ring.drain(|frames, tag| {
            assert!(frames.is_empty());
            assert_eq!(tag, 9);
            n += 1;
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing_while_there_is_room() {
        let ring = std::sync::Arc::new(Ring::new(4096));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    for i in 0..1000usize {
                        assert!(ring.push(t, |f| {
                            f[0] = i;
                            1
                        }));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut per_thread = [0; 4];
        ring.drain(|_, tag| per_thread[tag as usize] += 1);
        assert_eq!(per_thread, [1000; 4]);
        assert_eq!(ring.take_dropped(), 0);
    }
}
