"""Shared fixtures: a local HTTP server standing in for the daemon's ``/ingest``."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

import kiln


@dataclass
class Received:
    path: str
    query: dict[str, str]
    headers: Message  # case-insensitive, as HTTP headers are
    body: str
    at: float  # time.monotonic() when received

    def folded(self) -> dict[str, int]:
        """The body parsed back: stack -> count."""
        stacks = {}
        for line in self.body.splitlines():
            stack, _, count = line.rpartition(" ")
            stacks[stack] = stacks.get(stack, 0) + int(count)
        return stacks


class FakeIngestServer:
    """Records every POST; answers with the queued statuses first, then 200."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.statuses: list[int] = []
        self._cond = threading.Condition()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode("utf-8")
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                with server._cond:
                    status = server.statuses.pop(0) if server.statuses else 200
                    server.received.append(
                        Received(parts.path, query, self.headers, body, time.monotonic())
                    )
                    server._cond.notify_all()
                message = b"" if status == 200 else b"refused by the test server"
                self.send_response(status)
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Waits until at least ``count`` requests arrived; fails the test otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"expected {count} upload(s) within {timeout}s, got {len(self.received)}"
                    )
                self._cond.wait(left)
            return list(self.received)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server():
    fake = FakeIngestServer()
    yield fake
    fake.close()


@pytest.fixture
def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(autouse=True)
def _no_profiler_left_running():
    yield
    kiln.shutdown(timeout=2)


def native_or_skip() -> None:
    """Skips the calling test when the ``_kiln_native`` extension is not importable, unless
    ``KILN_NATIVE_REQUIRED=1`` (``sdk/python/ci-test.sh`` builds the extension and sets it):
    then its absence fails the test."""
    from kiln._sampling import load_native

    try:
        load_native()
    except ImportError as error:
        if os.environ.get("KILN_NATIVE_REQUIRED") == "1":
            pytest.fail(f"the native sampler is required but does not load: {error}")
        pytest.skip(f"native sampler not built ({error}); sdk/python/ci-test.sh builds it")


@pytest.fixture(params=["python", "native"])
def sampler_kind(request) -> str:
    """Runs a test once per sampler."""
    if request.param == "native":
        native_or_skip()
    return request.param
