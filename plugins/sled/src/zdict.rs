//! Compression dictionaries, one per service, for its chunks.
//!
//! A chunk is a few hundred bytes: too little for zstd to find repeats within it, while the
//! chunks of one service repeat each other (the same stack ids, in the same order, with similar
//! values). A dictionary trained on a service's first chunks gives zstd those repeats: on the
//! side-by-side load the finest level's chunks packed 1.5× (values varied at random) to 2.6×
//! (the fixtures as pushed) smaller than with zstd alone, at about 1 µs per chunk.
//!
//! ```text
//! codec_dicts tree: dictionary id (u32 BE) → service id (u32 BE) | dictionary bytes
//! ```
//!
//! A service's chunks are offered as samples until enough are gathered
//! ([`TRAIN_BYTES`], or [`TRAIN_MIN_BYTES`] once the first is [`TRAIN_AFTER_S`] old); the
//! dictionary is then trained, written before any chunk packed with it, and used for the
//! service's chunks from the next apply on. A packed value names its dictionary, so reading
//! needs no service.
//!
//! Stacks come and go (deploys, new code paths), and a dictionary learnt from last week's
//! stacks packs today's less well. Each dictionary's ratio is watched over windows of
//! [`RETRAIN_WINDOW`] bytes: once a window packs less than [`RETRAIN_BELOW`] of the first
//! window's ratio, the service is sampled again and a new dictionary replaces it for new chunks.
//! Dictionaries are never rewritten or deleted (chunks of every age may refer to them); one is
//! [`DICT_BYTES`] on disk for at least [`RETRAIN_WINDOW`] bytes of chunks packed with the one
//! before, so they stay a fraction of a percent of what was written.
//!
//! Memory is bounded twice: samples by [`TRAINING_BUDGET`] over all services (a service that
//! finds it full is sampled later), and dictionaries prepared for use (zstd's digested forms,
//! ~250 KB each) by a byte budget, least recently used first out.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use kiln_plugin_api::StorageError;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use zstd::zstd_safe::{CDict, DDict};

use crate::error::io;
use crate::{report_gauge, u32_at};

/// Size of a trained dictionary: on the side-by-side load 8 KiB packed within 4 % of 32 KiB,
/// and its digested form is half the size.
pub const DICT_BYTES: usize = 8 * 1024;
/// A service's samples train a dictionary once they reach this many bytes.
pub const TRAIN_BYTES: usize = 256 * 1024;
/// ... or this many, once the first sample is [`TRAIN_AFTER_S`] old (services that write
/// little).
pub const TRAIN_MIN_BYTES: usize = 16 * 1024;
pub const TRAIN_AFTER_S: u64 = 600;
/// Samples of every service together.
pub const TRAINING_BUDGET: usize = 4 * 1024 * 1024;
/// Trainings per [`Dictionaries::train_ready`] (tens of milliseconds each, on the thread that
/// applies writes): a burst of new services is trained over several flushes, not in one.
const TRAININGS_PER_CALL: usize = 2;
/// After a training that failed (too little variety), the service is sampled again after this.
const RETRY_AFTER_S: u64 = 3600;
/// Chunks shorter than this teach a dictionary nothing.
const MIN_SAMPLE: usize = 8;
/// Bytes of chunks (unpacked) over which a dictionary's ratio is measured.
pub const RETRAIN_WINDOW: u64 = 4 * 1024 * 1024;
/// A window packing less than this share of the first window's ratio retrains.
pub const RETRAIN_BELOW: f64 = 0.67;
/// zstd level for packing with a dictionary, as without one ([`crate::codec`]).
pub const LEVEL: i32 = 3;

/// Bytes of samples and prepared dictionaries, every storage of the process: for `/metrics`.
pub static MEMORY: AtomicU64 = AtomicU64::new(0);

/// A dictionary in the forms zstd packs and unpacks with.
pub struct Prepared {
    pub id: u32,
    pub cdict: CDict<'static>,
    pub ddict: DDict<'static>,
    bytes: usize,
}

impl Prepared {
    fn new(id: u32, raw: &[u8]) -> Self {
        let cdict = zstd::zstd_safe::create_cdict(raw, LEVEL);
        let ddict = zstd::zstd_safe::create_ddict(raw);
        let bytes = cdict.sizeof() + ddict.sizeof();
        Self {
            id,
            cdict,
            ddict,
            bytes,
        }
    }
}

#[derive(Default)]
struct Samples {
    bytes: Vec<u8>,
    sizes: Vec<usize>,
    first_s: u64,
}

#[derive(Default)]
struct State {
    /// Service id → its dictionary's id.
    of_service: FxHashMap<u32, u32>,
    next_id: u32,
    prepared: FxHashMap<u32, (Arc<Prepared>, u64)>,
    prepared_bytes: usize,
    uses: u64,
    training: FxHashMap<u32, Samples>,
    training_bytes: usize,
    /// Service → when it may be sampled again after a failed training (unix seconds).
    retry_at: FxHashMap<u32, u64>,
    /// Service → how its dictionary packs (this process's observations).
    ratios: FxHashMap<u32, Ratio>,
    /// What this storage last added to [`MEMORY`].
    reported: usize,
}

impl State {
    fn report(&mut self) {
        report_gauge(
            &MEMORY,
            &mut self.reported,
            self.training_bytes + self.prepared_bytes,
        );
    }
}

impl Drop for Dictionaries {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        (st.training_bytes, st.prepared_bytes) = (0, 0);
        st.report();
    }
}

/// A dictionary's packing ratio: the first window's, and the current window's bytes.
#[derive(Default)]
struct Ratio {
    first: Option<f64>,
    raw: u64,
    packed: u64,
    /// The ratio fell: the service is sampled for a new dictionary.
    resample: bool,
}

/// The dictionaries of one data directory.
pub struct Dictionaries {
    tree: sled::Tree,
    /// Bytes of prepared dictionaries kept in memory.
    budget: usize,
    state: Mutex<State>,
}

impl Dictionaries {
    pub fn open(tree: sled::Tree, budget: usize) -> Result<Self, StorageError> {
        let mut st = State::default();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(io)?;
            let (id, service) = (u32_at(&k, 0)?, u32_at(&v, 0)?);
            st.of_service.insert(service, id);
            st.next_id = st.next_id.max(id + 1);
        }
        Ok(Self {
            tree,
            budget,
            state: Mutex::new(st),
        })
    }

    /// The dictionary `service`'s chunks are packed with, if it has one.
    pub fn for_service(&self, service: u32) -> Result<Option<Arc<Prepared>>, StorageError> {
        let id = self.state.lock().of_service.get(&service).copied();
        id.map(|id| self.get(id)).transpose()
    }

    /// Dictionary `id`, prepared.
    pub fn get(&self, id: u32) -> Result<Arc<Prepared>, StorageError> {
        {
            let mut st = self.state.lock();
            st.uses += 1;
            let uses = st.uses;
            if let Some((p, used)) = st.prepared.get_mut(&id) {
                *used = uses;
                return Ok(p.clone());
            }
        }
        let record = self
            .tree
            .get(id.to_be_bytes())
            .map_err(io)?
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "a chunk names compression dictionary {id}, which is not stored"
                ))
            })?;
        let raw = record
            .get(4..)
            .ok_or_else(|| StorageError::Corrupt("short compression dictionary record".into()))?;
        let prepared = Arc::new(Prepared::new(id, raw));
        let mut st = self.state.lock();
        let uses = st.uses;
        if let Some((p, _)) = st.prepared.get(&id) {
            return Ok(p.clone());
        }
        st.prepared_bytes += prepared.bytes;
        st.prepared.insert(id, (prepared.clone(), uses));
        // Least recently used out first; the one just prepared stays whatever the budget.
        while st.prepared_bytes > self.budget && st.prepared.len() > 1 {
            let (&oldest, _) = st
                .prepared
                .iter()
                .filter(|(&k, _)| k != id)
                .min_by_key(|(_, (_, used))| *used)
                .expect("more than one");
            let (p, _) = st.prepared.remove(&oldest).expect("present");
            st.prepared_bytes -= p.bytes;
        }
        st.report();
        Ok(prepared)
    }

    /// Offers a chunk of `service` (unpacked) to train its dictionary.
    pub fn offer(&self, service: u32, raw: &[u8], now_s: u64) {
        if raw.len() < MIN_SAMPLE {
            return;
        }
        let mut st = self.state.lock();
        let wanted = !st.of_service.contains_key(&service)
            || st.ratios.get(&service).is_some_and(|r| r.resample);
        if !wanted
            || st.training_bytes + raw.len() > TRAINING_BUDGET
            || st.retry_at.get(&service).is_some_and(|&at| now_s < at)
        {
            return;
        }
        let samples = st.training.entry(service).or_default();
        if samples.bytes.len() >= TRAIN_BYTES {
            return;
        }
        if samples.sizes.is_empty() {
            samples.first_s = now_s;
        }
        samples.bytes.extend_from_slice(raw);
        samples.sizes.push(raw.len());
        st.training_bytes += raw.len();
        st.report();
    }

    /// Trains the dictionaries whose samples are ready and stores them; returns how many.
    /// Chunks are packed with a new dictionary only after this returns, so it is on disk first.
    pub fn train_ready(&self, now_s: u64) -> Result<usize, StorageError> {
        let ready: Vec<(u32, Samples)> = {
            let mut st = self.state.lock();
            let services: Vec<u32> = st
                .training
                .iter()
                .filter(|(_, s)| {
                    s.bytes.len() >= TRAIN_BYTES
                        || (s.bytes.len() >= TRAIN_MIN_BYTES
                            && now_s.saturating_sub(s.first_s) >= TRAIN_AFTER_S)
                })
                .map(|(&k, _)| k)
                .take(TRAININGS_PER_CALL)
                .collect();
            services
                .into_iter()
                .map(|k| {
                    let s = st.training.remove(&k).expect("listed");
                    st.training_bytes -= s.bytes.len();
                    (k, s)
                })
                .collect::<Vec<_>>()
        };
        self.state.lock().report();
        let mut trained = 0;
        for (service, samples) in ready {
            match zstd::dict::from_continuous(&samples.bytes, &samples.sizes, DICT_BYTES) {
                Ok(dict) => {
                    let id = {
                        let mut st = self.state.lock();
                        let id = st.next_id;
                        st.next_id += 1;
                        id
                    };
                    let record = [&service.to_be_bytes()[..], &dict].concat();
                    self.tree.insert(id.to_be_bytes(), record).map_err(io)?;
                    let mut st = self.state.lock();
                    st.of_service.insert(service, id);
                    st.ratios.remove(&service);
                    trained += 1;
                }
                Err(e) => {
                    tracing::debug!(service, error = %e, "no compression dictionary trained");
                    self.state
                        .lock()
                        .retry_at
                        .insert(service, now_s + RETRY_AFTER_S);
                }
            }
        }
        Ok(trained)
    }

    /// Records that `raw` bytes of `service`'s chunks were packed with its dictionary into
    /// `packed` bytes; a window that packs much worse than the first asks for a new one.
    pub fn record(&self, service: u32, raw: u64, packed: u64) {
        let mut st = self.state.lock();
        let r = st.ratios.entry(service).or_default();
        r.raw += raw;
        r.packed += packed;
        if r.raw < RETRAIN_WINDOW || r.packed == 0 {
            return;
        }
        let ratio = r.raw as f64 / r.packed as f64;
        match r.first {
            None => r.first = Some(ratio),
            Some(first) if ratio < first * RETRAIN_BELOW && !r.resample => {
                tracing::debug!(service, first, ratio, "compression dictionary retrains");
                r.resample = true;
            }
            Some(_) => {}
        }
        (r.raw, r.packed) = (0, 0);
    }

    /// Bytes of samples waiting to train.
    #[cfg(test)]
    pub fn training_bytes(&self) -> usize {
        self.state.lock().training_bytes
    }

    /// Bytes of prepared dictionaries in memory.
    #[cfg(test)]
    pub fn prepared_bytes(&self) -> usize {
        self.state.lock().prepared_bytes
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dicts(budget: usize) -> (tempfile::TempDir, Dictionaries) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let d = Dictionaries::open(db.open_tree("codec_dicts").unwrap(), budget).unwrap();
        (dir, d)
    }

    /// A chunk-like sample: a header and a run of small varints that differ a little.
    fn sample(i: usize) -> Vec<u8> {
        let mut v = vec![3, 1, 40, 2];
        v.extend((0..200).map(|j| ((j * 7 + i % 5) % 120) as u8));
        v
    }

    #[test]
    fn samples_are_bounded_per_service_and_in_all() {
        let (_dir, d) = dicts(1 << 20);
        for i in 0..10_000 {
            d.offer(1, &sample(i), 0);
        }
        assert!(d.training_bytes() <= TRAIN_BYTES + 204);
        for service in 2..100 {
            for i in 0..2_000 {
                d.offer(service, &sample(i), 0);
            }
        }
        assert!(d.training_bytes() <= TRAINING_BUDGET);
        // Too short to teach anything.
        d.offer(500, b"tiny", 0);
        assert!(!d.state.lock().training.contains_key(&500));
    }

    #[test]
    fn a_trained_dictionary_is_stored_used_and_prepared_within_the_budget() {
        let (_dir, d) = dicts(1);
        for i in 0..2_000 {
            d.offer(7, &sample(i), 0);
            d.offer(8, &sample(i + 1), 0);
        }
        // A service with a little, not yet old enough: waits.
        d.offer(9, &sample(0), 0);
        assert_eq!(d.train_ready(0).unwrap(), 2);
        assert_eq!(d.tree().len(), 2);
        assert!(d.state.lock().training.contains_key(&9));
        let (a, b) = (
            d.for_service(7).unwrap().unwrap(),
            d.for_service(8).unwrap().unwrap(),
        );
        assert_ne!(a.id, b.id);
        assert!(d.for_service(9).unwrap().is_none());
        // Over the budget, only the last prepared one stays.
        assert_eq!(d.state.lock().prepared.len(), 1);
        assert_eq!(d.prepared_bytes(), b.bytes);
        // A service with a dictionary is no longer sampled.
        d.offer(7, &sample(1), 0);
        assert!(!d.state.lock().training.contains_key(&7));
        // Reopened, the dictionaries are found by service.
        let tree = d.tree().clone();
        drop(d);
        let d = Dictionaries::open(tree, 1 << 20).unwrap();
        assert_eq!(d.for_service(8).unwrap().unwrap().id, b.id);
        assert!(d.get(999).is_err());
    }

    #[test]
    fn a_training_that_fails_waits_before_sampling_again() {
        let (_dir, d) = dicts(1 << 20);
        // Two large samples: too few for the trainer, which refuses.
        for _ in 0..2 {
            d.offer(3, &vec![5u8; TRAIN_MIN_BYTES / 2], 0);
        }
        assert_eq!(d.train_ready(TRAIN_AFTER_S).unwrap(), 0);
        assert_eq!(d.tree().len(), 0);
        assert_eq!(d.training_bytes(), 0);
        d.offer(3, &sample(1), TRAIN_AFTER_S + 1);
        assert_eq!(d.training_bytes(), 0, "sampled again too soon");
        d.offer(3, &sample(1), TRAIN_AFTER_S + RETRY_AFTER_S + 1);
        assert!(d.training_bytes() > 0);
    }

    #[test]
    fn a_dictionary_that_packs_worse_than_it_did_is_replaced_for_new_chunks() {
        let (_dir, d) = dicts(1 << 20);
        for i in 0..2_000 {
            d.offer(4, &sample(i), 0);
        }
        assert_eq!(d.train_ready(0).unwrap(), 1);
        let first = d.for_service(4).unwrap().unwrap().id;
        // The first window packs 4×; a window at 3.5× is within the margin.
        d.record(4, RETRAIN_WINDOW, RETRAIN_WINDOW / 4);
        d.record(4, RETRAIN_WINDOW / 2, RETRAIN_WINDOW / 8);
        d.record(4, RETRAIN_WINDOW / 2, RETRAIN_WINDOW / 7);
        d.offer(4, &sample(1), 0);
        assert_eq!(d.training_bytes(), 0, "still packs well: not sampled");
        // Then stacks change: 2×.
        d.record(4, RETRAIN_WINDOW, RETRAIN_WINDOW / 2);
        for i in 0..2_000 {
            d.offer(4, &sample(i + 3), 0);
        }
        assert!(d.training_bytes() > 0);
        assert_eq!(d.train_ready(0).unwrap(), 1);
        let second = d.for_service(4).unwrap().unwrap().id;
        assert_ne!(first, second);
        assert_eq!(d.tree().len(), 2);
        // Chunks packed with the first still read.
        assert_eq!(d.get(first).unwrap().id, first);
        // The new dictionary's ratio is measured afresh.
        d.offer(4, &sample(9), 0);
        assert_eq!(d.training_bytes(), 0);
    }

    #[test]
    fn memory_reported_is_samples_and_prepared_dictionaries() {
        let (_dir, d) = dicts(1 << 20);
        for i in 0..2_000 {
            d.offer(1, &sample(i), 0);
        }
        let training = d.training_bytes() as u64;
        assert!(training > 0);
        assert_eq!(d.state.lock().reported as u64, training);
        d.train_ready(0).unwrap();
        d.for_service(1).unwrap().unwrap();
        let st = d.state.lock();
        assert_eq!(st.training_bytes, 0);
        assert!(st.prepared_bytes > DICT_BYTES);
        assert_eq!(st.reported, st.prepared_bytes);
    }

    #[test]
    fn a_burst_of_new_services_is_trained_a_few_at_a_time() {
        let (_dir, d) = dicts(1 << 20);
        for service in 0..5 {
            for i in 0..1_300 {
                d.offer(service, &sample(i + service as usize), 0);
            }
        }
        assert_eq!(d.train_ready(0).unwrap(), TRAININGS_PER_CALL);
        assert_eq!(d.train_ready(0).unwrap(), TRAININGS_PER_CALL);
        assert_eq!(d.train_ready(0).unwrap(), 1);
        assert_eq!(d.tree().len(), 5);
        assert_eq!(d.training_bytes(), 0);
    }
}
