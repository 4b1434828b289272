"""End to end over TLS: the daemon serves HTTPS with a throwaway CA and requires client
certificates (mutual TLS). The example app pushing with ``ca_file`` and a client certificate is
stored; the same push trusting another CA is refused by the SDK's certificate check, logged,
and stores nothing, and the app still exits normally.

Runs only with KILN_E2E=1, like test_e2e.py; certificates come from scripts/lib/daemon.sh
(the openssl command line tool).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlencode

import pytest
from test_e2e import APP, REPO, create_key, free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("KILN_E2E") != "1",
    reason="end-to-end test against the real daemon: set KILN_E2E=1 (sdk/python/ci-test.sh does)",
)


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    """Yields (base URL, certificate directory, reader key) of a daemon with TLS and auth on."""
    binary = pathlib.Path(os.environ.get("KILN_BIN") or REPO / "target" / "debug" / "kiln")
    if not binary.is_file():
        pytest.fail(f"daemon binary {binary} not found: build it with `cargo build -p kiln`")
    certs = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", "-c", '. "$1/scripts/lib/daemon.sh" && make_test_certs "$2"', "-", REPO, certs],
        check=True,
    )  # fmt: skip
    storage = tmp_path_factory.mktemp("kiln-tls-storage")
    writer = create_key(binary, storage, "writer")
    reader = create_key(binary, storage, "reader")
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    env = {**os.environ, "KILN_AUTH_ENABLED": "true", "KILN_ADMIN_PASSWORD": uuid.uuid4().hex}
    log_path = storage.parent / "kiln-tls.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "server", "--listen", f"127.0.0.1:{port}", "--storage-path",
             str(storage), "--self-profiling", "false", "--config", "/dev/null",
             "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file",
             str(certs / "server.key"), "--tls-client-ca-file", str(certs / "ca.pem")],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"daemon exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                render(base, certs, reader, "none.cpu{}")
                break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"daemon not ready on {base} after 30s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base, certs, writer, reader
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def render(base: str, certs: pathlib.Path, reader: str, query: str) -> int:
    """numTicks of QUERY over the last 5 minutes, read over mutual TLS."""
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
    params = urlencode({"query": query, "from": "now-5m", "until": "now+1m"})
    request = urllib.request.Request(f"{base}/render?{params}")
    request.add_header("Authorization", f"Bearer {reader}")
    with urllib.request.urlopen(request, timeout=5, context=context) as response:
        return json.load(response)["flamebearer"]["numTicks"]


def run_app(base: str, certs: pathlib.Path, writer: str, ca: str, run_id: str):
    return subprocess.run(
        [sys.executable, str(APP), "--server", base, "--duration", "4", "--upload-interval", "1",
         "--tag", f"run={run_id}", "--auth-token", writer, "--ca-file", str(certs / ca),
         "--client-cert", str(certs / "client.pem"), "--client-key", str(certs / "client.key")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_push_with_ca_file_and_client_certificate_is_stored(tls_daemon):
    base, certs, writer, reader = tls_daemon
    run_id = uuid.uuid4().hex[:12]
    result = run_app(base, certs, writer, "ca.pem", run_id)
    assert result.returncode == 0, f"example failed:\n{result.stdout}\n{result.stderr}"
    assert render(base, certs, reader, f'python-app.cpu{{run="{run_id}"}}') > 0, result.stderr


def test_push_trusting_another_ca_is_refused_and_reported(tls_daemon):
    base, certs, writer, reader = tls_daemon
    run_id = uuid.uuid4().hex[:12]
    result = run_app(base, certs, writer, "other-ca.pem", run_id)
    assert result.returncode == 0, f"example crashed:\n{result.stdout}\n{result.stderr}"
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr, result.stderr
    assert render(base, certs, reader, f'python-app.cpu{{run="{run_id}"}}') == 0
