//! `NativeSampler`: the sampling thread's loop, and one tick, run in Rust with the GIL held.
//!
//! It reads the same things as the pure-Python sampler (`sys._current_frames()`, the table of
//! dynamic tags, `threading._active` for kernel thread ids) and applies the same rules, but
//! walks frames through the C API, keeps frame names interned by code object and sample counts
//! aggregated in Rust, and hands Python one dict per upload interval.
//!
//! A tick runs either on the sampling thread (which then takes the GIL) or, when the main
//! thread is running Python code, in the main thread itself, as a pending call or through the
//! tick signal (see `main_thread` and `tick_signal`): that spares the GIL hand-over, which costs
//! the sampling thread two extra wake-ups per tick and the main thread two context switches.
//! In `cpu` mode with the tick signal, a timer on the main thread's CPU clock sends it its
//! ticks, and the sampling thread only checks every few periods that they still come.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, PoisonError};

use pyo3::exceptions::PyValueError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::clock::{thread_cpu_seconds, CpuCredit, WallPeriods};
use crate::main_thread::{lock_for_tick, HandOver, Place, Shared};
use crate::pacer::{monotonic, StopSignal};
use crate::stacks::{Counts, FrameTable};
use crate::tick_signal::{self, CpuTimer, TickHandler};

/// Code objects whose "looks idle" answer is kept; the cache is emptied beyond.
const IDLE_CACHE_LIMIT: usize = 10_000;

/// In `cpu` mode, `run` skips a tick (and the GIL) when no known thread has a full period of
/// CPU credit; every this many periods it ticks anyway, to find threads that started.
const FULL_TICK_EVERY: u32 = 10;

/// While the main thread's CPU timer ran a tick within this many periods, the sampling thread
/// does not tick; it looks again every `TIMER_CHECK_PERIODS` periods. A main thread that stops
/// using CPU is noticed within that time; the CPU credit of the other threads carries over.
const TIMER_RECENT_PERIODS: f64 = 3.0;
const TIMER_CHECK_PERIODS: f64 = 5.0;

/// Counters of a sampler, readable while it runs (the sampler itself is borrowed then).
#[pyclass(module = "_kiln_native", frozen)]
#[derive(Default)]
pub struct Counters {
    ticks: AtomicU64,
    samples: AtomicU64,
    overflowed_samples: AtomicU64,
    pub(crate) main_thread_ticks: AtomicU64,
    pub(crate) main_thread_cpu_ns: AtomicU64,
}

#[pymethods]
impl Counters {
    /// Ticks run since the sampler was made, on the sampling thread or the main thread.
    #[getter]
    fn ticks(&self) -> u64 {
        self.ticks.load(Relaxed)
    }

    /// Samples taken since the sampler was made.
    #[getter]
    fn samples(&self) -> u64 {
        self.samples.load(Relaxed)
    }

    /// Samples counted under the overflow stack (too many distinct stacks in an interval).
    #[getter]
    fn overflowed_samples(&self) -> u64 {
        self.overflowed_samples.load(Relaxed)
    }

    /// Ticks of those run in the main thread (as a pending call) rather than the sampler's.
    #[getter]
    fn main_thread_ticks(&self) -> u64 {
        self.main_thread_ticks.load(Relaxed)
    }

    /// CPU seconds the main thread spent in those ticks: the sampler's cost paid there.
    #[getter]
    fn main_thread_cpu(&self) -> f64 {
        self.main_thread_cpu_ns.load(Relaxed) as f64 * 1e-9
    }
}

#[pyclass(module = "_kiln_native", weakref)]
pub struct NativeSampler {
    period: f64,
    /// Ticks may run in the main thread as pending calls.
    main_thread_ticks: bool,
    /// `cpu` mode with thread CPU clocks: a CPU timer of the main thread may send the ticks.
    cpu_clocked: bool,
    shared: Arc<Shared>,
    /// The main thread's CPU timer, when the tick signal is used in `cpu` mode.
    timer: std::sync::Mutex<Option<CpuTimer>>,
    /// The tick signal was given up: the program took it over.
    tick_signal_lost: std::sync::atomic::AtomicBool,
    /// Address of the process-level handler of the tick signal when it was installed.
    os_handler: std::sync::atomic::AtomicUsize,
}

/// What a tick reads and writes, behind the mutex of `Shared`.
pub struct State {
    period: f64,
    cpu_mode: bool,
    use_clocks: bool,
    line_numbers: bool,
    /// `code_text(code, line) -> str`: the text of a frame, asked once per code object.
    code_text: Py<PyAny>,
    /// `(file basename, function name)` of innermost frames that mean "blocked".
    idle_frames: HashSet<(String, String)>,
    /// ident -> tags tuple of the thread now (`kiln._tags._active`).
    tags_table: Py<PyDict>,
    /// ident -> `threading.Thread` (`threading._active`).
    threads_table: Py<PyDict>,
    /// `sys._current_frames`.
    current_frames: Py<PyAny>,
    overflow_text: String,
    frame_cache_limit: usize,

    ticks: u64,
    wall: WallPeriods,
    credit: CpuCredit,
    frames: FrameTable,
    counts: Counts,
    idle_codes: HashMap<usize, (Py<PyAny>, bool)>,
    /// ident -> (the Thread its native id was read from, that native id)
    native_ids: HashMap<u64, (Option<Py<PyAny>>, Option<i32>)>,
    native_id_corrections: HashMap<u64, i32>,
    ignored: HashSet<u64>,
    key: Vec<u32>,
    pub(crate) counters: Py<Counters>,
    /// Every thread of the last tick had a CPU clock (so skipping ticks loses nothing).
    all_clocked: bool,
    /// Ticks skipped in a row.
    skipped: u32,
}

fn frame_code<'py>(frame: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: PyFrame_Check only reads the object's type.
    if unsafe { ffi::PyFrame_Check(frame.as_ptr()) } == 0 {
        return Err(PyValueError::new_err(
            "sys._current_frames() gave a non-frame value",
        ));
    }
    // SAFETY: `frame` is a live frame object (checked above); PyFrame_GetCode returns a new
    // reference and never fails for one.
    unsafe {
        let code = ffi::PyFrame_GetCode(frame.as_ptr() as *mut ffi::PyFrameObject);
        Ok(Bound::from_owned_ptr(
            frame.py(),
            code as *mut ffi::PyObject,
        ))
    }
}

/// The caller of `frame`, or None at the root.
fn frame_back<'py>(frame: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `frame` is a live frame object (its code was read by `frame_code`);
    // PyFrame_GetBack returns a new reference or NULL.
    unsafe {
        let back = ffi::PyFrame_GetBack(frame.as_ptr() as *mut ffi::PyFrameObject);
        if back.is_null() {
            // NULL at the root; or the caller's frame object could not be created (no
            // memory): the stack is cut there, and the error must not leak to Python.
            if !ffi::PyErr_Occurred().is_null() {
                ffi::PyErr_Clear();
            }
            None
        } else {
            Some(Bound::from_owned_ptr(
                frame.py(),
                back as *mut ffi::PyObject,
            ))
        }
    }
}

fn frame_line(frame: &Bound<'_, PyAny>) -> i32 {
    // SAFETY: `frame` is a live frame object.
    unsafe { ffi::PyFrame_GetLineNumber(frame.as_ptr() as *mut ffi::PyFrameObject) }
}

#[pymethods]
impl NativeSampler {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (*, period, mode, use_clocks, line_numbers, code_text, idle_frames,
        tags_table, threads_table, current_frames, max_stacks, overflow_text, frame_cache_limit,
        main_thread_ticks=true))]
    fn new(
        period: f64,
        mode: &str,
        use_clocks: bool,
        line_numbers: bool,
        code_text: Py<PyAny>,
        idle_frames: Vec<(String, String)>,
        tags_table: Py<PyDict>,
        threads_table: Py<PyDict>,
        current_frames: Py<PyAny>,
        max_stacks: usize,
        overflow_text: String,
        frame_cache_limit: usize,
        main_thread_ticks: bool,
        py: Python<'_>,
    ) -> PyResult<Self> {
        if period.is_nan() || period <= 0.0 {
            return Err(PyValueError::new_err(
                "period must be a positive number of seconds",
            ));
        }
        let cpu_mode = match mode {
            "cpu" => true,
            "wall" => false,
            other => {
                return Err(PyValueError::new_err(format!(
                    "mode must be 'cpu' or 'wall', not {other:?}"
                )))
            }
        };
        let counters = Py::new(py, Counters::default())?;
        let state = State {
            period,
            cpu_mode,
            use_clocks,
            line_numbers,
            code_text,
            idle_frames: idle_frames.into_iter().collect(),
            tags_table,
            threads_table,
            current_frames,
            overflow_text,
            frame_cache_limit,
            ticks: 0,
            wall: WallPeriods::default(),
            credit: CpuCredit::default(),
            frames: FrameTable::default(),
            counts: Counts::new(max_stacks),
            idle_codes: HashMap::new(),
            native_ids: HashMap::new(),
            native_id_corrections: HashMap::new(),
            ignored: HashSet::new(),
            key: Vec::new(),
            counters: counters.clone_ref(py),
            all_clocked: false,
            skipped: 0,
        };
        Ok(NativeSampler {
            period,
            main_thread_ticks,
            cpu_clocked: cpu_mode && use_clocks,
            timer: std::sync::Mutex::new(None),
            tick_signal_lost: std::sync::atomic::AtomicBool::new(false),
            os_handler: std::sync::atomic::AtomicUsize::new(0),
            shared: Arc::new(Shared::new(state, counters)),
        })
    }

    /// Threads never sampled (the SDK's own).
    fn set_ignored(&self, py: Python<'_>, idents: Vec<u64>) {
        lock_for_tick(py, &self.shared.state).ignored = idents.into_iter().collect();
    }

    /// Kernel thread id of `ident` where `threading` records a wrong one (after a fork).
    fn correct_native_id(&self, py: Python<'_>, ident: u64, native_id: i32) {
        let mut state = lock_for_tick(py, &self.shared.state);
        state.native_id_corrections.insert(ident, native_id);
        state.native_ids.remove(&ident);
    }

    /// A handler for the tick signal (see `tick_signal`), to install with `signal.signal`
    /// from the main thread before `use_tick_signal`.
    fn tick_handler(&self) -> TickHandler {
        TickHandler {
            shared: self.shared.clone(),
        }
    }

    /// Hands ticks to the main thread `main_tid` (its kernel thread id) by sending it `signum`,
    /// whose Python handler is now this sampler's `tick_handler()`; 0 goes back to pending
    /// calls. In `cpu` mode a timer on the main thread's CPU clock also sends it `signum` every
    /// period of CPU it uses, and each is a tick.
    fn use_tick_signal(&self, signum: i32, main_tid: i32) -> PyResult<()> {
        let mut timer = self.timer.lock().unwrap_or_else(PoisonError::into_inner);
        *timer = None;
        self.shared.timer_ticks.store(false, Relaxed);
        if signum != 0 {
            let os_handler = tick_signal::restart_interrupted_calls(signum)?;
            self.os_handler.store(os_handler, Relaxed);
            self.shared.main_tid.store(main_tid, Relaxed);
            if self.cpu_clocked {
                // Without the timer the signal is still sent each due tick: only cheaper.
                if let Ok(started) = CpuTimer::start(main_tid, signum, self.period) {
                    *timer = Some(started);
                    self.shared.timer_ticks.store(true, Relaxed);
                }
            }
        }
        self.shared.signal.store(signum, Relaxed);
        Ok(())
    }

    /// Whether the tick signal was given up because the program took it over or blocked it.
    #[getter]
    fn tick_signal_lost(&self) -> bool {
        self.tick_signal_lost.load(Relaxed)
    }

    /// Whether the main thread's CPU timer sends ticks (`cpu` mode with the tick signal).
    #[getter]
    fn cpu_timer(&self) -> bool {
        self.shared.timer_ticks.load(Relaxed)
    }

    /// The signal through which ticks are handed to the main thread; 0 when they go as
    /// pending calls (also after the program installed its own handler for the signal).
    #[getter]
    fn tick_signal(&self) -> i32 {
        self.shared.signal.load(Relaxed)
    }

    /// The counters, to keep: they can be read while the sampler runs.
    #[getter]
    fn counters(&self, py: Python<'_>) -> Py<Counters> {
        self.shared.counters.clone_ref(py)
    }

    /// Ticks every `period` seconds until monotonic time `until` (then returns false) or until
    /// `stop` is signalled (then returns true at once). The loop runs with the GIL released; in
    /// `cpu` mode a tick that would sample nothing (no thread used a period of CPU) is skipped,
    /// at most `FULL_TICK_EVERY - 1` in a row. A due tick is handed to the main thread as a
    /// pending call while it runs Python code and handed ticks run promptly (see
    /// `main_thread`), else run here, taking the GIL once. An error of a tick, wherever it ran,
    /// is raised here.
    fn run(&self, py: Python<'_>, until: f64, stop: Py<StopSignal>) -> PyResult<bool> {
        let stop = stop.get();
        let shared = &self.shared;
        let period = self.period;
        let main_thread_ticks = self.main_thread_ticks;
        let mut next = monotonic() + period;
        let mut hand_over = HandOver::default();
        // The whole loop runs detached: a handed or skipped tick never takes the GIL here.
        let result = py.detach(|| loop {
            if stop.wait_until(next.min(until)) {
                break Ok(true);
            }
            if let Some(error) = shared.take_error() {
                break Err(error);
            }
            let now = monotonic();
            if now >= until {
                break Ok(false);
            }
            if shared.timer_ticking(now, period, TIMER_RECENT_PERIODS) {
                // The main thread's CPU timer runs the ticks: look again a few periods later.
                next = now + TIMER_CHECK_PERIODS * period;
                continue;
            }
            let (due, first) = {
                let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                (state.due(), state.ticks == 0)
            };
            // The first tick, which sets every thread's CPU reference, is never delayed.
            let here = due
                && (first
                    || !main_thread_ticks
                    || hand_over.place(shared, monotonic(), period) == Place::Here);
            // A late tick handed through the signal: the program may have taken the signal
            // over or blocked it; then ticks go back to pending calls (checked with the GIL,
            // taken anyway).
            let check_signal = here && hand_over.take_late() && shared.signal.load(Relaxed) > 0;
            if here {
                let ticked = Python::attach(|py| {
                    let os_handler = self.os_handler.load(Relaxed);
                    if check_signal && !tick_signal::usable(py, shared, os_handler)? {
                        self.give_up_tick_signal();
                    }
                    shared.void_main_thread_tick();
                    lock_for_tick(py, &shared.state).tick(py, monotonic())
                });
                if let Err(error) = ticked {
                    break Err(error);
                }
            }
            let now = monotonic();
            next += period;
            if next < now {
                // fell behind (a long GIL hold): resume from now
                next = now + period;
            }
        });
        // A main-thread tick still pending runs after the caller's flush: it does nothing.
        let waiting = shared.tick_waiting();
        shared.void_main_thread_tick();
        if waiting && matches!(result, Ok(true)) {
            // Stopped: take now the samples that the waiting tick would have taken.
            lock_for_tick(py, &shared.state).tick(py, monotonic())?;
        }
        result
    }

    /// Samples every thread at monotonic time `now` (seconds).
    fn tick(&self, py: Python<'_>, now: f64) -> PyResult<()> {
        lock_for_tick(py, &self.shared.state).tick(py, now)
    }

    /// `{tags: {"root;...;leaf": samples}}` since the last drain; starts a new interval.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let mut state = lock_for_tick(py, &self.shared.state);
        let state = &mut *state;
        let out = state.counts.drain(py, &state.frames, &state.overflow_text);
        // Emptied between intervals only, when no count refers to a frame index.
        if state.frames.len() >= state.frame_cache_limit {
            state.frames.clear();
        }
        out
    }
}

impl NativeSampler {
    /// Stops sending the tick signal (the program took it over): ticks go as pending calls.
    fn give_up_tick_signal(&self) {
        self.tick_signal_lost.store(true, Relaxed);
        self.shared.signal.store(0, Relaxed);
        self.shared.timer_ticks.store(false, Relaxed);
        *self.timer.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl State {
    /// Whether a tick now would sample anything; in `cpu` mode with every thread clocked, reads
    /// CPU clocks only (no GIL needed), and says yes at least every `FULL_TICK_EVERY` periods.
    fn due(&mut self) -> bool {
        let may_skip = self.cpu_mode
            && self.use_clocks
            && self.all_clocked
            && self.skipped + 1 < FULL_TICK_EVERY;
        if !may_skip || self.credit.any_due(self.period) {
            self.skipped = 0;
            true
        } else {
            self.skipped += 1;
            false
        }
    }

    /// Samples every thread at monotonic time `now` (seconds).
    pub fn tick(&mut self, py: Python<'_>, now: f64) -> PyResult<()> {
        self.ticks += 1;
        self.counters.get().ticks.fetch_add(1, Relaxed);
        self.all_clocked = true;
        let elapsed = self.wall.elapsed(now, self.period);
        // The tags of each thread as of the frames: copies of the tag table just before and
        // just after taking them. A thread whose tags changed in between (taking the frames
        // can run a garbage collection, and so Python code) sits out this tick, keeping its
        // CPU reference.
        let tags_table = self.tags_table.bind(py);
        let before = tags_table.copy()?;
        let frames = self.current_frames.call0(py)?.into_bound(py);
        let frames = frames.cast_into::<PyDict>()?;
        let after = tags_table.copy()?;
        let no_tags = PyTuple::empty(py).into_any();
        let use_clocks = self.cpu_mode && self.use_clocks;
        for (ident_obj, frame) in frames.iter() {
            let ident: u64 = ident_obj.extract()?;
            if self.ignored.contains(&ident) {
                continue;
            }
            let tags_then = before.get_item(&ident_obj)?;
            let tags_now = after.get_item(&ident_obj)?;
            if tags_then.as_ref().map(|t| t.as_ptr()) != tags_now.as_ref().map(|t| t.as_ptr()) {
                continue;
            }
            let code = frame_code(&frame)?;
            let mut weight = None;
            if !self.cpu_mode {
                weight = Some(elapsed);
            } else if use_clocks {
                if let Some(native_id) = self.native_id(py, ident, &ident_obj)? {
                    let waiting = self.looks_idle(&code)?;
                    let cpu = thread_cpu_seconds(native_id);
                    let first_tick = self.ticks == 1;
                    weight =
                        self.credit
                            .weight(ident, native_id, cpu, waiting, first_tick, self.period);
                }
            }
            if weight.is_none() {
                self.all_clocked = false;
            }
            let weight = match weight {
                Some(weight) => weight,
                // No CPU clock for this thread: judge by its innermost frame.
                None if self.looks_idle(&code)? => 0,
                None => elapsed,
            };
            if weight == 0 {
                continue;
            }
            let tags = tags_now.unwrap_or_else(|| no_tags.clone());
            let mut key = std::mem::take(&mut self.key);
            key.clear();
            key.push(self.counts.tags_index(&tags));
            let walked = self.walk(py, frame, code, &mut key);
            if walked.is_ok() {
                let counters = self.counters.get();
                if !self.counts.add(&mut key, weight) {
                    counters.overflowed_samples.fetch_add(weight, Relaxed);
                }
                counters.samples.fetch_add(weight, Relaxed);
            }
            self.key = key;
            walked?;
        }
        // Forget ended threads now and then (a stale entry is harmless meanwhile: a new
        // thread that reuses its ident has another native id or Thread).
        let known = self.credit.len() + self.ignored.len();
        if use_clocks && (self.ticks.is_multiple_of(128) || known > frames.len()) {
            let mut alive = HashSet::with_capacity(frames.len());
            for ident_obj in frames.keys() {
                alive.insert(ident_obj.extract::<u64>()?);
            }
            self.credit.retain(|ident| alive.contains(&ident));
            self.native_ids.retain(|ident, _| alive.contains(ident));
        }
        Ok(())
    }
}

impl State {
    /// Pushes the frame indexes of the stack from `leaf` (whose code is `code`) to the root.
    fn walk<'py>(
        &mut self,
        py: Python<'py>,
        leaf: Bound<'py, PyAny>,
        code: Bound<'py, PyAny>,
        key: &mut Vec<u32>,
    ) -> PyResult<()> {
        let mut frame = leaf;
        let mut code = code;
        loop {
            let line = if self.line_numbers {
                frame_line(&frame)
            } else {
                0
            };
            let index = match self.frames.get(code.as_ptr() as usize, line) {
                Some(index) => index,
                None => {
                    let text: String = self.code_text.call1(py, (&code, line))?.extract(py)?;
                    self.frames.insert(code.unbind(), line, text)
                }
            };
            key.push(index);
            match frame_back(&frame) {
                Some(back) => {
                    frame = back;
                    code = frame_code(&frame)?;
                }
                None => return Ok(()),
            }
        }
    }

    /// Whether the innermost frame running `code` is a known blocking wait; cached per code.
    fn looks_idle(&mut self, code: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = code.as_ptr() as usize;
        if let Some((_, idle)) = self.idle_codes.get(&key) {
            return Ok(*idle);
        }
        let filename: String = code.getattr("co_filename")?.extract()?;
        let name: String = code.getattr("co_name")?.extract()?;
        let basename = filename.rsplit('/').next().unwrap_or_default().to_owned();
        let idle = self.idle_frames.contains(&(basename, name));
        if self.idle_codes.len() >= IDLE_CACHE_LIMIT {
            self.idle_codes.clear();
        }
        self.idle_codes.insert(key, (code.clone().unbind(), idle));
        Ok(idle)
    }

    /// The kernel thread id of `ident`, read again only when its Thread object changed.
    fn native_id(
        &mut self,
        py: Python<'_>,
        ident: u64,
        ident_obj: &Bound<'_, PyAny>,
    ) -> PyResult<Option<i32>> {
        let thread = self.threads_table.bind(py).get_item(ident_obj)?;
        if let Some((cached_thread, native_id)) = self.native_ids.get(&ident) {
            let cached_ptr = cached_thread.as_ref().map(|t| t.as_ptr());
            if cached_ptr == thread.as_ref().map(|t| t.as_ptr()) {
                return Ok(*native_id);
            }
        }
        let native_id = match self.native_id_corrections.get(&ident) {
            Some(corrected) => Some(*corrected),
            None => match &thread {
                Some(thread) => thread.getattr("native_id")?.extract::<Option<i32>>()?,
                None => None,
            },
        };
        self.native_ids
            .insert(ident, (thread.map(Bound::unbind), native_id));
        Ok(native_id)
    }
}
