//! Per-thread CPU clocks and the weight of a sample, in the same terms as the pure-Python
//! sampler (`kiln._sampler.Sampler`): a thread is credited the CPU time it used since the last
//! tick, and every full sampling period of credit is one sample of the stack it runs now.

use std::collections::HashMap;

/// CPU seconds used so far by the kernel thread `tid` of this process, or None if it is gone.
///
/// Linux spells "CPU clock of thread TID" as the clock id `(~TID << 3) | 6`. Unlike
/// `pthread_getcpuclockid` on a stale `pthread_t`, a thread that has ended gives EINVAL.
pub fn thread_cpu_seconds(tid: i32) -> Option<f64> {
    let clock: libc::clockid_t = ((!tid) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; a bad clock id only makes the call fail.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// What is remembered of one thread between ticks.
struct ThreadCpu {
    native_id: i32,
    cpu: f64,
    credit: f64,
}

/// CPU credit per thread ident.
#[derive(Default)]
pub struct CpuCredit {
    threads: HashMap<u64, ThreadCpu>,
}

impl CpuCredit {
    /// Samples due to thread `ident` (kernel id `native_id`) that read `cpu` seconds now, or
    /// None when the clock could not be read (the thread just ended). `waiting`: its innermost
    /// frame is a known blocking wait, so credit is kept for when it is caught running.
    /// `first_tick`: CPU used before profiling started is not counted.
    pub fn weight(
        &mut self,
        ident: u64,
        native_id: i32,
        cpu: Option<f64>,
        waiting: bool,
        first_tick: bool,
        period: f64,
    ) -> Option<u64> {
        let Some(cpu) = cpu else {
            self.threads.remove(&ident);
            return None;
        };
        let (used, mut credit) = match self.threads.get(&ident) {
            Some(state) if state.native_id == native_id => (cpu - state.cpu, state.credit),
            // First sight: a new thread used all its CPU since the previous tick.
            _ => (if first_tick { 0.0 } else { cpu }, 0.0),
        };
        credit += used.max(0.0);
        let samples = if used <= 0.0 || waiting {
            0
        } else {
            (credit / period) as u64
        };
        credit -= samples as f64 * period;
        self.threads.insert(
            ident,
            ThreadCpu {
                native_id,
                cpu,
                credit,
            },
        );
        Some(samples)
    }

    /// Whether a tick now would take a sample of some known thread: one has a full period of
    /// credit, counting the CPU it used since the last tick, or its clock no longer reads.
    /// Reads only CPU clocks, so it runs without the GIL.
    pub fn any_due(&self, period: f64) -> bool {
        self.threads
            .values()
            .any(|state| match thread_cpu_seconds(state.native_id) {
                Some(cpu) => state.credit + (cpu - state.cpu).max(0.0) >= period,
                None => true,
            })
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Forgets the threads for which `alive` is false.
    pub fn retain(&mut self, mut alive: impl FnMut(u64) -> bool) {
        self.threads.retain(|ident, _| alive(*ident));
    }
}

/// Whole sampling periods of wall time elapsed since the last tick (1 on the first), with the
/// remainder carried to the next tick.
#[derive(Default)]
pub struct WallPeriods {
    last: Option<f64>,
    credit: f64,
}

impl WallPeriods {
    pub fn elapsed(&mut self, now: f64, period: f64) -> u64 {
        let Some(last) = self.last.replace(now) else {
            return 1;
        };
        self.credit += now - last;
        let periods = (self.credit / period).max(0.0) as u64;
        self.credit -= periods as f64 * period;
        periods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_thread_clock_reads_and_a_missing_thread_does_not() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        assert!(thread_cpu_seconds(me).is_some());
        assert!(thread_cpu_seconds(i32::MAX - 1).is_none());
    }

    #[test]
    fn half_periods_add_up_across_an_idle_tick() {
        let mut credit = CpuCredit::default();
        let mut cpu = 5.0;
        let mut weights = vec![];
        for step in 0..8 {
            cpu += 0.125;
            if step == 4 {
                cpu -= 0.125;
            }
            weights.push(
                credit
                    .weight(7, 70, Some(cpu), false, step == 0, 0.25)
                    .unwrap(),
            );
        }
        assert_eq!(weights, [0, 0, 1, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn a_thread_is_due_once_it_has_a_period_of_credit() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let mut credit = CpuCredit::default();
        assert!(!credit.any_due(0.01));
        let now = thread_cpu_seconds(me).unwrap();
        credit.weight(1, me, Some(now), false, true, 0.01);
        assert!(!credit.any_due(3600.0));
        let spin_until = now + 0.02;
        while thread_cpu_seconds(me).unwrap() < spin_until {}
        assert!(credit.any_due(0.01));
        credit.weight(2, i32::MAX - 1, Some(1.0), false, true, 0.01);
        assert!(
            credit.any_due(3600.0),
            "a thread whose clock no longer reads is due"
        );
    }

    #[test]
    fn wall_periods_carry_the_rest() {
        let mut wall = WallPeriods::default();
        let got: Vec<u64> = [10.0, 10.25, 10.875, 11.0]
            .iter()
            .map(|now| wall.elapsed(*now, 0.25))
            .collect();
        assert_eq!(got, [1, 1, 2, 1]);
    }
}
