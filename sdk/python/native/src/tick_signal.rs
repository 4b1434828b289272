//! Ticks handed to the main thread through a signal's Python handler (CPython < 3.13).
//!
//! Before 3.13, neither a pending call nor `PyErr_SetInterruptEx` from a thread other than the
//! main one makes the main thread look: both only set the eval loop's "check now" flag when
//! the *calling* thread could act on them (`COMPUTE_EVAL_BREAKER`), so a main thread that
//! computes without releasing the GIL does not notice them. A real signal does: CPython's C
//! handler runs in the thread that receives it, and when that is the main thread it sets the
//! flag, so the main thread calls the Python-level handler at its next bytecode boundary, with
//! the GIL it holds. So the sampling thread sends the tick signal to the main thread only
//! (`tgkill`), and the `kiln` package installs a `TickHandler` as its Python handler.
//!
//! EINTR: the signal is sent only while the main thread is using CPU (see `main_thread`), and
//! its handler is re-flagged `SA_RESTART`, so an interrupted system call that the kernel can
//! restart is restarted; the ones it never restarts (`select`, `poll`, `epoll_wait`, sleeps, and
//! calls with a timeout) return EINTR, which Python retries after running the handler (PEP 475)
//! and which C code must already expect from any signal. Other threads never receive it.
//!
//! The handler only runs a tick that the sampling thread handed over; called at any other time
//! (a signal from elsewhere, a sampler that stopped) it does nothing. It never raises.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::main_thread::Shared;

/// The Python-level handler of the tick signal: runs the tick handed to the main thread.
#[pyclass(module = "_kiln_native", frozen)]
pub struct TickHandler {
    pub(crate) shared: Arc<Shared>,
}

#[pymethods]
impl TickHandler {
    /// Called by CPython as `handler(signum, frame)`.
    #[pyo3(signature = (*_args))]
    fn __call__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        // A panic must not become an exception in the main thread's code; the tick is lost.
        let _ = catch_unwind(AssertUnwindSafe(|| self.shared.run_signalled_tick(py)));
    }
}

/// Whether the process-level disposition of `signum` is the default one (no handler installed
/// by anyone, Python or C code), so the signal is free to use.
#[pyfunction]
pub fn signal_is_default(signum: i32) -> bool {
    os_handler(signum) == Some(libc::SIG_DFL)
}

/// Sends `signum` to the main thread `tid` of this process; false if it could not be sent.
/// Needs no GIL.
pub fn send(tid: i32, signum: i32) -> bool {
    if tid <= 0 {
        return false;
    }
    // SAFETY: tgkill only sends a signal, to a thread of this very process (a thread id that
    // ended or was reused by another process gives ESRCH, as the process id does not match).
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signum) == 0 }
}

/// Adds `SA_RESTART` to the handler of `signum` (installed by `signal.signal`, which leaves it
/// out), so that system calls the kernel can restart are not interrupted by a tick. Returns the
/// handler's address (CPython's C handler), to tell later whether someone replaced it.
pub fn restart_interrupted_calls(signum: i32) -> PyResult<usize> {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: reads the current action into `action`, then writes it back with one more flag.
    unsafe {
        if libc::sigaction(signum, std::ptr::null(), &mut action) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if action.sa_sigaction == libc::SIG_DFL || action.sa_sigaction == libc::SIG_IGN {
            return Err(PyValueError::new_err(format!(
                "signal {signum} has no handler to send ticks to"
            )));
        }
        action.sa_flags |= libc::SA_RESTART;
        if libc::sigaction(signum, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(action.sa_sigaction)
}

/// The address of the process-level handler of `signum` (`SIG_DFL` is 0), if it reads.
fn os_handler(signum: i32) -> Option<usize> {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `current`.
    let read = unsafe { libc::sigaction(signum, std::ptr::null(), &mut current) };
    (read == 0).then_some(current.sa_sigaction)
}

/// Whether thread `tid` of this process blocks `signum` (its mask in `/proc`): the signal then
/// waits, queued, and handed ticks never run.
pub fn blocked_in(tid: i32, signum: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigBlk:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| signum >= 1 && mask & (1 << (signum - 1)) != 0)
}

/// A POSIX timer on the CPU clock of the main thread that sends it the tick signal every
/// `period` of CPU time it uses: while the main thread computes, its ticks need no wake-up of
/// the sampling thread at all. The kernel only counts the thread's CPU time, so the signal
/// comes while it runs, not while it waits in a system call. Deleted when dropped, unless in
/// a forked child, which has no such timer (and may have one of its own with the same id).
pub struct CpuTimer {
    id: libc::timer_t,
    pid: libc::pid_t,
}

// SAFETY: a timer_t is the kernel's id of the timer, usable from any thread of the process.
unsafe impl Send for CpuTimer {}

impl CpuTimer {
    pub fn start(tid: i32, signum: i32, period: f64) -> std::io::Result<Self> {
        // SAFETY: an all-zero sigevent is a valid value to fill in.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = signum;
        event.sigev_notify_thread_id = tid;
        let clock: libc::clockid_t = ((!tid) << 3) | 6; // CPU clock of thread `tid`
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; a bad clock id only fails it.
        if unsafe { libc::timer_create(clock, &mut event, &mut timer) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let timer = CpuTimer {
            id: timer,
            // SAFETY: getpid has no preconditions.
            pid: unsafe { libc::getpid() },
        };
        let nanos = (period * 1e9).round().max(1.0) as i64;
        let every = libc::timespec {
            tv_sec: nanos / 1_000_000_000,
            tv_nsec: nanos % 1_000_000_000,
        };
        let spec = libc::itimerspec {
            it_interval: every,
            it_value: every,
        };
        // SAFETY: `timer.id` was just created; `spec` is valid.
        if unsafe { libc::timer_settime(timer.id, 0, &spec, std::ptr::null_mut()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(timer)
    }
}

impl Drop for CpuTimer {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `start` in this process and is deleted once.
        unsafe {
            if libc::getpid() == self.pid {
                libc::timer_delete(self.id);
            }
        }
    }
}

/// Whether the tick signal of `shared` still reaches its `TickHandler`: the program may have
/// installed its own Python handler since, or C code its own process-level handler (`os`:
/// the one installed with the tick handler), or blocked the signal in the main thread. Needs
/// the GIL.
pub fn usable(py: Python<'_>, shared: &Arc<Shared>, os: usize) -> PyResult<bool> {
    let signum = shared.signal.load(Ordering::Acquire);
    if signum <= 0
        || os_handler(signum) != Some(os)
        || blocked_in(shared.main_tid.load(Ordering::Relaxed), signum)
    {
        return Ok(false);
    }
    let handler = py.import("signal")?.call_method1("getsignal", (signum,))?;
    Ok(match handler.cast::<TickHandler>() {
        Ok(handler) => Arc::ptr_eq(&handler.get().shared, shared),
        Err(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_untouched_real_time_signal_is_default_and_a_handled_one_is_not() {
        let signum = libc::SIGRTMAX() - 1;
        assert!(signal_is_default(signum));
        // SAFETY: installs SIG_IGN for a signal nothing in this test process uses, then
        // restores the default.
        unsafe {
            libc::signal(signum, libc::SIG_IGN);
            assert!(!signal_is_default(signum));
            libc::signal(signum, libc::SIG_DFL);
        }
        assert!(signal_is_default(signum));
        assert!(!signal_is_default(-1), "an invalid number is not free");
    }

    #[test]
    fn a_blocked_signal_is_seen_in_the_threads_mask() {
        let signum = libc::SIGRTMAX() - 2;
        // SAFETY: gettid has no preconditions; the mask changes only for this test's thread.
        let me = unsafe { libc::gettid() };
        assert!(!blocked_in(me, signum));
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, signum);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            assert!(blocked_in(me, signum));
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
        assert!(!blocked_in(me, signum));
    }

    #[test]
    fn restarting_needs_an_installed_handler() {
        let signum = libc::SIGRTMAX() - 3;
        assert!(restart_interrupted_calls(signum).is_err());
        assert!(!send(0, signum), "no main thread known: nothing is sent");
    }
}
