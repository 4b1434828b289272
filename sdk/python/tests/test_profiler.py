"""The public API end to end against a local fake server: configure, tags, uploads, shutdown."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import kiln

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@pytest.fixture(autouse=True)
def _each_sampler(sampler_kind, monkeypatch):
    """Every test here runs with each sampler, chosen through the environment so the scripts
    these tests start use it too."""
    monkeypatch.setenv("KILN_SAMPLER", sampler_kind)
    yield


def busy_hashing(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    digest = b"x"
    while time.monotonic() < deadline:
        digest = hashlib.sha256(digest).digest()


def stacks_with(received, function: str) -> int:
    """Samples whose stack has a frame of ``function`` (plain or qualified name), across uploads."""
    frame = re.compile(rf"(^|;|\.){re.escape(function)} \(")
    return sum(
        count for r in received for stack, count in r.folded().items() if frame.search(stack)
    )


def test_uploads_carry_the_wire_parameters_headers_and_stacks(server):
    kiln.configure(
        application_name="unit-app",
        server_address=server.url + "/",
        auth_token="t0ken",
        tags={"env": "test"},
        upload_interval=0.3,
    )
    before = time.time()
    busy_hashing(0.5)
    assert kiln.shutdown(timeout=5) is True
    after = time.time()
    received = server.wait_for(1)
    for r in received:
        assert r.path == "/ingest"
        assert r.query["name"] == "unit-app.cpu{env=test}"
        assert r.query["format"] == "folded"
        assert r.query["sampleRate"] == "100"
        assert r.query["spyName"] == "pyspy"
        assert int(before) - 1 <= int(r.query["from"]) <= int(r.query["until"]) <= after + 1
        assert r.headers["Authorization"] == "Bearer t0ken"
        assert r.headers["Content-Type"].startswith("text/plain")
    # at least two intervals went out, one of them at shutdown
    assert len(received) >= 2
    # ~50 samples of CPU; the GIL is shared with the sampler, so allow a wide margin
    assert stacks_with(received, "busy_hashing") >= 20
    stats = kiln.stats()
    assert stats["sent"] == len(received)
    assert stats["samples"] >= 20
    assert stats["sampler_cpu_ms"] > 0 and stats["uploader_cpu_ms"] > 0  # measured, not guessed


def test_one_request_per_tag_set_with_dynamic_tags_over_static(server):
    kiln.configure(
        application_name="unit-app",
        server_address=server.url,
        tags={"env": "test", "role": "static"},
        upload_interval=60,
    )
    with kiln.tag_wrapper({"role": "dynamic", "step": "one"}):
        busy_hashing(0.3)
    busy_hashing(0.3)
    assert kiln.shutdown(timeout=5) is True
    by_name = {r.query["name"]: r for r in server.wait_for(2)}
    assert set(by_name) == {
        "unit-app.cpu{env=test,role=dynamic,step=one}",
        "unit-app.cpu{env=test,role=static}",
    }
    for r in by_name.values():
        assert stacks_with([r], "busy_hashing") >= 10


def test_other_threads_are_sampled_with_their_own_tags(server):
    kiln.configure(application_name="unit-app", server_address=server.url, upload_interval=60)

    def worker():
        with kiln.tag_wrapper({"thread": "worker"}):
            busy_hashing(0.4)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert kiln.shutdown(timeout=5) is True
    names = {r.query["name"]: r for r in server.wait_for(1)}
    worker_upload = names["unit-app.cpu{thread=worker}"]
    assert stacks_with([worker_upload], "worker") >= 10
    # the SDK's own threads never appear
    assert not any("kiln/_profiler.py" in s for r in server.received for s in r.folded())


def test_wall_mode_uses_the_wall_profile_type_and_counts_sleeping(server):
    kiln.configure(
        application_name="unit-app", server_address=server.url, mode="wall", upload_interval=60
    )
    time.sleep(0.3)
    assert kiln.shutdown(timeout=5) is True
    (upload,) = server.wait_for(1)
    assert upload.query["name"] == "unit-app.wall{}"
    # the test itself was sleeping in this function
    assert (
        stacks_with([upload], "test_wall_mode_uses_the_wall_profile_type_and_counts_sleeping") >= 15
    )


def test_shutdown_without_server_returns_false_within_the_timeout(closed_port_url):
    kiln.configure(
        application_name="unit-app",
        server_address=closed_port_url,
        upload_interval=60,
        retry_initial_delay=5,
    )
    busy_hashing(0.1)
    started = time.monotonic()
    assert kiln.shutdown(timeout=0.5) is False
    assert time.monotonic() - started < 2
    assert kiln.stats()["dropped_at_shutdown"] >= 1


def test_reconfigure_flushes_the_previous_configuration(server):
    kiln.configure(application_name="first", server_address=server.url, upload_interval=60)
    busy_hashing(0.2)
    kiln.configure(application_name="second", server_address=server.url, upload_interval=60)
    busy_hashing(0.2)
    assert kiln.shutdown() is True
    names = [r.query["name"] for r in server.wait_for(2)]
    assert names == ["first.cpu{}", "second.cpu{}"]


def test_shutdown_is_harmless_when_not_running():
    assert kiln.is_running() is False
    assert kiln.shutdown() is True


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"application_name": "bad name"}, "application_name"),
        ({"server_address": "127.0.0.1:4040"}, "server_address"),
        ({"tags": {"k": "a,b"}}, "cannot contain"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"sample_rate": 100.5}, "sample_rate"),
        ({"upload_interval": 0}, "upload_interval"),
        ({"mode": "gpu"}, "mode"),
        ({"max_queued_uploads": 0}, "max_queued_uploads"),
        ({"auth_token": "a", "basic_auth": ("u", "p")}, "not both"),
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"client_cert_file": "/nonexistent/client.pem"}, "together"),
        ({"client_cert_file": "/nonexistent/c.pem", "client_key_file": "/x.key"}, "do not load"),
    ],
)
def test_configure_refuses_bad_options_and_starts_nothing(options, message):
    args = {"application_name": "app", "server_address": "http://127.0.0.1:1", **options}
    with pytest.raises(ValueError, match=message):
        kiln.configure(**args)
    assert kiln.is_running() is False


def test_basic_auth_tenant_and_extra_headers(server):
    kiln.configure(
        application_name="unit-app",
        server_address=server.url,
        basic_auth=("user", "pa:ss"),
        tenant_id="team-a",
        http_headers={"X-Trace": "1"},
        upload_interval=60,
    )
    busy_hashing(0.1)
    kiln.shutdown()
    (upload,) = server.wait_for(1)
    assert upload.headers["Authorization"] == "Basic dXNlcjpwYTpzcw=="
    assert upload.headers["X-Scope-OrgID"] == "team-a"
    assert upload.headers["X-Trace"] == "1"


def run_script(body: str, server_url: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        f"""
        import hashlib, os, sys, time
        sys.path.insert(0, {SRC!r})
        import kiln
        def spin(seconds):
            end = time.monotonic() + seconds
            d = b"x"
            while time.monotonic() < end:
                d = hashlib.sha256(d).digest()
        kiln.configure(application_name="script", server_address={server_url!r},
                       upload_interval=60)
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )


def test_interpreter_exit_flushes_without_an_explicit_shutdown(server):
    result = run_script("spin(0.3)\n", server.url)
    assert result.returncode == 0, result.stderr
    (upload,) = server.wait_for(1)
    assert upload.query["name"] == "script.cpu{}"
    assert stacks_with([upload], "spin") >= 10


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork exists on POSIX only")
def test_a_forked_child_is_profiled_too(server):
    body = """
    pid = os.fork()
    if pid == 0:
        with kiln.tag_wrapper({"process": "child"}):
            spin(0.3)
        kiln.shutdown()
        os._exit(0)
    spin(0.1)
    os.waitpid(pid, 0)
    """
    result = run_script(body, server.url)
    assert result.returncode == 0, result.stderr
    names = sorted(r.query["name"] for r in server.wait_for(2))
    assert names == ["script.cpu{process=child}", "script.cpu{}"]
