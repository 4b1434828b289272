"""Which sampler runs: the native one (the optional ``_kiln_native`` extension, from the
``kiln-profiler-native`` package) or the pure-Python one, behind one small interface.

``sampler="auto"`` (the default) uses the native sampler when it imports and starts, else logs
one line and uses the pure-Python sampler; ``"native"`` does the same but logs the fallback as a
warning; ``"python"`` never loads the extension. Both samplers apply the same rules (see
:mod:`kiln._sampler`) and give the same stacks and tags.
"""

from __future__ import annotations

import logging
import operator
import sys
import threading
import time
from collections.abc import Iterable
from typing import Callable

from . import _tags, _tick_signal
from ._frames import _CACHE_LIMIT, FrameFormatter
from ._sampler import _IDLE_FRAMES, CPU, Aggregator, Batch, Sampler, ThreadCpuClocks

logger = logging.getLogger("kiln")

AUTO = "auto"
NATIVE = "native"
PYTHON = "python"
SAMPLERS = (AUTO, NATIVE, PYTHON)
#: Environment variable read when ``configure`` is not given ``sampler``.
SAMPLER_ENV = "KILN_SAMPLER"

#: The extension's interface version this package drives.
NATIVE_ABI_VERSION = 4


class PythonSampling:
    """The pure-Python sampler: ``sys._current_frames()`` read by Python code every tick."""

    name = PYTHON

    def __init__(
        self,
        period: float,
        mode: str,
        clocks: ThreadCpuClocks | None,
        line_numbers: bool,
        max_stacks: int = 20_000,
    ) -> None:
        self._aggregator = Aggregator(max_stacks=max_stacks)
        self._sampler = Sampler(
            self._aggregator,
            FrameFormatter(line_numbers=line_numbers),
            period,
            mode=mode,
            cpu_clocks=clocks,
        )
        self._period = period
        self._next_tick: float | None = None
        # Held until stop() releases it. run() waits between ticks by trying to take it with a
        # timeout: one C call, where Event.wait runs a dozen lines of Python per tick.
        self._running = threading.Lock()
        self._running.acquire()
        self._stopped = False

    @property
    def samples(self) -> int:
        return self._sampler.samples

    @property
    def overflowed_samples(self) -> int:
        return self._aggregator.overflowed_samples

    @property
    def ticks(self) -> int:
        """Ticks run so far."""
        return self._sampler.ticks

    @property
    def cpu_elsewhere(self) -> float:
        """CPU seconds of sampling work done outside the sampling thread: none here."""
        return 0.0

    @property
    def main_thread_ticks(self) -> int:
        """Ticks run in the main thread: none here (every tick runs on the sampling thread)."""
        return 0

    @property
    def tick_signal(self) -> int:
        """No signal is used to hand ticks over."""
        return 0

    def ignore(self, idents: Iterable[int]) -> None:
        self._sampler.ignored_idents = frozenset(idents)

    def correct_native_id(self, ident: int, native_id: int) -> None:
        self._sampler.native_id_corrections[ident] = native_id

    def run(self, until: float, on_error: Callable[[], None]) -> bool:
        """Ticks every period until monotonic time ``until`` (returns False) or :meth:`stop`
        (returns True). A failed tick calls ``on_error`` (in the ``except`` block)."""
        if self._next_tick is None:
            self._next_tick = time.monotonic()
        while not self._stopped:
            wait = min(self._next_tick, until) - time.monotonic()
            if self._running.acquire(True, max(0.0, wait)):
                self._stopped = True
                break
            now = time.monotonic()
            if now >= self._next_tick:
                try:
                    self.tick(now)
                except Exception:
                    on_error()
                self._next_tick += self._period
                if self._next_tick < now:  # fell behind (a long GIL hold): resume from now
                    self._next_tick = now + self._period
            if now >= until:
                return False
        return True

    def stop(self) -> None:
        """Makes :meth:`run` return True, now or when next called; only the first call counts."""
        if not self._stopped:
            try:
                self._running.release()
            except RuntimeError:  # already released
                pass

    def tick(self, now: float) -> None:
        # The tags of each thread as of the frames: copies of the tag table taken just before
        # and just after the frames (each copy is one C call). A thread whose tags changed in
        # between sits out this tick rather than being sampled under the wrong tags; it keeps
        # its CPU reference, so the next tick credits it only what it used since this one.
        before = dict(_tags._active)
        frames = sys._current_frames()
        after = dict(_tags._active)
        # Usually no thread entered or left a block meanwhile: check that at C speed (same
        # entries, each value the same object) before looking thread by thread.
        same = len(before) == len(after) and all(
            map(operator.is_, before.values(), map(after.get, before))
        )
        skip = frozenset() if same else {i for i in frames if before.get(i) is not after.get(i)}
        try:
            self._sampler.tick(frames, now, tags=after, skip=skip)
        finally:
            del frames  # do not keep other threads' frames (and locals) alive

    def drain(self) -> Batch:
        return self._aggregator.drain()


class NativeSampling:
    """The native sampler: frames walked, named and counted in Rust; the same rules."""

    name = NATIVE

    def __init__(
        self,
        native: object,
        period: float,
        mode: str,
        clocks: ThreadCpuClocks | None,
        line_numbers: bool,
        max_stacks: int = 20_000,
        main_thread_ticks: bool = True,
    ) -> None:
        threads_table = getattr(threading, "_active", None)
        if not isinstance(threads_table, dict):
            raise RuntimeError("threading._active is not a dict in this Python")
        formatter = FrameFormatter(line_numbers=line_numbers)
        self._sampler = native.NativeSampler(  # type: ignore[attr-defined]
            period=period,
            mode=mode,
            use_clocks=clocks is not None,
            line_numbers=line_numbers,
            code_text=formatter.code_text,
            idle_frames=sorted(_IDLE_FRAMES),
            tags_table=_tags._active,
            threads_table=threads_table,
            current_frames=sys._current_frames,
            max_stacks=max_stacks,
            overflow_text=Aggregator.OVERFLOW_STACK,
            frame_cache_limit=_CACHE_LIMIT,
            main_thread_ticks=main_thread_ticks,
        )
        self._counters = self._sampler.counters
        self._stop = native.StopSignal()  # type: ignore[attr-defined]
        # Ticks reach a main thread that keeps the GIL through a signal handler (before 3.13
        # the only way; on every version it lets a CPU timer send them in `cpu` mode).
        self._tick_signal, self._tick_handler = (
            _tick_signal.install(native, self._sampler)
            if main_thread_ticks and _tick_signal.needed()
            else (0, None)
        )
        self._lost_logged = False
        # run/tick and drain run on different threads (sampling thread, shutdown); the native
        # object refuses concurrent use, so they take turns. A thread waiting here releases
        # the GIL, so the holder can finish even when it calls back into Python. Reentrant:
        # code run by a tick on the sampling thread (a finalizer) that stops profiling gets
        # an error from the borrowed native object rather than a deadlock.
        self._lock = threading.RLock()
        self._start = time.time()

    @property
    def samples(self) -> int:
        return self._counters.samples  # type: ignore[no-any-return]

    @property
    def overflowed_samples(self) -> int:
        return self._counters.overflowed_samples  # type: ignore[no-any-return]

    @property
    def ticks(self) -> int:
        """Ticks run (idle periods in ``cpu`` mode are skipped), wherever they ran."""
        return self._counters.ticks  # type: ignore[no-any-return]

    @property
    def main_thread_ticks(self) -> int:
        """Ticks of those run in the main thread (pending calls) instead of taking the GIL."""
        return self._counters.main_thread_ticks  # type: ignore[no-any-return]

    @property
    def tick_signal(self) -> int:
        """The signal through which ticks are handed to the main thread; 0: pending calls."""
        return self._sampler.tick_signal  # type: ignore[no-any-return]

    @property
    def cpu_elsewhere(self) -> float:
        """CPU seconds the main thread spent running ticks handed to it."""
        return self._counters.main_thread_cpu  # type: ignore[no-any-return]

    def ignore(self, idents: Iterable[int]) -> None:
        with self._lock:
            self._sampler.set_ignored(list(idents))

    def correct_native_id(self, ident: int, native_id: int) -> None:
        with self._lock:
            self._sampler.correct_native_id(ident, native_id)

    def run(self, until: float, on_error: Callable[[], None]) -> bool:
        """As :meth:`PythonSampling.run`; the loop and the waits are in Rust, with the GIL
        released between ticks."""
        with self._lock:
            while True:
                try:
                    stopped = self._sampler.run(until, self._stop)
                except Exception:  # the next run waits a period before its first tick
                    on_error()
                    continue
                self._check_tick_signal()
                return stopped  # type: ignore[no-any-return]

    def _check_tick_signal(self) -> None:
        """Logs once that the program took the tick signal over (the sampler noticed)."""
        if self._tick_signal and not self._lost_logged and self._sampler.tick_signal_lost:
            self._lost_logged = True
            _tick_signal.logger.info(
                "signal %d was taken over by the program (its own handler, reset or blocked): "
                "ticks go to the main thread only when it releases the GIL",
                self._tick_signal,
            )

    def stop(self) -> None:
        self._stop.stop()
        if self._tick_signal:
            self._sampler.use_tick_signal(0, 0)  # also deletes the CPU timer, from any thread
        _tick_signal.release(self._tick_signal, self._tick_handler)

    @property
    def cpu_timer(self) -> bool:
        """Whether a timer on the main thread's CPU clock sends it the ticks."""
        return self._sampler.cpu_timer  # type: ignore[no-any-return]

    def tick(self, now: float) -> None:
        with self._lock:
            self._sampler.tick(now)

    def drain(self) -> Batch:
        with self._lock:
            counts = self._sampler.drain()
            now = time.time()
            batch = Batch(self._start, now, counts)
            self._start = now
            return batch


def load_native() -> object:
    """The ``_kiln_native`` extension module; raises ImportError if absent or incompatible."""
    import _kiln_native

    version = getattr(_kiln_native, "ABI_VERSION", None)
    if version != NATIVE_ABI_VERSION:
        raise ImportError(
            f"_kiln_native has interface version {version}, this kiln needs {NATIVE_ABI_VERSION}"
        )
    return _kiln_native


def create(
    choice: str, period: float, mode: str, line_numbers: bool
) -> PythonSampling | NativeSampling:
    """The sampler ``choice`` (one of :data:`SAMPLERS`) asks for, or the pure-Python one when
    the native sampler cannot load or start (logged once); never raises for a missing
    extension."""
    clocks = ThreadCpuClocks() if mode == CPU and ThreadCpuClocks.available() else None
    if mode == CPU and clocks is None:
        logger.info(
            "per-thread CPU clocks are not available here: threads count as busy unless "
            "waiting in a known blocking call"
        )
    if choice != PYTHON:
        try:
            return NativeSampling(load_native(), period, mode, clocks, line_numbers)
        except Exception as error:  # missing, built for another Python, or fails to start
            log = logger.warning if choice == NATIVE else logger.info
            log("native sampler unavailable (%s): using the pure-Python sampler", error)
    return PythonSampling(period, mode, clocks, line_numbers)
