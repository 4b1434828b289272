//! The sampling thread's clock: waits between ticks with the GIL released, and can be woken
//! at once to stop.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Seconds of `CLOCK_MONOTONIC`, the clock of Python's `time.monotonic()`.
pub fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A stop flag that a waiting sampling thread notices at once.
#[pyclass(module = "_kiln_native", frozen)]
#[derive(Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    changed: Condvar,
}

#[pymethods]
impl StopSignal {
    #[new]
    fn new() -> Self {
        StopSignal::default()
    }

    /// Makes every present and future wait return true at once.
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.changed.notify_all();
    }

    #[getter]
    fn stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StopSignal {
    /// Waits until `deadline` (monotonic seconds); true when stopped instead.
    pub fn wait_until(&self, deadline: f64) -> bool {
        let start = Instant::now();
        let wait = Duration::from_secs_f64((deadline - monotonic()).max(0.0));
        let mut stopped = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        while !*stopped {
            let Some(left) = wait.checked_sub(start.elapsed()) else {
                return false;
            };
            if left.is_zero() {
                return false;
            }
            stopped = self
                .changed
                .wait_timeout(stopped, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }
}
