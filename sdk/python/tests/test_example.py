"""The example app runs against a fake server and sends its tagged hot paths."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

APP = pathlib.Path(__file__).resolve().parents[3] / "examples" / "python-app" / "app.py"


def test_example_sends_hash_and_alloc_paths_under_their_tags(server, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(APP),
            "--server",
            server.url,
            "--rounds",
            "30",
            "--tag",
            "env=unit",
            "--upload-interval",
            "60",
        ],
        cwd=tmp_path,  # the app finds the SDK from its own location, not the working directory
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert re.match(r"30 rounds in \d+\.\ds", result.stdout)
    by_name = {r.query["name"]: r.folded() for r in server.wait_for(2)}
    hash_stacks = by_name["python-app.cpu{env=unit,workload=hash}"]
    alloc_stacks = by_name["python-app.cpu{env=unit,workload=alloc}"]
    assert any(stack.split(";")[-1].startswith("hash_loop (app.py:") for stack in hash_stacks)
    assert any(";alloc_loop (app.py:" in stack for stack in alloc_stacks)
    assert not any("alloc_loop" in stack for stack in hash_stacks)
