"""Fixtures: the repository's real folded profile, and the generated bindings."""

import shutil
import subprocess
from pathlib import Path

import pytest

from profiles import TESTDATA, WIT, folded_profile
from topn import ProfileData


@pytest.fixture
def collapsed() -> ProfileData:
    text = (TESTDATA / "collapsed.txt").read_text()
    return folded_profile(text, [("service_name", "pyapp"), ("env", "ci"), ("az", "b")])


@pytest.fixture(scope="session")
def bindings(tmp_path_factory) -> Path:
    """Python bindings of the `sink` world, generated the way build.sh does."""
    tool = shutil.which("componentize-py")
    if tool is None:
        pytest.fail(
            "componentize-py is not installed: python3 -m pip install componentize-py==0.25.1"
        )
    out = tmp_path_factory.mktemp("bindings")
    subprocess.run([tool, "-d", str(WIT), "-w", "sink", "bindings", str(out)], check=True)
    return out
