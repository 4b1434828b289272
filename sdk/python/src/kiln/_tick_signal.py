"""The signal through which the native sampler hands its ticks to the main thread.

Before 3.13, a pending call added by the sampling thread is not noticed by a main thread that
computes without releasing the GIL, so each tick would have to take the GIL from it. A signal
received by the main thread is noticed at its next bytecode boundary: the native sampler sends
the signal to the main thread alone, only while it is using CPU, and the handler installed here
runs the tick (see ``sdk/python/native/src/tick_signal.rs``, also for EINTR: the handler is
flagged ``SA_RESTART``). From 3.13 pending calls do reach a computing main thread, but the
signal is still used there: in ``cpu`` mode a timer on the main thread's CPU clock sends it, so
the sampling thread need not wake every period to hand the ticks over.

The signal is ``SIGURG`` unless ``KILN_TICK_SIGNAL`` names another number (``off`` disables
this path): a signal whose default action is to do nothing, so one that arrives after its
handler is gone (at interpreter exit, or after a program reset it to ``SIG_DFL``) is harmless;
nothing in a Python program sends it (the kernel does only for sockets' out-of-band data to an
owner set with ``F_SETOWN``, and the handler ignores a signal when no tick is due). It is used
only when the profiler starts from the main thread and the signal has neither a Python nor a C
handler; otherwise ticks go as pending calls. A program that installs its own
handler for it (or blocks it) later keeps it: the sampler notices that its handed ticks stay
late and stops sending the signal (the program's handler may see a few calls first).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import weakref

logger = logging.getLogger("kiln")

#: Environment variable: a signal number, or ``off``.
TICK_SIGNAL_ENV = "KILN_TICK_SIGNAL"


def needed() -> bool:
    """Whether the signal path is used here: on Linux (signals to one thread, CPU-clock timers).

    Before 3.13 it is the only way to hand ticks to a main thread that keeps the GIL; from 3.13
    pending calls would do, but the CPU timer still saves the sampling thread its wake-ups.
    """
    return sys.platform.startswith("linux")


def wanted_signal() -> int | None:
    """The signal number to use, or None when disabled or not given correctly (logged)."""
    default = getattr(signal, "SIGURG", None)
    value = os.environ.get(TICK_SIGNAL_ENV, "").strip()
    if not value:
        return default
    if value.lower() == "off":
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if not 1 <= number < signal.NSIG or number in (signal.SIGKILL, signal.SIGSTOP):
        logger.warning(
            "%s=%r is not a signal number or 'off': ticks go to the main thread as pending calls",
            TICK_SIGNAL_ENV,
            value,
        )
        return None
    return number


def install(native: object, sampler: object) -> tuple[int, object | None]:
    """Installs ``sampler``'s tick handler for the tick signal and tells the sampler to use it.

    Returns ``(signal number, handler)``, or ``(0, None)`` when the signal path is not taken
    (logged once, at info level, with the reason): then ticks go as pending calls.
    """
    signum = wanted_signal()
    if signum is None:
        return 0, None
    if threading.current_thread() is not threading.main_thread():
        logger.info(
            "profiling started outside the main thread: signal %d cannot be installed, ticks go "
            "to the main thread only when it releases the GIL",
            signum,
        )
        return 0, None
    try:
        current = signal.getsignal(signum)
        # A handler of an earlier sampler (stopped from another thread, or in a forked child)
        # is replaced; anything else means the signal is someone else's.
        ours = isinstance(current, native.TickHandler)  # type: ignore[attr-defined]
        free = current is signal.SIG_DFL and native.signal_is_default(signum)  # type: ignore[attr-defined]
        if not (ours or free):
            logger.info(
                "signal %d already has a handler (set %s to another number): ticks go to the "
                "main thread only when it releases the GIL",
                signum,
                TICK_SIGNAL_ENV,
            )
            return 0, None
        handler = sampler.tick_handler()  # type: ignore[attr-defined]
        signal.signal(signum, handler)
        try:
            sampler.use_tick_signal(signum, threading.get_native_id())  # type: ignore[attr-defined]
        except BaseException:
            signal.signal(signum, signal.SIG_DFL)
            raise
    except (OSError, ValueError, RuntimeError) as error:
        logger.info("signal %d could not be installed (%s): using pending calls", signum, error)
        return 0, None
    # Before the interpreter's exit resets signal handlers: no tick signal after that.
    atexit.register(_stop_sending, weakref.ref(sampler))
    return signum, handler


def _stop_sending(sampler_ref: weakref.ReferenceType[object]) -> None:
    sampler = sampler_ref()
    if sampler is not None:
        sampler.use_tick_signal(0, 0)  # type: ignore[attr-defined]


def release(signum: int, handler: object) -> None:
    """Puts back the default disposition of ``signum`` if ``handler`` is still its handler and
    this is the main thread (elsewhere the inert handler stays until the next ``install``)."""
    if not signum or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signum) is handler:
            signal.signal(signum, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
