//! Sampling without uploading, for programs that keep their own profiles: the Kiln daemon
//! profiles itself this way and stores the result through its own pipeline.

use std::time::SystemTime;

use crate::{profile, sampler, symbols, Error};

/// The process's CPU sampler, read by its owner instead of pushed to a server.
///
/// Only one sampler runs per process, so this fails while an agent samples (and an agent fails
/// while this runs). The sample buffer holds about five seconds of two busy cores at 100 Hz:
/// call [`LocalProfiler::drain`] every second or so between two [`LocalProfiler::collect`]s.
pub struct LocalProfiler {
    sampler: sampler::Sampler,
    counts: profile::Aggregate,
    symbols: symbols::Symbolizer,
    sample_rate: i32,
    from: SystemTime,
}

impl LocalProfiler {
    /// Starts sampling at `sample_rate` Hz of CPU time.
    pub fn start(sample_rate: i32) -> Result<Self, Error> {
        if !(1..=1000).contains(&sample_rate) {
            return Err(Error::Config(format!(
                "sample rate {sample_rate} Hz is outside 1..=1000"
            )));
        }
        let sampler =
            sampler::Sampler::start(sample_rate).map_err(|e| Error::Profiler(e.to_string()))?;
        Ok(Self {
            sampler,
            counts: profile::Aggregate::default(),
            symbols: symbols::Symbolizer::new(),
            sample_rate,
            from: SystemTime::now(),
        })
    }

    /// Moves the samples taken so far from the signal handler's buffer into the counts.
    pub fn drain(&mut self) {
        let counts = &mut self.counts;
        self.sampler.drain(|stack, tag| counts.add(stack, tag));
    }

    /// The samples since the last call (tag sets merged) as an uncompressed pprof with
    /// `samples/count` and `cpu/nanoseconds`, its start time, and how many samples were lost
    /// to a full buffer; `None` when nothing was sampled.
    pub fn collect(&mut self) -> Option<(Vec<u8>, SystemTime, u64)> {
        self.drain();
        let lost = self.counts.dropped + self.sampler.take_dropped();
        let from = std::mem::replace(&mut self.from, SystemTime::now());
        if self.counts.is_empty() {
            return None;
        }
        self.symbols.refresh();
        let stacks: profile::Stacks = self.counts.take_by_tag().into_values().flatten().collect();
        let duration = self.from.duration_since(from).unwrap_or_default();
        let pprof = profile::encode(&stacks, &mut self.symbols, self.sample_rate, from, duration);
        Some((pprof, from, lost))
    }
}

/// Names code addresses of this process from the loaded objects' ELF symbol tables (no DWARF:
/// function names only, a few bytes per function in memory), caching what it resolved.
pub struct AddressNames(symbols::Symbolizer);

impl Default for AddressNames {
    fn default() -> Self {
        Self(symbols::Symbolizer::new())
    }
}

impl AddressNames {
    /// Re-reads which objects are loaded where; call before naming a new batch of addresses.
    pub fn refresh(&mut self) {
        self.0.refresh();
    }

    /// The function containing the call that returns to `return_address`, or `0x…` when no
    /// symbol covers it.
    pub fn name(&mut self, return_address: usize) -> std::sync::Arc<str> {
        self.0.name(return_address, true)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[inline(never)]
    fn spin(ms: u64) -> u64 {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        x
    }

    #[test]
    fn collects_this_process_and_refuses_a_second_sampler() {
        let _serial = crate::sampler::TEST_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        assert!(matches!(LocalProfiler::start(0), Err(Error::Config(_))));
        let mut p = LocalProfiler::start(100).expect("sampler starts");
        assert!(matches!(LocalProfiler::start(100), Err(Error::Profiler(_))));
        spin(300);
        let (pprof, _, lost) = p.collect().expect("samples were taken");
        assert_eq!(lost, 0);
        let decoded = <profile::proto::Profile as prost::Message>::decode(&pprof[..]).unwrap();
        let total: i64 = decoded.sample.iter().map(|s| s.value[0]).sum();
        assert!(total >= 10, "{total} samples in 300 ms of CPU at 100 Hz");
        let named_spin = decoded.string_table.iter().any(|s| s.contains("spin"));
        assert!(named_spin, "{:?}", decoded.string_table);
        let mut names = AddressNames::default();
        names.refresh();
        let here = spin as *const () as usize + 1;
        assert!(names.name(here).contains("spin"), "{}", names.name(here));
        // Nothing sampled since: nothing to collect.
        drop(p);
        let mut q = LocalProfiler::start(100).expect("restarts after the first stopped");
        assert!(q.collect().is_none_or(|(_, _, lost)| lost == 0));
    }
}
