"""The sampler: which threads count, how much, under which tags."""

from __future__ import annotations

import sys
import threading
import time

import pytest

import kiln
from kiln._frames import FrameFormatter
from kiln._sampler import CPU, WALL, Aggregator, Sampler, ThreadCpuClocks, looks_idle

linux_only = pytest.mark.skipif(
    not ThreadCpuClocks.available(), reason="thread CPU clocks exist on Linux only"
)


def spin_until(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(200))


def sleep_until(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.002)  # blocked in C: the Python frame alone cannot tell


def wait_until(stop: threading.Event) -> None:
    stop.wait()


def run_threads_and_sample(sampler: Sampler, seconds: float = 0.4) -> None:
    """Runs a spinning, a sleeping and a waiting thread while ticking ``sampler`` every 10 ms."""
    stop = threading.Event()
    threads = [
        threading.Thread(target=f, args=(stop,), name=f.__name__)
        for f in (spin_until, sleep_until, wait_until)
    ]
    for t in threads:
        t.start()
    sampler.ignored_idents = frozenset({threading.get_ident()})
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            frames = sys._current_frames()
            sampler.tick(frames, time.monotonic())
            del frames
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def samples_by_function(batch) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stacks in batch.counts.values():
        for stack, n in stacks.items():
            for fn in ("spin_until", "sleep_until", "wait_until"):
                if f";{fn} (" in stack:
                    counts[fn] = counts.get(fn, 0) + n
    return counts


@linux_only
def test_cpu_mode_counts_only_threads_that_use_cpu():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.01, CPU, ThreadCpuClocks())
    run_threads_and_sample(sampler)
    counts = samples_by_function(aggregator.drain())
    # The spinner shares the GIL with this thread, so it gets well under 100% of 0.4 s.
    assert counts.get("spin_until", 0) >= 5, counts
    # its many short wake-ups add up to a little CPU, caught now and then
    assert counts.get("sleep_until", 0) <= 5, counts
    assert "wait_until" not in counts


def test_without_clocks_known_waits_are_skipped_and_the_rest_counted():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.01, CPU, cpu_clocks=None)
    run_threads_and_sample(sampler)
    counts = samples_by_function(aggregator.drain())
    assert counts.get("spin_until", 0) >= 10, counts
    assert counts.get("sleep_until", 0) >= 10, counts  # time.sleep cannot be seen from Python
    assert "wait_until" not in counts


def test_wall_mode_counts_every_thread_every_period():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.01, WALL)
    run_threads_and_sample(sampler)
    counts = samples_by_function(aggregator.drain())
    assert set(counts) == {"spin_until", "sleep_until", "wait_until"}
    # every thread was sampled for (about) the same elapsed time
    assert max(counts.values()) - min(counts.values()) <= 3, counts
    assert sampler.samples == sum(counts.values())


def test_wall_weight_is_whole_elapsed_periods_with_the_rest_carried():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.25, WALL)
    frame = sys._getframe()
    weights = []
    for now in (10.0, 10.25, 10.875, 11.0):
        before = sampler.samples
        sampler.tick({1: frame}, now)
        weights.append(sampler.samples - before)
    assert weights == [1, 1, 2, 1]


class ScriptedClocks:
    """CPU seconds per native thread id, advanced by the test."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}

    def read(self, native_id: int):
        return self.cpu.get(native_id)


def test_cpu_credit_turns_partial_periods_into_whole_samples():
    clocks = ScriptedClocks()
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.25, CPU, clocks)  # type: ignore[arg-type]
    frame = sys._getframe()
    ident, native = 7, 70
    clocks.cpu[native] = 5.0  # CPU used before profiling started is not counted
    weights = []
    for step in range(8):
        clocks.cpu[native] += 0.125  # half a period of CPU per tick
        if step == 4:
            clocks.cpu[native] -= 0.125  # idle during this tick
        before = sampler.samples
        sampler.tick({ident: frame}, float(step), native_ids={ident: native})
        weights.append(sampler.samples - before)
    # tick 0 only reads the clock; then two half periods make one sample, across the idle tick
    assert weights == [0, 0, 1, 0, 0, 1, 0, 1]


def test_a_thread_left_out_of_a_tick_keeps_its_cpu_reference():
    # A thread whose tags changed while the frames were taken sits out that tick; at the next
    # one it is credited the CPU used since the tick before, not all it ever used.
    clocks = ScriptedClocks()
    sampler = Sampler(Aggregator(), FrameFormatter(), 0.25, CPU, clocks)  # type: ignore[arg-type]
    frame = sys._getframe()
    clocks.cpu[70] = 100.0
    sampler.tick({7: frame}, 0.0, native_ids={7: 70})
    clocks.cpu[70] += 0.25
    sampler.tick({7: frame}, 0.25, native_ids={7: 70}, skip={7})
    assert sampler.samples == 0
    clocks.cpu[70] += 0.25
    sampler.tick({7: frame}, 0.5, native_ids={7: 70})
    assert sampler.samples == 2


def test_cpu_credit_is_not_charged_to_a_blocking_wait():
    clocks = ScriptedClocks()
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.25, CPU, clocks)  # type: ignore[arg-type]
    ready = threading.Event()
    stop = threading.Event()

    def waiter():
        ready.set()
        stop.wait()

    thread = threading.Thread(target=waiter)
    thread.start()
    ready.wait(5)
    time.sleep(0.05)
    try:
        waiting_frame = sys._current_frames()[thread.ident]
        assert looks_idle(waiting_frame)
        clocks.cpu[1] = 0.0
        sampler.tick({5: waiting_frame}, 0.0, native_ids={5: 1})
        clocks.cpu[1] = 1.0  # a burst of CPU, but the thread is now parked in Event.wait
        sampler.tick({5: waiting_frame}, 1.0, native_ids={5: 1})
        assert sampler.samples == 0
        clocks.cpu[1] = 1.01  # caught running: the saved credit goes to where it runs
        sampler.tick({5: sys._getframe()}, 2.0, native_ids={5: 1})
        assert sampler.samples == 4
    finally:
        stop.set()
        thread.join(5)


def test_samples_carry_the_thread_tags():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.01, WALL)
    me = threading.get_ident()
    with kiln.tag_wrapper({"endpoint": "/pay"}):
        sampler.tick({me: sys._getframe()}, 0.0)
    sampler.tick({me: sys._getframe()}, 0.01)
    counts = aggregator.drain().counts
    assert set(counts) == {(("endpoint", "/pay"),), ()}
    assert all(sum(stacks.values()) == 1 for stacks in counts.values())


def test_ignored_threads_are_never_sampled():
    aggregator = Aggregator()
    sampler = Sampler(aggregator, FrameFormatter(), 0.01, WALL)
    sampler.ignored_idents = frozenset({1})
    sampler.tick({1: sys._getframe(), 2: sys._getframe()}, 0.0)
    assert sampler.samples == 1


def test_aggregator_sums_and_drains_into_a_new_interval():
    now = [100.0]
    aggregator = Aggregator(clock=lambda: now[0])
    aggregator.add((), "a;b", 2)
    aggregator.add((), "a;b", 3)
    aggregator.add((("k", "v"),), "a;b", 1)
    now[0] = 110.0
    batch = aggregator.drain()
    assert (batch.start, batch.end) == (100.0, 110.0)
    assert batch.counts == {(): {"a;b": 5}, (("k", "v"),): {"a;b": 1}}
    now[0] = 120.0
    assert aggregator.drain() == (110.0, 120.0, {})


def test_aggregator_bounds_distinct_stacks_per_interval():
    aggregator = Aggregator(max_stacks=2)
    for stack in ("a", "b", "c", "d", "a"):
        aggregator.add((), stack, 1)
    counts = aggregator.drain().counts[()]
    assert counts == {"a": 2, "b": 1, Aggregator.OVERFLOW_STACK: 2}
    assert aggregator.overflowed_samples == 2
    aggregator.add((), "c", 1)  # a new interval starts with room again
    assert aggregator.drain().counts == {(): {"c": 1}}


def test_modes_are_checked():
    with pytest.raises(ValueError, match="mode"):
        Sampler(Aggregator(), FrameFormatter(), 0.01, "gpu")
