"""The tick signal: how the native sampler hands ticks to a main thread that computes without
releasing the GIL (the only way before CPython 3.13; on every version a CPU timer sends it in
`cpu` mode), and how it leaves the signal to a program that wants it."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time

import pytest

import kiln
from conftest import native_or_skip
from kiln import _tick_signal
from test_sampling import (
    by_function,
    hot_caller,
    linux_only,
    make,
    run_for,
    spin_in_main_thread,
)
from kiln._sampler import CPU, WALL

needs_signal = pytest.mark.skipif(
    not _tick_signal.needed(), reason="the tick signal is used on Linux only"
)

pytestmark = [linux_only, needs_signal]

SIGNUM = signal.SIGURG
OTHER = signal.SIGRTMAX - 1


@pytest.fixture(autouse=True)
def _default_tick_signal(monkeypatch):
    """Each test starts with the tick signal at its default disposition, and leaves it so."""
    monkeypatch.delenv(_tick_signal.TICK_SIGNAL_ENV, raising=False)
    signal.signal(SIGNUM, signal.SIG_DFL)
    yield
    signal.signal(SIGNUM, signal.SIG_DFL)


def main_samples(counts, function: str = "spin_in_main_thread") -> int:
    return sum(n for stacks in counts.values() for stack, n in stacks.items() if function in stack)


@pytest.mark.parametrize("mode", [CPU, WALL])
def test_ticks_reach_a_main_thread_that_computes_through_the_signal(mode):
    native_or_skip()
    sampling = make("native", mode)
    assert sampling.tick_signal == SIGNUM
    assert isinstance(signal.getsignal(SIGNUM), _tick_signal_handler_type())
    spin_in_main_thread(sampling, 1.0)  # never releases the GIL
    assert sampling.ticks >= 8, sampling.ticks
    assert sampling.main_thread_ticks >= sampling.ticks * 0.8, (
        sampling.ticks,
        sampling.main_thread_ticks,
    )
    assert sampling.cpu_elsewhere > 0
    assert main_samples(sampling.drain().counts) >= 8
    sampling.stop()
    assert signal.getsignal(SIGNUM) is signal.SIG_DFL, "stop() puts the default back"


def test_the_cpu_timer_sends_the_ticks_of_a_computing_main_thread():
    native_or_skip()
    sampling = make("native", CPU)
    assert sampling.cpu_timer
    spin_in_main_thread(sampling, 1.0)
    assert sampling.main_thread_ticks >= sampling.ticks * 0.8, (
        sampling.ticks,
        sampling.main_thread_ticks,
    )
    sampling.stop()
    assert not sampling.cpu_timer, "stop() deletes the timer"


def test_a_program_that_resets_the_signal_to_the_default_is_not_disturbed():
    # SIGURG's default action is to do nothing: a tick signal sent after the reset is lost,
    # nothing else; the sampler then gives the signal up
    native_or_skip()
    sampling = make("native", CPU)
    spin_in_main_thread(sampling, 1.0, then=(0.3, lambda: signal.signal(SIGNUM, signal.SIG_DFL)))
    assert sampling.tick_signal == 0 and not sampling.cpu_timer
    assert sampling.ticks >= 30, sampling.ticks
    sampling.stop()


def test_a_c_level_handler_installed_later_makes_the_sampler_give_the_signal_up():
    # C code (here libc's signal(), with SIG_IGN) replacing CPython's handler: the Python-level
    # handler still reads as the sampler's, but handed ticks no longer run
    native_or_skip()
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
    sampling = make("native", CPU)
    assert sampling.tick_signal == SIGNUM
    spin_in_main_thread(sampling, 1.0, then=(0.3, lambda: libc.signal(SIGNUM, 1)))  # SIG_IGN
    assert sampling.tick_signal == 0 and not sampling.cpu_timer
    assert sampling.ticks >= 30, sampling.ticks
    sampling.stop()


def test_ticks_go_on_while_the_main_thread_waits_in_a_join():
    native_or_skip()
    stop = threading.Event()
    spinner = threading.Thread(target=hot_caller, args=(stop,))
    spinner.start()
    try:
        sampling = make("native", CPU)
        assert sampling.tick_signal == SIGNUM
        spinner_cpu = time.clock_gettime(_thread_clock(spinner))
        run_for(sampling, 1.0)  # the main thread waits in join(): no signal is sent to it
        spinner_cpu = time.clock_gettime(_thread_clock(spinner)) - spinner_cpu
    finally:
        stop.set()
        spinner.join(5)
    assert sampling.main_thread_ticks <= 2, (sampling.ticks, sampling.main_thread_ticks)
    # every 10 ms of the spinner's CPU is one sample, taken by the sampling thread
    hot = by_function(sampling.drain().counts).get("hot_leaf", 0)
    expected = spinner_cpu / 0.01
    assert expected * 0.7 - 3 <= hot <= expected * 1.1 + 3, (hot, expected)
    sampling.stop()


def test_a_handler_the_program_installed_before_is_kept():
    native_or_skip()
    calls = []
    mine = lambda signum, frame: calls.append(signum)  # noqa: E731
    signal.signal(SIGNUM, mine)
    sampling = make("native", WALL)
    assert sampling.tick_signal == 0
    spin_in_main_thread(sampling, 0.5)
    sampling.stop()
    assert calls == []
    assert signal.getsignal(SIGNUM) is mine
    assert sampling.ticks >= 10 and sampling.samples > 0


def test_a_handler_the_program_installs_later_is_kept(caplog):
    native_or_skip()
    calls = []
    mine = lambda signum, frame: calls.append(signum)  # noqa: E731
    sampling = make("native", WALL)
    assert sampling.tick_signal == SIGNUM
    caplog.set_level(logging.INFO, logger="kiln")
    handed_before = []

    def install_mine() -> None:
        handed_before.append(sampling.main_thread_ticks)
        signal.signal(SIGNUM, mine)

    spin_in_main_thread(sampling, 1.5, then=(0.5, install_mine))
    assert handed_before[0] >= 10, handed_before
    assert sampling.tick_signal == 0, "the sampler stopped sending the signal"
    assert len(calls) <= 2, calls  # at most the tick that was late, before it was noticed
    assert sampling.ticks >= 50, "ticks went on, on the sampling thread"
    sampling.stop()
    assert signal.getsignal(SIGNUM) is mine
    lines = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert len(lines) == 1, lines


def test_a_signal_the_main_thread_blocks_is_given_up():
    native_or_skip()
    sampling = make("native", WALL)
    assert sampling.tick_signal == SIGNUM
    signal.pthread_sigmask(signal.SIG_BLOCK, {SIGNUM})
    try:
        spin_in_main_thread(sampling, 1.0)
        assert sampling.tick_signal == 0
        assert sampling.ticks >= 30, sampling.ticks
        assert main_samples(sampling.drain().counts) >= 30
    finally:
        # the one queued signal is delivered now: its handler does nothing
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {SIGNUM})
        sampling.stop()


def test_started_outside_the_main_thread_ticks_go_as_pending_calls(caplog):
    native_or_skip()
    caplog.set_level(logging.INFO, logger="kiln")
    made = []
    thread = threading.Thread(target=lambda: made.append(make("native", WALL)))
    thread.start()
    thread.join(5)
    assert made[0].tick_signal == 0
    assert signal.getsignal(SIGNUM) is signal.SIG_DFL
    assert any("outside the main thread" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "expected", "warned"),
    [("off", 0, False), (str(OTHER), OTHER, False), ("9", 0, True), ("x", 0, True)],
)
def test_the_signal_is_chosen_by_the_environment(monkeypatch, caplog, value, expected, warned):
    native_or_skip()
    monkeypatch.setenv(_tick_signal.TICK_SIGNAL_ENV, value)
    caplog.set_level(logging.INFO, logger="kiln")
    try:
        sampling = make("native", WALL)
        assert sampling.tick_signal == expected
        assert any(
            r.levelno == logging.WARNING and _tick_signal.TICK_SIGNAL_ENV in r.getMessage()
            for r in caplog.records
        ) == warned
        sampling.stop()
    finally:
        signal.signal(OTHER, signal.SIG_DFL)


def test_stats_name_the_tick_signal_and_shutdown_puts_the_default_back(server, caplog):
    native_or_skip()
    caplog.set_level(logging.INFO, logger="kiln")
    kiln.configure(application_name="unit-app", server_address=server.url, sampler="native")
    assert kiln.stats()["tick_signal"] == SIGNUM
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        sum(i * i for i in range(300))
    assert kiln.stats()["main_thread_ticks"] >= 5, kiln.stats()
    kiln.shutdown(timeout=2)
    assert signal.getsignal(SIGNUM) is signal.SIG_DFL
    assert not [r for r in caplog.records if "taken over" in r.getMessage()]
    kiln.configure(application_name="unit-app", server_address=server.url, sampler="python")
    assert kiln.stats()["tick_signal"] == 0
    assert signal.getsignal(SIGNUM) is signal.SIG_DFL


def _tick_signal_handler_type() -> type:
    from kiln._sampling import load_native

    return load_native().TickHandler  # type: ignore[attr-defined,no-any-return]


def _thread_clock(thread: threading.Thread) -> int:
    return (~thread.native_id << 3) | 6  # type: ignore[operator]


def test_a_forked_child_and_an_exit_without_shutdown_keep_working(server):
    native_or_skip()
    from test_profiler import run_script

    # Each process reports in one write(2) to the shared pipe: print() writes its parts one by
    # one, and the two processes' parts interleaved on a loaded machine.
    body = """
    import json
    def report(who):
        os.write(1, f"{who} {json.dumps(kiln.stats())}\\n".encode())
    spin(0.5)
    pid = os.fork()
    if pid == 0:
        spin(0.5)
        report("child")
        sys.exit(0)  # the interpreter's exit, with the timer and the handler in place
    spin(0.5)
    report("parent")
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    """
    result = run_script(body, server.url)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for who in ("parent", "child"):
        stats = json.loads(lines[who])
        assert stats["native_sampler"] == 1 and stats["tick_signal"] == SIGNUM, (who, stats)
        # (0.5 s of wall time: a loaded machine gives the child less CPU, so fewer ticks)
        handed = stats["main_thread_ticks"]
        assert handed >= stats["ticks"] * 0.5 and handed >= 5, (who, stats["ticks"], handed)
