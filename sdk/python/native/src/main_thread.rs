//! Ticks run in the main thread, as CPython pending calls.
//!
//! For the sampling thread to take the GIL from a main thread that runs Python code, CPython
//! makes it wait a switch interval (5 ms), then asks the main thread to drop the GIL, which
//! then waits to get it back: three wake-ups of the sampling thread and two context switches
//! of the main thread per tick, most of the sampler's cost. A pending call
//! (`Py_AddPendingCall`, callable without the GIL) instead runs the tick in the main thread at
//! its next check of the eval loop, with the GIL it already holds: no hand-over at all.
//!
//! Pending calls only run in the main thread, and only while it runs Python code; and before
//! Python 3.13 a call added by another thread is only noticed once the main thread next takes
//! the GIL (it does not interrupt a main thread that keeps the GIL, e.g. one that computes in
//! pure Python). So a tick is handed over only while the main thread uses CPU, one at a time,
//! and only while handed ticks run promptly. While a handed tick waits, due ticks are left to it
//! (it counts the periods or CPU time since the last tick, so no sample is lost) unless it is
//! late: the main thread used a whole period of CPU without running it, or it waited
//! `HandOver::MAX_WAIT_PERIODS`, or no handed tick has run yet (the main thread's CPU clock is
//! not known). A late tick is voided (it does nothing when it finally runs),
//! and that tick and the next `HandOver::BACKOFF_TICKS` run on the sampling thread with the GIL,
//! as without hand-over; then handing over is tried again.
//!
//! Before 3.13 a tick is instead handed through CPython's signal machinery (see `tick_signal`):
//! a signal sent to the main thread makes it check at its next bytecode boundary even while it
//! keeps the GIL, and the Python-level handler of that signal, a `TickHandler`, runs the tick.
//! The rules above (when to hand over, when a handed tick is late) are the same for both.

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use pyo3::ffi;
use pyo3::prelude::*;

use crate::clock::thread_cpu_seconds;
use crate::pacer::monotonic;
use crate::sampler::{Counters, State};
use crate::tick_signal;

/// A sampler's state, shared by the sampling thread and the main thread's pending calls.
///
/// Locking rule: a thread that holds the GIL never blocks on `state` (it tries, and waits
/// with the GIL released), since a tick holding `state` may run Python code that releases
/// the GIL and needs it back to finish.
pub struct Shared {
    pub state: Mutex<State>,
    pub counters: Py<Counters>,
    /// Number of the latest tick handed to the main thread; a call for another does nothing.
    handed: AtomicU64,
    /// A tick was handed to the main thread and has not run yet.
    waiting: AtomicBool,
    /// The error of a tick run in the main thread, for the sampling thread to raise.
    error: Mutex<Option<PyErr>>,
    /// Kernel thread id of the main thread, learnt by the first handed tick (0: not yet) or
    /// given with the tick signal.
    pub main_tid: AtomicI32,
    /// The signal whose Python handler runs handed ticks (`tick_signal`); 0: pending calls.
    pub signal: AtomicI32,
    /// Number of the latest tick handed through the signal.
    signal_tick: AtomicU64,
    /// A `CpuTimer` sends the tick signal: each one not handed over is a tick.
    pub timer_ticks: AtomicBool,
    /// Monotonic time of the latest tick run in the main thread (f64 bits).
    last_main_tick: AtomicU64,
}

impl Shared {
    pub fn new(state: State, counters: Py<Counters>) -> Self {
        Shared {
            state: Mutex::new(state),
            counters,
            handed: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
            error: Mutex::new(None),
            main_tid: AtomicI32::new(0),
            signal: AtomicI32::new(0),
            signal_tick: AtomicU64::new(0),
            timer_ticks: AtomicBool::new(false),
            last_main_tick: AtomicU64::new(0),
        }
    }

    /// Whether the main thread's CPU timer ran a tick within the last `periods` periods: then
    /// the sampling thread need not wake up every period.
    pub fn timer_ticking(&self, now: f64, period: f64, periods: f64) -> bool {
        self.timer_ticks.load(Ordering::Acquire)
            && now - f64::from_bits(self.last_main_tick.load(Ordering::Acquire)) < periods * period
    }

    /// Hands the next tick to the main thread; false when the last one handed has not run
    /// yet or CPython refused the call (then the caller ticks itself). Needs no GIL.
    fn request_main_thread_tick(self: &Arc<Self>) -> bool {
        if self.waiting.load(Ordering::Acquire) {
            return false;
        }
        let number = self.handed.fetch_add(1, Ordering::AcqRel) + 1;
        self.waiting.store(true, Ordering::Release);
        let signum = self.signal.load(Ordering::Acquire);
        if signum > 0 {
            self.signal_tick.store(number, Ordering::Release);
            if tick_signal::send(self.main_tid.load(Ordering::Relaxed), signum) {
                return true;
            }
            self.waiting.store(false, Ordering::Release);
            return false;
        }
        let job = Box::into_raw(Box::new(Job {
            shared: self.clone(),
            number,
        }));
        // SAFETY: `run_job` takes back ownership of `job` when CPython calls it; the function
        // needs no thread state (documented so).
        let added = unsafe { ffi::Py_AddPendingCall(Some(run_job), job as *mut c_void) };
        if added != 0 {
            // The queue of pending calls is full: the call was not added, the job is ours.
            // SAFETY: `job` came from Box::into_raw above and was not handed over.
            drop(unsafe { Box::from_raw(job) });
            self.waiting.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// CPU seconds used so far by the main thread, once known.
    fn main_thread_cpu(&self) -> Option<f64> {
        match self.main_tid.load(Ordering::Relaxed) {
            0 => None,
            tid => thread_cpu_seconds(tid),
        }
    }

    /// A tick was handed to the main thread and has not run yet.
    pub fn tick_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Makes a handed tick that has not run yet do nothing when it does.
    pub fn void_main_thread_tick(&self) {
        self.handed.fetch_add(1, Ordering::AcqRel);
    }

    pub fn take_error(&self) -> Option<PyErr> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// Where a due tick runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Place {
    /// Handed to the main thread.
    Handed,
    /// Left to the tick handed earlier, which has not run yet.
    Left,
    /// On the sampling thread, with the GIL.
    Here,
}

/// The sampling thread's side of handing ticks over.
#[derive(Default)]
pub struct HandOver {
    /// Main thread CPU seconds at the last due tick.
    main_cpu: Option<f64>,
    /// When the waiting tick was handed: monotonic seconds, main thread CPU seconds.
    handed: (f64, Option<f64>),
    /// Due ticks left to run on the sampling thread before handing over is tried again.
    backoff: u32,
    /// A handed tick was found late since `take_late` was last called.
    late: bool,
}

impl HandOver {
    /// Due ticks run on the sampling thread after a handed tick was late (about half a second
    /// at 100 Hz: on a Python where it will stay late, the late tick costs little).
    const BACKOFF_TICKS: u32 = 50;
    /// A handed tick is late after this many periods however little the main thread ran.
    const MAX_WAIT_PERIODS: f64 = 10.0;

    /// Where the tick due `now` runs; hands it over when it says so. Needs no GIL.
    pub fn place(&mut self, shared: &Arc<Shared>, now: f64, period: f64) -> Place {
        let main_cpu = shared.main_thread_cpu();
        let waiting = shared.waiting.load(Ordering::Acquire);
        let main_ran = ran_since(self.main_cpu, main_cpu, 0.0);
        self.main_cpu = main_cpu;
        let place = self.decide(waiting, main_ran, main_cpu, now, period);
        if place == Place::Handed && !shared.request_main_thread_tick() {
            return Place::Here;
        }
        if place == Place::Handed {
            self.handed = (now, main_cpu);
        }
        place
    }

    /// Whether a handed tick was found late since the last call.
    pub fn take_late(&mut self) -> bool {
        std::mem::take(&mut self.late)
    }

    fn decide(
        &mut self,
        waiting: bool,
        main_ran: bool,
        main_cpu: Option<f64>,
        now: f64,
        period: f64,
    ) -> Place {
        if waiting {
            let (handed_at, cpu_then) = self.handed;
            // Before a handed tick ever ran, the main thread's CPU clock is unknown: one that has
            // not run by the next due tick is late (waiting longer would leave a computing main
            // thread unsampled, and its CPU credit to whatever it does next).
            let late = cpu_then.is_none()
                || ran_since(cpu_then, main_cpu, period)
                || now - handed_at >= Self::MAX_WAIT_PERIODS * period;
            if !late {
                return Place::Left;
            }
            self.late = true;
            self.backoff = Self::BACKOFF_TICKS;
            return Place::Here;
        }
        if self.backoff > 0 {
            self.backoff -= 1;
            return Place::Here;
        }
        if main_ran {
            Place::Handed
        } else {
            Place::Here
        }
    }
}

/// Whether a thread whose CPU clock read `before` and now `after` used more than `more` seconds
/// in between; true while either reading is unknown (the main thread is not known yet).
fn ran_since(before: Option<f64>, after: Option<f64>, more: f64) -> bool {
    match (before, after) {
        (Some(before), Some(after)) => after - before > more,
        _ => true,
    }
}

/// Takes `state` from a thread holding the GIL: releases the GIL while it is taken elsewhere.
pub fn lock_for_tick<'a>(py: Python<'_>, state: &'a Mutex<State>) -> MutexGuard<'a, State> {
    loop {
        match state.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => py.detach(std::thread::yield_now),
        }
    }
}

/// One tick handed to the main thread as a pending call.
struct Job {
    shared: Arc<Shared>,
    number: u64,
}

/// The pending call. Never fails: an error of the tick is kept for the sampling thread, since
/// one returned here would be raised in the main thread's own code.
extern "C" fn run_job(job: *mut c_void) -> c_int {
    // SAFETY: `job` is the Box that `request_main_thread_tick` leaked for this single call.
    let job = unsafe { Box::from_raw(job as *mut Job) };
    // SAFETY: CPython runs pending calls in the main thread with the GIL held.
    let py = unsafe { Python::assume_attached() };
    // A panic must not unwind into CPython; the tick is lost, nothing else.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        job.shared.run_handed_tick(py, job.number)
    }));
    0
}

impl Shared {
    /// Runs, in the main thread, the tick handed as number `number` (nothing if it was voided).
    pub fn run_handed_tick(&self, py: Python<'_>, number: u64) {
        // SAFETY: gettid has no preconditions.
        self.main_tid
            .store(unsafe { libc::gettid() }, Ordering::Relaxed);
        self.waiting.store(false, Ordering::Release);
        if self.handed.load(Ordering::Acquire) != number {
            return;
        }
        self.tick_in_main_thread(py);
    }

    /// Runs a tick in the main thread, counted as such.
    fn tick_in_main_thread(&self, py: Python<'_>) {
        let before = own_cpu_ns();
        // Taken elsewhere: a tick of the sampling thread is under way, so this one is not
        // needed (and blocking here, with the GIL held, could deadlock).
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let now = monotonic();
        let result = state.tick(py, now);
        drop(state);
        self.last_main_tick.store(now.to_bits(), Ordering::Release);
        if let Err(error) = result {
            *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
        }
        let counters = self.counters.get();
        counters.main_thread_ticks.fetch_add(1, Ordering::Relaxed);
        counters
            .main_thread_cpu_ns
            .fetch_add(own_cpu_ns().saturating_sub(before), Ordering::Relaxed);
    }

    /// Runs the tick handed through the signal, if one waits (the handler may also be called
    /// by a real signal, or after the sampler stopped: then it does nothing).
    pub fn run_signalled_tick(&self, py: Python<'_>) {
        if self.signal.load(Ordering::Acquire) <= 0 {
            return;
        }
        if self.waiting.load(Ordering::Acquire) {
            let number = self.signal_tick.load(Ordering::Acquire);
            self.run_handed_tick(py, number);
        } else if self.timer_ticks.load(Ordering::Acquire) {
            self.tick_in_main_thread(py);
        }
    }
}

/// CPU nanoseconds used so far by the calling thread.
fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: f64 = 0.01;

    #[test]
    fn a_running_main_thread_is_handed_ticks_and_an_idle_one_is_not() {
        let mut hand_over = HandOver::default();
        assert_eq!(
            hand_over.decide(false, true, Some(1.0), 0.0, P),
            Place::Handed
        );
        assert_eq!(
            hand_over.decide(false, false, Some(1.0), 0.01, P),
            Place::Here
        );
    }

    #[test]
    fn a_waiting_tick_is_left_alone_while_the_main_thread_does_not_run() {
        let mut hand_over = HandOver {
            handed: (10.0, Some(1.0)),
            ..HandOver::default()
        };
        // preempted: half a period of CPU in 9 periods
        assert_eq!(
            hand_over.decide(true, true, Some(1.005), 10.09, P),
            Place::Left
        );
        // waited too long
        assert_eq!(
            hand_over.decide(true, true, Some(1.005), 10.11, P),
            Place::Here
        );
    }

    #[test]
    fn a_tick_handed_before_the_main_thread_is_known_is_late_at_the_next_due_tick() {
        let mut hand_over = HandOver {
            handed: (10.0, None),
            ..HandOver::default()
        };
        assert_eq!(
            hand_over.decide(true, true, Some(5.0), 10.01, P),
            Place::Here
        );
        assert_eq!(hand_over.backoff, HandOver::BACKOFF_TICKS);
    }

    #[test]
    fn a_late_tick_makes_the_next_ticks_take_the_gil_then_hand_over_is_tried_again() {
        let mut hand_over = HandOver {
            handed: (10.0, Some(1.0)),
            ..HandOver::default()
        };
        // the main thread ran a whole period without running the handed tick
        assert_eq!(
            hand_over.decide(true, true, Some(1.011), 10.01, P),
            Place::Here
        );
        for i in 0..HandOver::BACKOFF_TICKS {
            let now = 10.02 + f64::from(i) * P;
            assert_eq!(
                hand_over.decide(false, true, Some(2.0), now, P),
                Place::Here
            );
        }
        assert_eq!(
            hand_over.decide(false, true, Some(2.0), 11.0, P),
            Place::Handed
        );
    }
}
