"""The sampler: what one tick of the sampling thread does, and where the counts go.

Every tick reads ``sys._current_frames()`` (every thread's innermost Python frame) and adds one
or more samples per thread to the :class:`Aggregator`, keyed by the thread's dynamic tags and
its folded stack.

Two modes:

* ``cpu`` (default): a thread is counted only for the CPU time it used. On Linux each thread's
  own CPU clock is read every tick; the time used since the last tick is credited to the thread
  and every full sampling period of credit is one sample of the stack it is running now. A
  thread that used no CPU during the tick (sleeping, waiting on a lock, a socket, a queue, …) is
  not counted, even if its Python frame gives no hint of that, e.g. inside ``time.sleep``; nor
  is one whose innermost frame is a known blocking wait (its credit waits until it runs). Where
  thread CPU clocks are unavailable (not Linux), a thread counts one sample per period unless its
  innermost frame is one of the standard library's blocking waits (see ``_IDLE_FRAMES``): an
  approximation that still counts sleeps done inside C functions.
* ``wall``: every thread counts one sample per elapsed period, whatever it is doing; useful to
  see where a request spends its time, waits included.

The sampling thread and the upload thread of the SDK itself are never sampled.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from types import FrameType
from typing import Callable, NamedTuple

from . import _tags
from ._frames import FrameFormatter
from ._naming import Tags

CPU = "cpu"
WALL = "wall"
MODES = (CPU, WALL)

#: Innermost frames that mean "this thread is blocked": (file name, function name).
_IDLE_FRAMES = frozenset(
    {
        ("threading.py", "wait"),
        ("threading.py", "_wait_for_tstate_lock"),
        ("threading.py", "join"),
        ("selectors.py", "select"),
        ("queue.py", "get"),
        ("socket.py", "accept"),
        ("socket.py", "readinto"),
        ("subprocess.py", "_wait"),
        ("subprocess.py", "_try_wait"),
        ("subprocess.py", "communicate"),
        ("connection.py", "_recv"),
        ("connection.py", "_poll"),
        ("ssl.py", "read"),
        ("ssl.py", "recv_into"),
    }
)


def looks_idle(frame: FrameType) -> bool:
    """True when the innermost frame is a known blocking wait of the standard library."""
    code = frame.f_code
    return (os.path.basename(code.co_filename), code.co_name) in _IDLE_FRAMES


class ThreadCpuClocks:
    """Reads another thread's CPU time from its kernel thread id (Linux only).

    Linux encodes "CPU clock of thread TID" as the clock id ``(~TID << 3) | 6``; reading it for a
    thread of this process is allowed, and a thread that has ended yields EINVAL instead of
    undefined behaviour (unlike ``pthread_getcpuclockid`` on a stale ``pthread_t``).
    """

    @staticmethod
    def clock_id(native_id: int) -> int:
        return (~native_id << 3) | 6

    @classmethod
    def available(cls) -> bool:
        if not sys.platform.startswith("linux") or not hasattr(time, "clock_gettime"):
            return False
        try:
            mine = time.clock_gettime(cls.clock_id(threading.get_native_id()))
        except (OSError, OverflowError, ValueError):
            return False
        return mine > 0

    def read(self, native_id: int) -> float | None:
        """Seconds of CPU used by the thread so far, or None if it is gone."""
        try:
            return time.clock_gettime((~native_id << 3) | 6)  # clock_id(), inlined: every tick
        except (OSError, OverflowError, ValueError):
            return None


class Batch(NamedTuple):
    """Samples of one upload interval: ``counts[tags][folded stack] = samples``."""

    start: float  # Unix seconds
    end: float
    counts: dict[Tags, dict[str, int]]


class Aggregator:
    """Sample counts per (tags, stack) since the last drain; bounded in distinct stacks."""

    #: Stack that receives samples once ``max_stacks`` distinct stacks are held.
    OVERFLOW_STACK = "[kiln: too many distinct stacks in one interval]"

    def __init__(self, max_stacks: int = 20_000, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._max_stacks = max_stacks
        self._counts: dict[Tags, dict[str, int]] = {}
        self._stacks = 0
        self._start = clock()
        self.overflowed_samples = 0

    def add(self, tags: Tags, stack: str, samples: int) -> None:
        with self._lock:
            per_stack = self._counts.get(tags)
            if per_stack is None:
                per_stack = self._counts[tags] = {}
            if stack not in per_stack:
                if self._stacks >= self._max_stacks:
                    self.overflowed_samples += samples
                    stack = self.OVERFLOW_STACK
                else:
                    self._stacks += 1
            per_stack[stack] = per_stack.get(stack, 0) + samples

    def drain(self) -> Batch:
        """Everything counted since the last drain; starts a new interval."""
        with self._lock:
            now = self._clock()
            batch = Batch(self._start, now, self._counts)
            self._counts = {}
            self._stacks = 0
            self._start = now
            return batch


class Sampler:
    """Takes samples of all threads; :meth:`tick` is called once per sampling period."""

    def __init__(
        self,
        aggregator: Aggregator,
        formatter: FrameFormatter,
        period: float,
        mode: str = CPU,
        cpu_clocks: ThreadCpuClocks | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self._aggregator = aggregator
        self._formatter = formatter
        self._period = period
        self._mode = mode
        self._clocks = cpu_clocks
        # per thread ident: (native id, CPU seconds at the last tick, credit not yet sampled)
        self._cpu_state: dict[int, tuple[int, float, float]] = {}
        self._wall_credit = 0.0
        self._last_tick: float | None = None
        self._ticks = 0
        self.ignored_idents: AbstractSet[int] = frozenset()
        # ident -> native id where ``threading`` records a wrong one (the thread that forked,
        # in the child, on Python < 3.12)
        self.native_id_corrections: dict[int, int] = {}
        self.samples = 0
        # Per-tick caches, so a tick runs little Python code (each one wakes a thread 100 times
        # a second): ident -> (Thread, native id), and id(code) -> (code, looks idle).
        self._threads: dict[int, tuple[object, int | None]] = {}
        self._idle_codes: dict[int, tuple[object, bool]] = {}

    @property
    def ticks(self) -> int:
        """Ticks run so far."""
        return self._ticks

    def tick(
        self,
        frames: Mapping[int, FrameType],
        now: float,
        native_ids: Mapping[int, int | None] | None = None,
        tags: Mapping[int, _tags.Tags] | None = None,
        skip: AbstractSet[int] = frozenset(),
    ) -> None:
        """Samples every thread of ``frames`` (ident → innermost frame) at monotonic time ``now``.

        ``native_ids`` maps idents to kernel thread ids (cpu mode with clocks); by default it is
        read from ``threading.enumerate()``. ``tags`` maps idents to their tags as of ``frames``;
        by default each thread's tags are read when it is sampled. Threads in ``skip`` are not
        sampled this tick, but keep their CPU reference: the next tick credits them what they
        used since the last one.
        """
        self._ticks += 1
        elapsed_periods = self._wall_periods(now)
        use_clocks = self._mode == CPU and self._clocks is not None
        if use_clocks and native_ids is None:
            native_ids = self._native_ids(frames)
        for ident, frame in frames.items():
            if ident in self.ignored_idents or ident in skip:
                continue
            weight: int | None = None
            if self._mode == WALL:
                weight = elapsed_periods
            elif use_clocks and native_ids and native_ids.get(ident):
                native_id: int = native_ids[ident]  # type: ignore[assignment]
                weight = self._cpu_weight(ident, native_id, self._looks_idle(frame))
            if weight is None:  # no CPU clock for this thread: judge by its innermost frame
                weight = 0 if self._looks_idle(frame) else elapsed_periods
            if weight > 0:
                stack = self._formatter.stack(frame)
                thread_tags = (
                    tags.get(ident, _tags.NO_TAGS) if tags is not None else _tags.tags_of(ident)
                )
                self._aggregator.add(thread_tags, stack, weight)
                self.samples += weight
        # Forget ended threads now and then: a stale entry is harmless meanwhile, as a new
        # thread that reuses its ident has another native id or Thread.
        if use_clocks and (self._ticks % 128 == 0 or len(self._cpu_state) > len(frames)):
            for ident in [i for i in self._cpu_state if i not in frames]:
                del self._cpu_state[ident]
            for ident in [i for i in self._threads if i not in frames]:
                del self._threads[ident]

    def _native_ids(self, frames: Mapping[int, FrameType]) -> dict[int, int | None]:
        """Kernel thread ids of the threads of ``frames``.

        ``threading.enumerate()`` every tick would build a list of all threads under a lock;
        instead each ident's Thread is looked up in the table it reads, and its native id read
        again only when that Thread changed (a new thread that reuses an ended thread's ident).
        """
        table = getattr(threading, "_active", None)
        if not isinstance(table, dict):
            ids = {t.ident: t.native_id for t in threading.enumerate() if t.ident}
            ids.update(self.native_id_corrections)
            return ids  # type: ignore[return-value]
        cached = self._threads
        ids: dict[int, int | None] = {}
        for ident in frames:
            thread = table.get(ident)
            entry = cached.get(ident)
            if entry is None or entry[0] is not thread:
                native = self.native_id_corrections.get(ident) or getattr(thread, "native_id", None)
                entry = cached[ident] = (thread, native)
            ids[ident] = entry[1]
        return ids

    def _looks_idle(self, frame: FrameType) -> bool:
        """:func:`looks_idle`, cached per code object."""
        code = frame.f_code
        entry = self._idle_codes.get(id(code))
        if entry is None:
            if len(self._idle_codes) >= 10_000:
                self._idle_codes.clear()
            # the code object is kept in the entry so its id is not reused while cached
            entry = self._idle_codes[id(code)] = (code, looks_idle(frame))
        return entry[1]

    def _wall_periods(self, now: float) -> int:
        """Whole periods elapsed since the last tick (1 on the first tick), carrying the rest."""
        if self._last_tick is None:
            self._last_tick = now
            return 1
        self._wall_credit += now - self._last_tick
        self._last_tick = now
        periods = int(self._wall_credit / self._period)
        self._wall_credit -= periods * self._period
        return periods

    def _cpu_weight(self, ident: int, native_id: int, waiting: bool) -> int | None:
        """Samples due to the thread's CPU time, or None if its clock cannot be read (it just
        ended, or its recorded native id is stale)."""
        assert self._clocks is not None
        cpu = self._clocks.read(native_id)
        if cpu is None:
            self._cpu_state.pop(ident, None)
            return None
        state = self._cpu_state.get(ident)
        if state is None or state[0] != native_id:
            # First sight of this thread: all its CPU time was used since it started, which is
            # after the previous tick for a new thread (for threads already running when the
            # profiler started, the first tick only takes a reference).
            used = cpu if self._ticks > 1 else 0.0
            credit = 0.0
        else:
            used = cpu - state[1]
            credit = state[2]
        credit += max(used, 0.0)
        if used <= 0 or waiting:
            # Not running now: keep the credit for when it is caught running, so short bursts
            # add up, but do not charge it to the wait it is blocked in.
            self._cpu_state[ident] = (native_id, cpu, credit)
            return 0
        samples = int(credit / self._period)
        self._cpu_state[ident] = (native_id, cpu, credit - samples * self._period)
        return samples
