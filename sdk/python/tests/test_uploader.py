"""Delivery: headers, retries with backoff, the drop-oldest bound, flushing on close."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from kiln._uploader import RetryPolicy, Upload, Uploader, UploadError

FAST_RETRY = RetryPolicy(initial_delay=0.05, max_delay=0.2, max_attempts=8)


def make_upload(base_url: str, tag: str) -> Upload:
    return Upload(f"{base_url}/ingest?name=app.cpu%7Bt%3D{tag}%7D", f"main;{tag} 1\n".encode())


def test_posts_body_and_headers(server):
    uploader = Uploader({"Authorization": "Bearer s3cret", "X-Extra": "1"}, retry=FAST_RETRY)
    uploader.start()
    uploader.submit(make_upload(server.url, "a"))
    (got,) = server.wait_for(1)
    assert got.path == "/ingest"
    assert got.query == {"name": "app.cpu{t=a}"}
    assert got.headers["Authorization"] == "Bearer s3cret"
    assert got.headers["X-Extra"] == "1"
    assert got.body == "main;a 1\n"
    assert uploader.close(2) is True
    assert uploader.stats.sent == 1


def test_retries_server_errors_with_growing_capped_delays(server):
    server.statuses = [503, 500, 429, 503, 502]
    uploader = Uploader({}, retry=FAST_RETRY)
    uploader.start()
    uploader.submit(make_upload(server.url, "a"))
    received = server.wait_for(6)
    assert uploader.close(2) is True
    assert [r.body for r in received] == ["main;a 1\n"] * 6
    gaps = [b.at - a.at for a, b in zip(received, received[1:])]
    # ceilings 0.05, 0.1, 0.2 (capped), 0.2, 0.2; each wait is between half and all of it
    for gap, ceiling in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2]):
        assert ceiling / 2 - 0.01 <= gap <= ceiling + 0.15, gaps
    assert uploader.stats.failed_attempts == 5
    assert uploader.stats.sent == 1


def test_backoff_policy_doubles_up_to_the_cap():
    policy = RetryPolicy(initial_delay=1.0, max_delay=30.0)
    for failures, ceiling in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (60, 30)]:
        for _ in range(20):
            assert ceiling / 2 <= policy.delay(failures) <= ceiling


def test_client_errors_are_dropped_without_retry_and_logged(server, caplog):
    server.statuses = [400]
    uploader = Uploader({}, retry=FAST_RETRY)
    uploader.start()
    with caplog.at_level(logging.WARNING, logger="kiln"):
        uploader.submit(make_upload(server.url, "bad"))
        uploader.submit(make_upload(server.url, "good"))
        received = server.wait_for(2)
        assert uploader.close(2) is False  # one profile was lost
    assert [r.body for r in received] == ["main;bad 1\n", "main;good 1\n"]
    assert uploader.stats.dropped_rejected == 1
    assert "400" in caplog.text and "refused by the test server" in caplog.text


def test_gives_up_after_max_attempts(closed_port_url, caplog):
    uploader = Uploader({}, retry=RetryPolicy(0.01, 0.02, max_attempts=3))
    uploader.start()
    with caplog.at_level(logging.WARNING, logger="kiln"):
        uploader.submit(make_upload(closed_port_url, "a"))
        assert uploader.close(3) is False
    assert uploader.stats.failed_attempts == 3
    assert uploader.stats.dropped_retries_exhausted == 1
    assert "cannot reach the server" in caplog.text


def test_queue_drops_the_oldest_when_full_and_logs_it(caplog):
    release = threading.Event()
    sent: list[bytes] = []

    def blocked_send(upload, headers, timeout):
        release.wait(5)
        sent.append(upload.body)

    uploader = Uploader({}, max_queued=3, send=blocked_send, retry=FAST_RETRY)
    uploader.start()
    with caplog.at_level(logging.WARNING, logger="kiln"):
        for i in range(8):
            uploader.submit(Upload("http://unused", str(i).encode()))
            time.sleep(0.01)  # let the upload thread take the first one
        assert uploader.pending() == 4  # three queued, one in flight
        release.set()
        assert uploader.close(3) is False
    # "0" was in flight, 1..4 were pushed out by newer ones, the three newest were kept
    assert sent == [b"0", b"5", b"6", b"7"]
    assert uploader.stats.dropped_queue_full == 4
    assert "upload queue full" in caplog.text and "dropped" in caplog.text
    # repeated drops within a minute are logged once at warning level
    assert caplog.text.count("upload queue full") == 1


def test_memory_stays_bounded_while_the_server_is_down(closed_port_url):
    uploader = Uploader({}, max_queued=5, retry=RetryPolicy(0.5, 1.0, max_attempts=100))
    uploader.start()
    for i in range(200):
        uploader.submit(make_upload(closed_port_url, str(i)))
    # At most `max_queued` wait besides the one being sent (the worker may hold one, retrying).
    assert uploader.pending() <= 5 + 1
    assert uploader.stats.dropped_queue_full >= 200 - (5 + 1)
    assert uploader.close(0.2) is False


def test_close_flushes_everything_queued(server):
    uploader = Uploader({}, retry=FAST_RETRY)
    uploader.start()
    for i in range(10):
        uploader.submit(make_upload(server.url, str(i)))
    assert uploader.close(5) is True
    assert sorted(r.body for r in server.received) == sorted(f"main;{i} 1\n" for i in range(10))
    uploader.submit(make_upload(server.url, "late"))
    assert uploader.stats.dropped_at_shutdown == 1


def test_close_gives_up_at_its_timeout(closed_port_url, caplog):
    uploader = Uploader({}, retry=RetryPolicy(5.0, 10.0, max_attempts=100))
    uploader.start()
    uploader.submit(make_upload(closed_port_url, "a"))
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="kiln"):
        assert uploader.close(0.3) is False
    assert time.monotonic() - started < 2
    assert uploader.stats.dropped_at_shutdown == 1
    assert "shutdown timed out" in caplog.text


def test_an_unexpected_error_does_not_stop_the_upload_thread(caplog):
    calls = []

    def flaky_send(upload, headers, timeout):
        calls.append(upload.body)
        if upload.body == b"1":
            raise KeyError("bug")
        if upload.body == b"2":
            raise UploadError("refused", retryable=False)

    uploader = Uploader({}, send=flaky_send, retry=FAST_RETRY)
    uploader.start()
    with caplog.at_level(logging.ERROR, logger="kiln"):
        for body in (b"1", b"2", b"3"):
            uploader.submit(Upload("http://unused", body))
        uploader.close(2)
    assert calls == [b"1", b"2", b"3"]
    assert uploader.stats.sent == 1


def test_queue_size_is_checked():
    with pytest.raises(ValueError):
        Uploader({}, max_queued=0)
