"""Turning a thread's Python frames into a folded stack, root first.

A frame reads ``function (path/file.py:LINE)``: the function name comes first so it stays
visible in a narrow flamegraph box and is what a search finds; the file tells same-named
functions apart. ``LINE`` is the function's ``def`` line by default, so one function is one node
however many of its lines were sampled; with ``line_numbers=True`` it is the line that was
running, and each sampled line becomes its own node. The path is shortened to what follows the
longest matching ``sys.path`` entry (``threading.py``, ``mypkg/db.py``), as an import would name it.
On Python 3.11+ the function name is qualified (``Worker.run``).
"""

from __future__ import annotations

import os
import sys
from types import CodeType, FrameType

# Enough for every function of a large application; cleared when exceeded so code objects of
# dynamically generated functions are not kept alive for ever.
_CACHE_LIMIT = 50_000


def _sanitize(text: str) -> str:
    """Frames are separated by ';' and stacks by newlines: neither may appear inside a frame."""
    if ";" in text or "\n" in text or "\r" in text:
        return text.replace(";", ",").replace("\n", " ").replace("\r", " ")
    return text


class PathShortener:
    """Strips the longest ``sys.path`` prefix from a file name."""

    def __init__(self) -> None:
        self._seen_path: tuple[str, ...] | None = None
        self._prefixes: list[str] = []

    def _refresh(self) -> None:
        current = tuple(p for p in sys.path if isinstance(p, str))
        if current == self._seen_path:
            return
        self._seen_path = current
        prefixes = set()
        for entry in current:
            try:
                absolute = os.path.abspath(entry or os.curdir)
            except OSError:  # the working directory was removed
                continue
            if os.path.dirname(absolute) == absolute:
                continue  # the filesystem root: stripping it only hides that a path is absolute
            prefixes.add(absolute.rstrip(os.sep) + os.sep)
        self._prefixes = sorted(prefixes, key=len, reverse=True)

    def shorten(self, filename: str) -> str:
        self._refresh()
        for prefix in self._prefixes:
            if filename.startswith(prefix) and len(filename) > len(prefix):
                return filename[len(prefix) :]
        return filename


class FrameFormatter:
    """Formats frames and whole stacks, caching the text of each code object (or code and line)."""

    def __init__(self, line_numbers: bool = False) -> None:
        self.line_numbers = line_numbers
        self._paths = PathShortener()
        self._cache: dict[CodeType | tuple[CodeType, int], str] = {}
        # id(code) -> (code, text): looked up per frame and sample. Keyed by id because hashing
        # a code object hashes its bytecode and constants every time; the code object is kept
        # in the value so that its id is not reused while the entry exists.
        self._by_id: dict[int, tuple[CodeType, str]] = {}
        # tuple of id(code), leaf first -> folded stack; valid while ``_by_id`` keeps those
        # code objects alive, so both are cleared together.
        self._stacks: dict[tuple[int, ...], str] = {}

    def _text(self, code: CodeType, line: int) -> str:
        name = getattr(code, "co_qualname", code.co_name)
        path = self._paths.shorten(code.co_filename)
        return _sanitize(f"{name} ({path}:{line})")

    def code_text(self, code: CodeType, line: int) -> str:
        """The text of a frame running ``code``: at ``line`` with ``line_numbers``, else at the
        function's ``def`` line (``line`` is then ignored). Not cached (the caller caches)."""
        return self._text(code, line if self.line_numbers else code.co_firstlineno)

    def frame(self, frame: FrameType) -> str:
        code = frame.f_code
        key: CodeType | tuple[CodeType, int]
        if self.line_numbers:
            line = frame.f_lineno or 0
            key = (code, line)
        else:
            line = code.co_firstlineno
            key = code
        text = self._cache.get(key)
        if text is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            text = self._cache[key] = self._text(code, line)
        return text

    def stack(self, leaf: FrameType) -> str:
        """The folded stack ``root;...;leaf`` ending at ``leaf``."""
        if self.line_numbers:
            names = []
            frame: FrameType | None = leaf
            while frame is not None:
                names.append(self.frame(frame))
                frame = frame.f_back
            names.reverse()
            return ";".join(names)
        # Called for every sample: walk the frames collecting code ids only, and format a
        # stack once per distinct stack rather than once per sample.
        ids = []
        frame = leaf
        while frame is not None:
            ids.append(id(frame.f_code))
            frame = frame.f_back
        key = tuple(ids)
        text = self._stacks.get(key)
        if text is None:
            text = self._format(leaf)
        return text

    def _format(self, leaf: FrameType) -> str:
        if len(self._by_id) >= _CACHE_LIMIT or len(self._stacks) >= _CACHE_LIMIT:
            self._by_id.clear()
            self._stacks.clear()
        names = []
        ids = []
        frame: FrameType | None = leaf
        while frame is not None:
            code = frame.f_code
            entry = self._by_id.get(id(code))
            if entry is None:
                entry = self._by_id[id(code)] = (code, self.frame(frame))
            names.append(entry[1])
            ids.append(id(code))
            frame = frame.f_back
        names.reverse()
        text = self._stacks[tuple(ids)] = ";".join(names)
        return text
