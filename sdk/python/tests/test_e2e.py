"""End to end: the example app profiled into the real daemon (auth on: it pushes with a writer
key), read back over the query API with a reader key; the same push without a key gets 401.

Runs only with KILN_E2E=1 (``sdk/python/ci-test.sh`` sets it); then the daemon binary is taken
from KILN_BIN (or ``target/debug/kiln`` of the repository) and every problem starting or
reaching it fails the test.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlencode

import pytest
from conftest import native_or_skip

pytestmark = pytest.mark.skipif(
    os.environ.get("KILN_E2E") != "1",
    reason="end-to-end test against the real daemon: set KILN_E2E=1 (sdk/python/ci-test.sh does)",
)

REPO = pathlib.Path(__file__).resolve().parents[3]
APP = REPO / "examples" / "python-app" / "app.py"
RUN_SECONDS = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The API keys of the daemon under test: (writer, reader), set by the `daemon` fixture.
KEYS: dict[str, str] = {}


def get(url: str, timeout: float = 5.0):
    request = urllib.request.Request(url)
    if KEYS.get("reader"):
        request.add_header("Authorization", f"Bearer {KEYS['reader']}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read()


def create_key(binary: pathlib.Path, storage: pathlib.Path, role: str) -> str:
    out = subprocess.run(
        [str(binary), "admin", "apikey", "create", "--name", f"e2e-{role}", "--role", role,
         "--config", "/dev/null", "--storage-path", str(storage)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def get_json(base: str, path: str, **params: str):
    status, body = get(f"{base}{path}?{urlencode(params)}")
    assert status == 200, (path, params, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    binary = pathlib.Path(os.environ.get("KILN_BIN") or REPO / "target" / "debug" / "kiln")
    if not binary.is_file():
        pytest.fail(f"daemon binary {binary} not found: build it with `cargo build -p kiln`")
    storage = tmp_path_factory.mktemp("kiln-storage")
    log_path = storage.parent / "kiln.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    KEYS["writer"] = create_key(binary, storage, "writer")
    KEYS["reader"] = create_key(binary, storage, "reader")
    env = {**os.environ, "KILN_AUTH_ENABLED": "true", "KILN_ADMIN_PASSWORD": uuid.uuid4().hex}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "server", "--listen", f"127.0.0.1:{port}", "--storage-path",
             str(storage), "--self-profiling", "false", "--config", "/dev/null"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"daemon exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if get(f"{base}/healthz", timeout=1)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"daemon not ready on {base} after 30s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module", params=["native", "python"])
def profiled_run(daemon, request):
    """Runs the example for RUN_SECONDS with a unique tag, with each sampler (the native one
    must load: ``sdk/python/ci-test.sh`` builds it); returns (daemon URL, tag value)."""
    if request.param == "native":
        native_or_skip()
    run_id = uuid.uuid4().hex[:12]
    result = subprocess.run(
        [sys.executable, str(APP), "--server", daemon, "--duration", str(RUN_SECONDS),
         "--upload-interval", "2", "--tag", f"run={run_id}", "--auth-token", KEYS["writer"],
         "--print-stats"],
        capture_output=True, text=True, timeout=RUN_SECONDS + 60, check=False,
        env={**os.environ, "KILN_SAMPLER": request.param},
    )  # fmt: skip
    assert result.returncode == 0, f"example failed:\n{result.stdout}\n{result.stderr}"
    assert "some profiles were not delivered" not in result.stderr, result.stderr
    stats = json.loads(result.stdout.split("kiln stats: ", 1)[1].splitlines()[0])
    assert stats["native_sampler"] == (request.param == "native"), stats
    assert stats["sampling_errors"] == 0, stats
    return daemon, run_id


def render(base: str, query: str) -> dict:
    return get_json(base, "/render", query=query, format="json", **{"from": "now-5m"}, until="now")


def test_hot_function_is_in_the_flamegraph_of_its_tag(profiled_run):
    base, run_id = profiled_run
    hashing = render(base, f'python-app.cpu{{run="{run_id}",workload="hash"}}')
    names = hashing["flamebearer"]["names"]
    assert any(name.startswith("hash_loop (app.py:") for name in names), names
    assert not any(name.startswith("alloc_loop (") for name in names), names
    assert hashing["metadata"]["spyName"] == "pyspy"
    assert hashing["metadata"]["sampleRate"] == 100

    allocating = render(base, f'python-app.cpu{{run="{run_id}",workload="alloc"}}')
    assert any(n.startswith("alloc_loop (app.py:") for n in allocating["flamebearer"]["names"])


def test_sample_counts_match_one_busy_thread(profiled_run):
    base, run_id = profiled_run
    whole = render(base, f'python-app.cpu{{run="{run_id}"}}')
    ticks = whole["flamebearer"]["numTicks"]
    # CPU mode: one busy thread at 100 Hz gives at most ~100 samples a second (the idle waiter
    # thread adds none); on a loaded machine it gets less CPU, so the floor is generous.
    assert RUN_SECONDS * 100 * 0.25 <= ticks <= (RUN_SECONDS + 1) * 100, ticks
    top = {f["name"]: f for f in whole["functions"]}
    hash_frames = [name for name in top if name.startswith("hash_loop (")]
    assert hash_frames, sorted(top)
    assert not any(name.startswith("background_waiter (") for name in top), sorted(top)


def test_tag_values_are_listed(profiled_run):
    base, run_id = profiled_run
    assert run_id in get_json(base, "/label-values", label="run")
    workloads = get_json(base, "/label-values", label="workload", query="python-app.cpu")
    assert {"hash", "alloc"} <= set(workloads), workloads
    apps = {app["name"]: app for app in get_json(base, "/api/apps")}
    assert apps["python-app.cpu"]["spyName"] == "pyspy"


def unauthenticated(base: str) -> float:
    """The daemon's count of requests refused for want of a credential."""
    _, body = get(f"{base}/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.decode().splitlines()
        if line.startswith("kiln_auth_refused_total{") and 'cause="unauthenticated"' in line
    )


def test_the_same_push_without_a_key_gets_401(profiled_run):
    base, _ = profiled_run
    before = unauthenticated(base)
    result = subprocess.run(
        [sys.executable, str(APP), "--server", base, "--duration", "3",
         "--upload-interval", "1", "--tag", "run=nokey"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert unauthenticated(base) > before, result.stderr
    assert "nokey" not in get_json(base, "/label-values", label="run")
