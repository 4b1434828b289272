"""Continuous CPU profiling for Python programs, pushed to a Kiln daemon.

    import kiln

    kiln.configure(application_name="checkout", server_address="http://127.0.0.1:4040",
                   tags={"env": "prod"})
    with kiln.tag_wrapper({"endpoint": "/pay"}):
        pay()

A background thread samples every thread's Python stack (100 times a second by default) and
every ``upload_interval`` seconds the counts are pushed to ``POST /ingest`` as folded stacks,
one request per tag set. ``kiln.shutdown()`` (also run at interpreter exit) sends what is left.
Problems are reported on the ``logging`` logger ``"kiln"``; profiling never raises into the
program after ``configure`` has accepted the options.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping

from ._config import Config
from ._profiler import Profiler
from ._sampling import AUTO, SAMPLER_ENV
from ._tags import tag_wrapper
from ._version import __version__

__all__ = ["configure", "shutdown", "tag_wrapper", "stats", "is_running", "__version__"]

logging.getLogger("kiln").addHandler(logging.NullHandler())

_lock = threading.Lock()
_profiler: Profiler | None = None
_last_stopped: Profiler | None = None  # so stats() still answers after shutdown()
_hooks_installed = False


def configure(
    application_name: str,
    server_address: str,
    *,
    auth_token: str | None = None,
    tags: Mapping[str, object] | None = None,
    sample_rate: int = 100,
    upload_interval: float = 10.0,
    mode: str = "cpu",
    line_numbers: bool = False,
    sampler: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    tenant_id: str | None = None,
    http_headers: Mapping[str, str] | None = None,
    ca_file: str | None = None,
    client_cert_file: str | None = None,
    client_key_file: str | None = None,
    max_queued_uploads: int = 64,
    upload_timeout: float = 10.0,
    retry_initial_delay: float = 1.0,
    retry_max_delay: float = 30.0,
    max_upload_attempts: int = 8,
    shutdown_timeout: float = 5.0,
) -> None:
    """Starts profiling this process (stopping and flushing a previous configuration first).

    application_name: the service, e.g. ``"checkout"``; letters, digits, ``_ . / -``.
    server_address: the daemon's base URL, e.g. ``"http://127.0.0.1:4040"``.
    auth_token: sent as ``Authorization: Bearer TOKEN``; or ``basic_auth=(user, password)``.
    tags: static tags of every sample, e.g. ``{"env": "prod", "region": "eu"}``.
    sample_rate: samples per second per busy thread (1–1000).
    upload_interval: seconds between uploads.
    mode: ``"cpu"`` counts CPU time only (profile type ``cpu``); ``"wall"`` counts every thread
        all the time, waits included (profile type ``wall``).
    line_numbers: one flamegraph node per sampled line instead of per function.
    sampler: ``"auto"`` (default: the native sampler of the optional ``kiln-profiler-native``
        package when it loads, else the pure-Python one, with one log line), ``"native"``
        (the same, the fallback logged as a warning) or ``"python"``; when not given, the
        ``KILN_SAMPLER`` environment variable, else ``"auto"``.
    tenant_id, http_headers: sent as ``X-Scope-OrgID`` and as extra headers with each upload.
    ca_file: a PEM file of CA certificates trusted for an ``https://`` server instead of the
        system's (e.g. a private CA).
    client_cert_file, client_key_file: a PEM certificate (chain) and its key, presented to a
        daemon that requires mutual TLS.
    max_queued_uploads: uploads kept while the server is unreachable; beyond, the oldest go.
    upload_timeout: seconds one HTTP request may take.
    retry_initial_delay, retry_max_delay, max_upload_attempts: the backoff of failed uploads.
    shutdown_timeout: how long :func:`shutdown` (and interpreter exit) waits for delivery.

    Raises ValueError or TypeError when an option is invalid; nothing is started then.
    """
    global _profiler
    config = Config.build(
        tags=tags,
        application_name=application_name,
        server_address=server_address,
        auth_token=auth_token,
        basic_auth=tuple(basic_auth) if basic_auth is not None else None,
        tenant_id=tenant_id,
        http_headers=dict(http_headers or {}),
        ca_file=ca_file,
        client_cert_file=client_cert_file,
        client_key_file=client_key_file,
        sample_rate=sample_rate,
        upload_interval=upload_interval,
        mode=mode,
        line_numbers=line_numbers,
        sampler=sampler if sampler is not None else os.environ.get(SAMPLER_ENV) or AUTO,
        max_queued_uploads=max_queued_uploads,
        upload_timeout=upload_timeout,
        retry_initial_delay=retry_initial_delay,
        retry_max_delay=retry_max_delay,
        max_upload_attempts=max_upload_attempts,
        shutdown_timeout=shutdown_timeout,
    )
    with _lock:
        previous, _profiler = _profiler, None
    if previous is not None:
        previous.stop(previous.config.shutdown_timeout)
    _start(config)


def _start(config: Config) -> None:
    global _profiler, _hooks_installed
    profiler = Profiler(config)
    with _lock:
        _profiler = profiler
        if not _hooks_installed:
            atexit.register(_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _hooks_installed = True
    profiler.start()


def shutdown(timeout: float | None = None) -> bool:
    """Stops profiling and uploads what was not sent yet, waiting at most ``timeout`` seconds
    (default: the configured ``shutdown_timeout``).

    Returns True when every profile was delivered (also when profiling was not running).
    """
    global _profiler, _last_stopped
    with _lock:
        profiler, _profiler = _profiler, None
    if profiler is None:
        return True
    _last_stopped = profiler
    return profiler.stop(profiler.config.shutdown_timeout if timeout is None else timeout)


def is_running() -> bool:
    return _profiler is not None


def stats() -> dict[str, int]:
    """Counters of the running (or last stopped) profiler: samples taken, uploads sent, failed
    and dropped; empty before the first :func:`configure`."""
    profiler = _profiler or _last_stopped
    return profiler.stats() if profiler is not None else {}


def _at_exit() -> None:
    shutdown()


def _after_fork_in_child() -> None:
    # The child has no sampling or upload thread; start fresh ones so a forked worker
    # (e.g. of a pre-forking server) is profiled too, without the parent's pending uploads.
    global _profiler, _lock
    _lock = threading.Lock()
    profiler, _profiler = _profiler, None
    if profiler is not None:
        try:
            _start(profiler.config)
        except Exception:  # never break the child over profiling
            logging.getLogger("kiln").exception("could not restart profiling after fork")
