"""Frames, stacks and the folded text sent to the server."""

from __future__ import annotations

import os
import sys
import sysconfig

from kiln._frames import FrameFormatter, PathShortener
from kiln._profiler import encode_folded


def test_folded_lines_are_stack_space_count_sorted_and_skip_zero():
    body = encode_folded({"main;b": 3, "main;a (x.py:1)": 12, "idle": 0})
    assert body == b"main;a (x.py:1) 12\nmain;b 3\n"
    assert encode_folded({}) == b""


def test_folded_body_is_utf8():
    assert encode_folded({"caf\u00e9 (m.py:1)": 1}) == "caf\u00e9 (m.py:1) 1\n".encode()


def _outer(formatter):
    return _inner(formatter)


def _inner(formatter):
    return formatter.stack(sys._getframe())


class Worker:
    def run(self, formatter):
        return formatter.frame(sys._getframe())


def test_stack_is_root_first_and_names_the_functions():
    stack = _outer(FrameFormatter())
    frames = stack.split(";")
    assert frames[-1].startswith("_inner (")
    assert frames[-2].startswith("_outer (")
    assert frames[-3].startswith("test_stack_is_root_first_and_names_the_functions (")
    # the test file is named relative to its sys.path entry, with the def line of each function
    def_line = _inner.__code__.co_firstlineno
    assert frames[-1] == f"_inner (test_folded.py:{def_line})"


def test_line_numbers_mode_uses_the_running_line():
    formatter = FrameFormatter(line_numbers=True)
    frame = sys._getframe()
    line = frame.f_lineno + 1
    text = formatter.frame(sys._getframe())
    assert text == f"test_line_numbers_mode_uses_the_running_line (test_folded.py:{line})"


def test_methods_are_qualified_where_python_knows_the_class():
    text = Worker().run(FrameFormatter())
    expected = "Worker.run" if sys.version_info >= (3, 11) else "run"
    assert text.startswith(expected + " (test_folded.py:")


def test_separators_inside_names_are_replaced():
    namespace = {}
    code = compile(
        "import sys\ndef f(fmt):\n    return fmt.frame(sys._getframe())\n", "a;b\nc.py", "exec"
    )
    exec(code, namespace)
    text = namespace["f"](FrameFormatter())
    assert ";" not in text and "\n" not in text
    assert text == "f (a,b c.py:2)"


def test_paths_are_shortened_by_the_longest_sys_path_entry():
    shortener = PathShortener()
    stdlib = sysconfig.get_paths()["stdlib"]
    assert shortener.shorten(os.path.join(stdlib, "threading.py")) == "threading.py"
    assert shortener.shorten(os.path.join(stdlib, "json", "decoder.py")) == os.path.join(
        "json", "decoder.py"
    )
    outside = os.path.join(os.sep, "nowhere-on-sys-path", "x.py")
    assert shortener.shorten(outside) == outside
    assert shortener.shorten("<frozen importlib._bootstrap>") == "<frozen importlib._bootstrap>"
