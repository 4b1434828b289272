"""Both samplers (pure Python and native) through the interface the profiler drives: which
threads count, the stacks they get, their tags; and the fallback when the native one is absent."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

import kiln
from conftest import native_or_skip
from kiln import _sampling
from kiln._frames import FrameFormatter
from kiln._sampler import CPU, WALL, Aggregator, ThreadCpuClocks

linux_only = pytest.mark.skipif(
    not ThreadCpuClocks.available(), reason="thread CPU clocks exist on Linux only"
)


def make(kind: str, mode: str = CPU, line_numbers: bool = False, max_stacks: int = 20_000):
    clocks = ThreadCpuClocks() if mode == CPU and ThreadCpuClocks.available() else None
    if kind == "native":
        return _sampling.NativeSampling(
            _sampling.load_native(), 0.01, mode, clocks, line_numbers, max_stacks=max_stacks
        )
    return _sampling.PythonSampling(0.01, mode, clocks, line_numbers, max_stacks=max_stacks)


def hot_leaf(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(300))


def hot_caller(stop: threading.Event) -> None:
    hot_leaf(stop)


def sleeper(stop: threading.Event) -> None:
    while not stop.is_set():
        time.sleep(0.002)  # blocked in C: the Python frame alone cannot tell


def waiter(stop: threading.Event) -> None:
    stop.wait()


def sample_while_running(sampling, targets, seconds: float = 0.5, tags=None) -> dict:
    """Runs one thread per target while ticking every 10 ms; returns the drained counts."""
    stop = threading.Event()

    def run(target):
        if tags and target in tags:
            with kiln.tag_wrapper(tags[target]):
                target(stop)
        else:
            target(stop)

    threads = [threading.Thread(target=run, args=(t,), name=t.__name__) for t in targets]
    for t in threads:
        t.start()
    sampling.ignore({threading.get_ident()})
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sampling.tick(time.monotonic())
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    return sampling.drain().counts


def by_function(counts, names=("hot_leaf", "sleeper", "waiter")) -> dict[str, int]:
    found: dict[str, int] = {}
    for stacks in counts.values():
        for stack, n in stacks.items():
            leafmost = [name for name in names if f";{name} (" in stack]
            for name in leafmost[-1:]:
                found[name] = found.get(name, 0) + n
    return found


def test_the_hot_function_dominates_with_its_whole_stack(sampler_kind):
    sampling = make(sampler_kind, WALL)
    counts = sample_while_running(sampling, [hot_caller])
    stacks = counts[()]
    # root first, leaf last, each frame as the pure formatter names it
    text = FrameFormatter()
    caller = text.code_text(hot_caller.__code__, 0)
    leaf = text.code_text(hot_leaf.__code__, 0)
    assert leaf.startswith("hot_leaf (test_sampling.py:"), leaf
    hot = {stack: n for stack, n in stacks.items() if f";{caller};{leaf}" in stack}
    assert sum(hot.values()) >= 0.8 * sum(stacks.values()), stacks
    for stack in hot:
        assert stack.startswith("Thread._bootstrap (threading.py:"), stack
    # the leaf is hot_leaf itself, its generator, or a call it makes (Event.is_set)
    leaves = (leaf, "hot_leaf.<locals>.<genexpr> (test_sampling.py:35)")
    at_leaf = sum(n for stack, n in hot.items() if stack.endswith(leaves))
    assert at_leaf >= 0.5 * sum(hot.values()), hot
    assert sampling.samples == sum(sum(s.values()) for s in counts.values())


@linux_only
def test_cpu_mode_counts_only_threads_that_use_cpu(sampler_kind):
    sampling = make(sampler_kind, CPU)
    counts = by_function(sample_while_running(sampling, [hot_caller, sleeper, waiter]))
    # the spinner shares the GIL with the ticking thread, so it gets well under 100 %
    assert counts.get("hot_leaf", 0) >= 5, counts
    # its many short wake-ups add up to a little CPU, caught now and then
    assert counts.get("sleeper", 0) <= 5, counts
    assert "waiter" not in counts, counts


def test_wall_mode_counts_every_thread_every_period(sampler_kind):
    counts = by_function(
        sample_while_running(make(sampler_kind, WALL), [hot_caller, sleeper, waiter])
    )
    assert set(counts) == {"hot_leaf", "sleeper", "waiter"}, counts
    assert max(counts.values()) - min(counts.values()) <= 3, counts


def test_samples_carry_each_threads_tags(sampler_kind):
    tags = {hot_caller: {"endpoint": "/pay"}, sleeper: {"endpoint": "/idle", "shard": 3}}
    counts = sample_while_running(make(sampler_kind, WALL), [hot_caller, sleeper], tags=tags)
    pay = by_function({(): counts[(("endpoint", "/pay"),)]})
    idle = by_function({(): counts[(("endpoint", "/idle"), ("shard", "3"))]})
    assert set(pay) == {"hot_leaf"} and pay["hot_leaf"] >= 20, counts
    assert set(idle) == {"sleeper"} and idle["sleeper"] >= 20, counts
    assert not by_function({(): counts.get((), {})}), counts  # no untagged worker samples


def test_ignored_threads_are_never_sampled(sampler_kind):
    sampling = make(sampler_kind, WALL)
    sampling.ignore({threading.get_ident()})
    sampling.tick(time.monotonic())
    assert not any(
        "test_ignored_threads_are_never_sampled" in stack
        for stacks in sampling.drain().counts.values()
        for stack in stacks
    )


def at_depth(sampling, depth: int, now: float) -> None:
    if depth:
        at_depth(sampling, depth - 1, now)
    else:
        sampling.tick(now)


def test_distinct_stacks_are_bounded_per_interval(sampler_kind):
    sampling = make(sampler_kind, WALL, max_stacks=2)
    sampling.ignore(set(sys._current_frames()) - {threading.get_ident()})
    for step, depth in enumerate((0, 1, 2, 3, 0)):
        at_depth(sampling, depth, step * 0.0105)  # a little over a period apart: 1 sample each
    counts = sampling.drain().counts[()]
    assert sorted(counts.values()) == [1, 2, 2], counts
    assert counts[Aggregator.OVERFLOW_STACK] == 2, counts
    assert sampling.overflowed_samples == 2
    at_depth(sampling, 4, 0.05)  # a new interval has room again
    (stack,) = sampling.drain().counts[()]
    frame = FrameFormatter().code_text(at_depth.__code__, 0)
    leaf = f";{type(sampling).__name__}.tick (kiln/_sampling.py:{stack.rsplit(':', 1)[1]}"
    assert stack.endswith(f";{frame}" * 5 + leaf), stack


def test_line_numbers_name_the_running_line(sampler_kind):
    sampling = make(sampler_kind, WALL, line_numbers=True)
    sampling.ignore(set(sys._current_frames()) - {threading.get_ident()})
    line = sys._getframe().f_lineno + 1
    sampling.tick(time.monotonic())
    (stack,) = sampling.drain().counts[()]
    assert f";test_line_numbers_name_the_running_line (test_sampling.py:{line});" in stack


def test_the_native_sampler_is_used_when_it_loads(caplog):
    native_or_skip()
    with caplog.at_level(logging.INFO, logger="kiln"):
        sampling = _sampling.create("auto", 0.01, CPU, False)
    assert sampling.name == "native"
    assert not [r for r in caplog.records if "native sampler" in r.getMessage()]


@pytest.mark.parametrize(("choice", "level"), [("auto", logging.INFO), ("native", logging.WARNING)])
def test_a_missing_extension_falls_back_with_one_log_line(monkeypatch, caplog, choice, level):
    monkeypatch.setitem(sys.modules, "_kiln_native", None)  # makes the import fail
    with caplog.at_level(logging.INFO, logger="kiln"):
        sampling = _sampling.create(choice, 0.01, WALL, False)
    assert sampling.name == "python"
    records = [r for r in caplog.records if "native sampler" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == level, caplog.records
    sampling.tick(time.monotonic())
    assert sampling.samples >= 1


def test_python_choice_never_loads_the_extension(monkeypatch):
    def refuse():
        raise AssertionError("the extension was loaded")

    monkeypatch.setattr(_sampling, "load_native", refuse)
    assert _sampling.create("python", 0.01, CPU, False).name == "python"


def test_an_extension_that_fails_to_start_falls_back(monkeypatch, caplog):
    class Broken:
        ABI_VERSION = _sampling.NATIVE_ABI_VERSION

        class NativeSampler:
            def __init__(self, **_: object) -> None:
                raise RuntimeError("cannot start")

    monkeypatch.setitem(sys.modules, "_kiln_native", Broken)
    with caplog.at_level(logging.INFO, logger="kiln"):
        assert _sampling.create("auto", 0.01, CPU, False).name == "python"
    assert any("cannot start" in r.getMessage() for r in caplog.records)


def test_profiling_goes_on_without_the_extension(monkeypatch, server):
    monkeypatch.setitem(sys.modules, "_kiln_native", None)
    kiln.configure(
        application_name="unit-app", server_address=server.url, sampler="native", mode="wall"
    )
    time.sleep(0.2)
    assert kiln.stats()["native_sampler"] == 0
    assert kiln.shutdown(timeout=5) is True
    (upload,) = server.wait_for(1)
    assert "test_profiling_goes_on_without_the_extension" in upload.body


def test_the_sampler_choice_is_checked_and_read_from_the_environment(monkeypatch, server):
    with pytest.raises(ValueError, match="sampler must be one of auto, native, python"):
        kiln.configure(application_name="a", server_address=server.url, sampler="rust")
    monkeypatch.setenv("KILN_SAMPLER", "fast")
    with pytest.raises(ValueError, match=r"\$KILN_SAMPLER"):
        kiln.configure(application_name="a", server_address=server.url)
    monkeypatch.setenv("KILN_SAMPLER", "python")
    kiln.configure(application_name="a", server_address=server.url)
    assert kiln.stats()["native_sampler"] == 0


def test_stats_are_read_while_the_sampler_runs(sampler_kind, server):
    kiln.configure(
        application_name="unit-app", server_address=server.url, sampler=sampler_kind, mode="wall"
    )
    deadline = time.monotonic() + 5
    while kiln.stats()["samples"] < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = kiln.stats()
    assert stats["samples"] >= 5 and stats["sampling_errors"] == 0, stats
    assert stats["native_sampler"] == (sampler_kind == "native"), stats


def test_stats_count_the_ticks_handed_to_the_main_thread(sampler_kind, server):
    kiln.configure(
        application_name="unit-app", server_address=server.url, sampler=sampler_kind, mode="wall"
    )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and kiln.stats()["main_thread_ticks"] < 5:
        sum(i * i for i in range(300))
        time.sleep(0)  # releases the GIL: a handed tick runs at once on any Python
    stats = kiln.stats()
    if sampler_kind == "native":
        assert stats["main_thread_ticks"] >= 5, stats
    else:
        assert stats["main_thread_ticks"] == 0 and stats["samples"] > 0, stats


def run_for(sampling, seconds: float) -> None:
    """Runs ``sampling`` on a thread of its own for ``seconds``, as the profiler does."""
    errors: list[BaseException] = []

    def on_error() -> None:
        errors.append(sys.exc_info()[1])  # type: ignore[arg-type]

    thread = threading.Thread(
        target=lambda: sampling.run(time.monotonic() + seconds, on_error), name="runner"
    )
    thread.start()
    sampling.ignore({thread.ident, threading.get_ident()})
    thread.join(seconds + 5)
    assert not errors, errors


@linux_only
def test_native_cpu_mode_skips_the_gil_while_no_thread_uses_cpu():
    native_or_skip()
    stop = threading.Event()
    idle = threading.Thread(target=waiter, args=(stop,))
    idle.start()
    try:
        quiet = make("native", CPU)
        run_for(quiet, 1.0)  # 100 periods, nothing running but this thread, which is ignored
        assert 3 <= quiet.ticks <= 25, quiet.ticks  # one tick in 10 periods, to find new threads
        busy = make("native", CPU)
        spinner = threading.Thread(target=hot_caller, args=(stop,))
        spinner.start()
        run_for(busy, 1.0)
        # every period of CPU the spinner used is sampled all the same (a tick takes as many
        # samples as whole periods of credit), however many ticks were skipped
        assert busy.samples >= 10, (busy.ticks, busy.samples)
        assert busy.samples >= busy.ticks - 12, (busy.ticks, busy.samples)
    finally:
        stop.set()
        idle.join(5)


def spin_in_main_thread(
    sampling, seconds: float, tags=None, release_gil=False, then=None
) -> None:
    """Runs ``sampling`` on a thread of its own while this (the main) thread runs Python code,
    releasing the GIL between small pieces of work when ``release_gil``. ``then``, an
    ``(after, action)`` pair, calls ``action()`` once, ``after`` seconds in."""
    errors: list[BaseException] = []

    def on_error() -> None:
        errors.append(sys.exc_info()[1])  # type: ignore[arg-type]

    def run() -> None:
        # ignore() from here: from the main thread it would wait for run() to return
        sampling.ignore({threading.get_ident()})
        sampling.run(time.monotonic() + seconds, on_error)

    runner = threading.Thread(target=run, name="runner")
    runner.start()
    due = time.monotonic() + then[0] if then else None
    with kiln.tag_wrapper(tags or {}):
        while runner.is_alive():
            sum(i * i for i in range(300))
            if release_gil:
                time.sleep(0)
            if due is not None and time.monotonic() >= due:
                due = None
                then[1]()
    runner.join(5)
    assert not errors, errors


#: Before 3.13, a pending call added by another thread waits until the main thread next takes
#: the GIL: a main thread that never releases it is not handed ticks that way (the tick signal
#: reaches it instead, see test_tick_signal.py, unless it is not available).
PROMPT_PENDING_CALLS = sys.version_info >= (3, 13)


@linux_only
@pytest.mark.parametrize("mode", [CPU, WALL])
@pytest.mark.parametrize("release_gil", [True, False], ids=["releasing-gil", "computing"])
def test_native_ticks_run_in_the_main_thread_while_it_runs_python(mode, release_gil):
    native_or_skip()
    assert threading.current_thread() is threading.main_thread()
    sampling = make("native", mode)
    spin_in_main_thread(sampling, 1.0, tags={"handed": "yes"}, release_gil=release_gil)
    # (in cpu mode, ticks while no thread has a period of CPU credit are skipped: a loaded
    # machine gives fewer)
    assert sampling.ticks >= 8, sampling.ticks
    if release_gil or PROMPT_PENDING_CALLS or sampling.tick_signal:
        # (nearly) every tick ran in the main thread, and its CPU time is counted
        assert sampling.main_thread_ticks >= sampling.ticks * 0.8, (
            sampling.ticks,
            sampling.main_thread_ticks,
        )
        assert sampling.cpu_elsewhere > 0
    else:
        # a handed tick that stays late is retried only after a backoff: the ticks ran on the
        # sampling thread
        assert sampling.main_thread_ticks <= sampling.ticks * 0.2, (
            sampling.ticks,
            sampling.main_thread_ticks,
        )
    # either way the main thread is sampled, under its tags
    counts = sampling.drain().counts
    tagged = counts.get((("handed", "yes"),), {})
    main_samples = sum(n for stack, n in tagged.items() if "spin_in_main_thread" in stack)
    assert main_samples >= 8, counts


@linux_only
def test_native_ticks_stay_on_the_sampling_thread_while_the_main_thread_blocks():
    native_or_skip()
    stop = threading.Event()
    spinner = threading.Thread(target=hot_caller, args=(stop,))
    spinner.start()
    try:
        sampling = make("native", WALL)
        run_for(sampling, 1.0)  # the main thread waits in join(): pending calls cannot run
    finally:
        stop.set()
        spinner.join(5)
    assert sampling.ticks >= 20, sampling.ticks
    assert sampling.main_thread_ticks <= 2, (sampling.ticks, sampling.main_thread_ticks)
    assert by_function(sampling.drain().counts).get("hot_leaf", 0) >= 20


def test_an_error_of_a_main_thread_tick_is_raised_by_run_not_in_the_main_thread():
    native_or_skip()
    calls = []

    def broken_frames() -> dict:
        # fails in the main thread only: the first tick, which always runs on the sampling
        # thread, succeeds; the ticks handed over then fail
        calls.append(threading.get_ident())
        if threading.current_thread() is threading.main_thread():
            raise RuntimeError("no frames today")
        return sys._current_frames()

    native = _sampling.load_native()
    sampler = native.NativeSampler(
        period=0.01,
        mode=WALL,
        use_clocks=False,
        line_numbers=False,
        code_text=FrameFormatter().code_text,
        idle_frames=[],
        tags_table={},
        threads_table={},
        current_frames=broken_frames,
        max_stacks=100,
        overflow_text=Aggregator.OVERFLOW_STACK,
        frame_cache_limit=100,
    )
    raised: list[BaseException] = []

    def run() -> None:
        try:
            sampler.run(time.monotonic() + 5, native.StopSignal())
        except RuntimeError as error:
            raised.append(error)

    runner = threading.Thread(target=run)
    runner.start()
    while runner.is_alive():  # Python code the pending tick interrupts: it must not raise here
        sum(i * i for i in range(300))
        time.sleep(0)  # releases the GIL: a handed tick runs at once on any Python
    assert [str(e) for e in raised] == ["no frames today"]
    assert threading.get_ident() in calls, "the failing tick ran in the main thread"


@linux_only
def test_native_cpu_of_a_main_thread_that_computes_then_blocks_is_all_counted():
    # On CPython before 3.13 the ticks handed to this computing main thread wait until it
    # blocks; what they would have sampled must be taken by the sampling thread meanwhile.
    native_or_skip()
    sampling = make("native", CPU)
    errors: list[BaseException] = []
    started = threading.Event()

    def run() -> None:
        sampling.ignore({threading.get_ident()})
        started.set()
        sampling.run(time.monotonic() + 1.0, lambda: errors.append(sys.exc_info()[1]))

    runner = threading.Thread(target=run, name="runner")
    runner.start()
    started.wait(5)
    time.sleep(0.05)  # the first tick (every thread's CPU reference) has run
    cpu_start = time.thread_time()
    while time.thread_time() < cpu_start + 0.3:  # 30 periods of CPU, whatever the load
        sum(i * i for i in range(300))
    runner.join(5)  # blocked: a waiting handed tick cannot run here
    assert not errors, errors
    main_samples = sum(
        n
        for stacks in sampling.drain().counts.values()
        for stack, n in stacks.items()
        if "test_native_cpu_of_a_main_thread_that_computes_then_blocks" in stack
    )
    assert 20 <= main_samples <= 40, main_samples
