"""Delivering uploads: a bounded queue drained by one background thread.

* The queue holds at most ``max_queued`` uploads besides the one being sent; when full, the
  oldest is dropped, counted and logged, so memory stays bounded however long the server is away.
* A failed upload that may succeed later (connection error, timeout, 408, 429, 5xx) is retried
  with exponential backoff (``retry_initial_delay`` doubling up to ``retry_max_delay``, with
  jitter), at most ``max_attempts`` times. Other answers (400, 401, 413, …) will not change by
  retrying: the upload is dropped and the server's message logged.
* :meth:`Uploader.close` delivers what is queued, waiting at most a timeout.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

logger = logging.getLogger("kiln")

# Warnings about the same trouble are repeated at most this often (seconds).
_LOG_EVERY = 60.0


@dataclass(eq=False)
class Upload:
    url: str
    body: bytes
    attempts: int = 0


@dataclass
class RetryPolicy:
    initial_delay: float = 1.0
    max_delay: float = 30.0
    max_attempts: int = 8

    def delay(self, failures: int) -> float:
        """Wait before the next attempt after ``failures`` consecutive failures (≥ 1)."""
        ceiling = min(self.max_delay, self.initial_delay * (2 ** min(failures - 1, 30)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class UploadError(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class UploadStats:
    sent: int = 0
    failed_attempts: int = 0
    dropped_queue_full: int = 0
    dropped_rejected: int = 0
    dropped_retries_exhausted: int = 0
    dropped_at_shutdown: int = 0
    uploader_cpu_ms: int = 0  # CPU time of the upload thread, updated after each attempt

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or status >= 500


class _RateLimitedLog:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def __call__(self, key: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -_LOG_EVERY) >= _LOG_EVERY:
            self._last[key] = now
            logger.log(level, message, *args)
        else:
            logger.debug(message, *args)


def post(
    upload: Upload,
    headers: Mapping[str, str],
    timeout: float,
    context: ssl.SSLContext | None = None,
) -> None:
    """Sends one upload (over ``context``'s TLS settings for https when given); raises
    UploadError unless the server answers 2xx."""
    request = urllib.request.Request(upload.url, data=upload.body, method="POST")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read(500).decode("utf-8", "replace").strip()
        raise UploadError(
            f"server answered {error.code}: {detail or error.reason}",
            _retryable_status(error.code),
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise UploadError(f"cannot reach the server: {reason}", True) from None


@dataclass
class _State:
    queue: collections.deque[Upload] = field(default_factory=collections.deque)
    in_flight: Upload | None = None
    closing: bool = False
    consecutive_failures: int = 0


class Uploader:
    """Owns the upload thread. ``submit`` never blocks; ``close`` flushes."""

    def __init__(
        self,
        headers: Mapping[str, str],
        timeout: float = 10.0,
        max_queued: int = 64,
        retry: RetryPolicy | None = None,
        send: Callable[[Upload, Mapping[str, str], float], None] = post,
    ) -> None:
        if max_queued < 1:
            raise ValueError("max_queued must be at least 1")
        self._headers = dict(headers)
        self._timeout = timeout
        self._max_queued = max_queued
        self._retry = retry or RetryPolicy()
        self._send = send
        self._state = _State()
        self._cond = threading.Condition()
        self._abandon = threading.Event()  # set when close() gives up waiting
        self._log = _RateLimitedLog()
        self.stats = UploadStats()
        self._thread = threading.Thread(target=self._run, name="kiln-uploader", daemon=True)

    @property
    def ident(self) -> int | None:
        return self._thread.ident

    def start(self) -> None:
        self._thread.start()

    def submit(self, upload: Upload) -> None:
        with self._cond:
            if self._state.closing:
                logger.debug("upload submitted after close; dropped")
                self.stats.dropped_at_shutdown += 1
                return
            queue = self._state.queue
            if len(queue) >= self._max_queued:
                queue.popleft()
                self.stats.dropped_queue_full += 1
                self._warn_dropped_oldest()
            queue.append(upload)
            self._cond.notify()

    def _warn_dropped_oldest(self) -> None:
        self._log(
            "queue-full",
            logging.WARNING,
            "upload queue full (%d): dropped the oldest profile, %d dropped so far",
            self._max_queued,
            self.stats.dropped_queue_full,
        )

    def pending(self) -> int:
        """Uploads not delivered yet: queued, plus the one being sent."""
        with self._cond:
            return len(self._state.queue) + (self._state.in_flight is not None)

    def close(self, timeout: float) -> bool:
        """Delivers the queue, waiting at most ``timeout`` seconds; True if nothing was lost."""
        with self._cond:
            self._state.closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            with self._cond:
                left = len(self._state.queue) + (self._state.in_flight is not None)
                self._state.queue.clear()
                self.stats.dropped_at_shutdown += left
            logger.warning(
                "shutdown timed out after %.1fs: %d profile upload(s) lost", timeout, left
            )
            return False
        return not self._lost_any()

    def _lost_any(self) -> bool:
        s = self.stats
        return bool(
            s.dropped_queue_full
            + s.dropped_rejected
            + s.dropped_retries_exhausted
            + s.dropped_at_shutdown
        )

    def _next(self) -> Upload | None:
        """Takes the oldest upload out of the queue (it is then in flight), or None when closed."""
        with self._cond:
            while not self._state.queue and not self._state.closing:
                self._cond.wait()
            if not self._state.queue:
                return None
            self._state.in_flight = self._state.queue.popleft()
            return self._state.in_flight

    def _done(self) -> None:
        with self._cond:
            self._state.in_flight = None

    def _requeue(self, upload: Upload) -> bool:
        """Puts a failed upload back at the head, unless newer ones filled the queue meanwhile
        (then it is the oldest and is dropped)."""
        with self._cond:
            self._state.in_flight = None
            if len(self._state.queue) >= self._max_queued:
                self.stats.dropped_queue_full += 1
                return False
            self._state.queue.appendleft(upload)
            return True

    def _run(self) -> None:
        while not self._abandon.is_set():
            upload = self._next()
            if upload is None:
                return
            upload.attempts += 1
            try:
                self._send(upload, self._headers, self._timeout)
            except UploadError as error:
                self._failed(upload, error)
            except Exception:  # a bug must not kill the thread and silently stop uploads
                logger.exception("unexpected error while uploading a profile; dropped it")
                self._done()
                self.stats.dropped_rejected += 1
            else:
                self._succeeded()
            self.stats.uploader_cpu_ms = round(time.thread_time() * 1000)

    def _succeeded(self) -> None:
        self._done()
        self.stats.sent += 1
        if self._state.consecutive_failures:
            logger.info(
                "profile uploads work again after %d failed attempt(s)",
                self._state.consecutive_failures,
            )
        self._state.consecutive_failures = 0

    def _failed(self, upload: Upload, error: UploadError) -> None:
        self.stats.failed_attempts += 1
        if not error.retryable:
            self._done()
            self.stats.dropped_rejected += 1
            self._log("rejected", logging.ERROR, "profile upload refused, dropped: %s", error)
            return
        if upload.attempts >= self._retry.max_attempts:
            self._done()
            self.stats.dropped_retries_exhausted += 1
            self._log(
                "exhausted",
                logging.WARNING,
                "profile upload dropped after %d attempts: %s",
                upload.attempts,
                error,
            )
            return
        self._state.consecutive_failures += 1
        if not self._requeue(upload):
            self._warn_dropped_oldest()
        delay = self._retry.delay(self._state.consecutive_failures)
        self._log(
            "retrying",
            logging.WARNING,
            "profile upload failed (%s); retrying in %.1fs",
            error,
            delay,
        )
        self._abandon.wait(delay)
