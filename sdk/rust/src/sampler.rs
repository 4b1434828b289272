//! The CPU sampler: a process CPU-time timer (`setitimer(ITIMER_PROF)`) raises SIGPROF at the
//! sample rate on whichever thread is running; the handler unwinds that thread's stack into the
//! lock-free [`Ring`] with its current tag-set id.
//!
//! Unwinding uses the system unwinder (libgcc's `_Unwind_Backtrace`, through
//! `backtrace::trace_unsynchronized`): it reads the `.eh_frame` tables every Rust and C object
//! carries, so it works on programs built without frame pointers (the default, std included),
//! allocates nothing and, with glibc 2.35 or later, finds tables without taking the loader's
//! lock. A frame-pointer walk would be cheaper but yields broken stacks for code built without
//! them; a pure-Rust DWARF unwinder would need its own copy of the unwind tables in memory.
//! Samples whose thread was stopped inside the unwinder's own library record just that address.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::ring::{Ring, MAX_DEPTH};

/// Slots of the sample buffer: at 100 Hz and a drain every second, room for 10 busy cores.
const SLOTS: usize = 1024;

/// Unit tests that start the process's one sampler take turns through this.
#[cfg(test)]
pub(crate) static TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One sampler per process.
static RUNNING: AtomicBool = AtomicBool::new(false);
/// Set once and never freed: a late signal may still read it.
static RING: AtomicPtr<Ring> = AtomicPtr::new(std::ptr::null_mut());
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);
/// Address range of the unwinder's library, where the handler does not unwind from.
static UNWINDER_LO: AtomicUsize = AtomicUsize::new(0);
static UNWINDER_HI: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("another agent is already sampling this process")]
    AlreadyRunning,
    #[error("installing the SIGPROF handler failed: {0}")]
    Handler(std::io::Error),
    #[error("another SIGPROF handler is installed; not replacing it")]
    ForeignHandler,
    #[error("starting the CPU timer failed: {0}")]
    Timer(std::io::Error),
}

/// A running sampler; stopping (or dropping) it stops the timer.
pub(crate) struct Sampler {
    ring: &'static Ring,
}

impl Sampler {
    pub(crate) fn start(hz: i32) -> Result<Sampler, StartError> {
        if RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(StartError::AlreadyRunning);
        }
        match Self::start_running(hz) {
            Ok(s) => Ok(s),
            Err(e) => {
                RUNNING.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    fn start_running(hz: i32) -> Result<Sampler, StartError> {
        let mut ring = RING.load(Ordering::Acquire);
        if ring.is_null() {
            ring = Box::into_raw(Box::new(Ring::new(SLOTS)));
            RING.store(ring, Ordering::Release);
        }
        // SAFETY: set above or earlier, and never freed.
        let ring: &'static Ring = unsafe { &*ring };
        ring.drain(|_, _| {});
        ring.take_dropped();
        if let Some((lo, hi)) = crate::symbols::object_range("libgcc_s") {
            UNWINDER_LO.store(lo, Ordering::Relaxed);
            UNWINDER_HI.store(hi, Ordering::Relaxed);
        }
        install_handler()?;
        set_timer(hz).map_err(StartError::Timer)?;
        Ok(Sampler { ring })
    }

    /// Hands the samples taken since the last call to `f` (innermost address first, tag-set id).
    pub(crate) fn drain(&self, f: impl FnMut(&[usize], u32)) {
        self.ring.drain(f);
    }

    /// Samples lost to a full buffer since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.ring.take_dropped()
    }

    /// Stops the timer; samples already taken stay in the buffer for a last drain.
    pub(crate) fn stop(&self) {
        if let Err(e) = set_timer(0) {
            log::warn!("kiln: stopping the CPU timer failed: {e}");
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
        // The handler stays installed (restoring the default action would let a signal still
        // in flight terminate the process); with RUNNING false it records nothing.
        RUNNING.store(false, Ordering::Release);
    }
}

fn install_handler() -> Result<(), StartError> {
    if HANDLER_INSTALLED.load(Ordering::Acquire) {
        return Ok(());
    }
    // SAFETY: plain sigaction calls with zeroed, then filled structures.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPROF, std::ptr::null(), &mut old) != 0 {
            return Err(StartError::Handler(std::io::Error::last_os_error()));
        }
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(StartError::ForeignHandler);
        }
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigprof as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGPROF, &action, std::ptr::null_mut()) != 0 {
            return Err(StartError::Handler(std::io::Error::last_os_error()));
        }
    }
    HANDLER_INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Arms the process CPU timer at `hz` (0 disarms it).
fn set_timer(hz: i32) -> std::io::Result<()> {
    let usec = if hz > 0 { 1_000_000 / hz as i64 } else { 0 };
    let every = libc::timeval {
        tv_sec: (usec / 1_000_000) as libc::time_t,
        tv_usec: (usec % 1_000_000) as libc::suseconds_t,
    };
    let timer = libc::itimerval {
        it_interval: every,
        it_value: every,
    };
    // SAFETY: a plain syscall with a valid structure.
    if unsafe { libc::setitimer(libc::ITIMER_PROF, &timer, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The address the signal interrupted, from the saved machine context.
#[allow(unused_variables)]
unsafe fn interrupted_pc(ucontext: *mut libc::c_void) -> usize {
    if ucontext.is_null() {
        return 0;
    }
    let uc = &*(ucontext as *const libc::ucontext_t);
    #[cfg(target_arch = "x86_64")]
    return uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize;
    #[cfg(target_arch = "aarch64")]
    return uc.uc_mcontext.pc as usize;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return 0;
}

/// Writes the interrupted thread's stack into `frames`, innermost first; returns the count.
/// Unwinding starts in this handler: frames up to the interrupted address are skipped.
fn unwind(pc: usize, frames: &mut [usize; MAX_DEPTH]) -> usize {
    let (lo, hi) = (
        UNWINDER_LO.load(Ordering::Relaxed),
        UNWINDER_HI.load(Ordering::Relaxed),
    );
    if pc != 0 && lo <= pc && pc < hi {
        frames[0] = pc;
        return 1;
    }
    let mut n = 0;
    let mut found = pc == 0;
    let mut skipped = 0;
    // SAFETY: SIGPROF is blocked while its handler runs, so this is not re-entered on this
    // thread; the callback only writes into the slot.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            // The outermost frame's return address is 0.
            if ip == 0 {
                return false;
            }
            if !found {
                found = ip == pc;
                skipped += 1;
                // The handler's own frames are few; past them the unwinder lost the signal frame.
                if !found {
                    return skipped < 32;
                }
            }
            frames[n] = ip;
            n += 1;
            n < MAX_DEPTH
        });
    }
    if !found || n == 0 {
        frames[0] = pc;
        n = 1;
    }
    n
}

extern "C" fn on_sigprof(_: libc::c_int, _: *mut libc::siginfo_t, ucontext: *mut libc::c_void) {
    // SAFETY: errno is saved and restored around the handler, the interrupted code may read it.
    let errno = unsafe { *libc::__errno_location() };
    if RUNNING.load(Ordering::Acquire) {
        let ring = RING.load(Ordering::Acquire);
        if !ring.is_null() {
            // SAFETY: the ring is never freed; the context is the kernel's.
            let ring = unsafe { &*ring };
            let pc = unsafe { interrupted_pc(ucontext) };
            ring.push(crate::tags::current(), |frames| unwind(pc, frames));
        }
    }
    unsafe { *libc::__errno_location() = errno };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbols::Symbolizer;
    use std::time::{Duration, Instant};

    /// CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
        Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    /// Burns `cpu` of this thread's CPU time (however long a busy machine makes that take,
    /// up to 30 s).
    #[inline(never)]
    fn burn_in_a_known_function(cpu: Duration) -> u64 {
        let (start, give_up) = (thread_cpu(), Instant::now() + Duration::from_secs(30));
        let mut x = 1u64;
        while thread_cpu() - start < cpu && Instant::now() < give_up {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        x
    }

    /// The sampler's stacks are right: a thread burning CPU in one function under a tag is
    /// sampled with that function on its stack and that tag, in most samples; a second sampler
    /// is refused while one runs.
    #[test]
    fn samples_the_hot_function_with_its_tags() {
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sampler = Sampler::start(1000).expect("sampler starts");
        assert!(matches!(
            Sampler::start(100),
            Err(StartError::AlreadyRunning)
        ));
        let guard = crate::tags::tag_wrapper([("phase", "burn")]);
        let tag = crate::tags::current();
        burn_in_a_known_function(Duration::from_millis(500));
        drop(guard);
        sampler.stop();
        let mut symbols = Symbolizer::new();
        symbols.refresh();
        let (mut total, mut hot, mut tagged) = (0, 0, 0);
        sampler.drain(|frames, t| {
            total += 1;
            let names: Vec<_> = frames
                .iter()
                .enumerate()
                .map(|(i, &a)| symbols.name(a, i > 0))
                .collect();
            if names
                .iter()
                .any(|n| n.ends_with("burn_in_a_known_function"))
            {
                hot += 1;
                tagged += (t == tag) as u32;
                // The test's own frames are further out, under the hot function.
                assert!(
                    names.iter().any(|n| n.contains("samples_the_hot_function")),
                    "{names:?}"
                );
            }
        });
        drop(sampler);
        // 500 ms of CPU at 1000 Hz: the kernel delivers CPU-timer signals at most once per
        // scheduler tick (100..1000 Hz), so 50 samples or more.
        eprintln!("{hot} of {total} samples in the hot function");
        assert!(total >= 20, "only {total} samples");
        assert!(
            hot * 2 > total,
            "{hot} of {total} samples in the hot function"
        );
        assert_eq!(tagged, hot, "samples under the guard carry its tag set");
    }
}
