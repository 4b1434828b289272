"""Dynamic tags: a stack per thread, readable by the sampling thread.

Each thread's current tags live in one dict keyed by thread id, so the sampler can read every
thread's tags without locks (a dict read or write is atomic in CPython). The values a thread had
before entering each block are kept in a thread-local list, so nesting and exceptions restore
them exactly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from ._naming import NO_TAGS, Tags, merge_tags, validate_tags

# thread ident -> tags in force for that thread right now (absent: no dynamic tags)
_active: dict[int, Tags] = {}
_saved = threading.local()
# idents missing at the last prune: dropped if still missing at the next one
_suspects: set[int] = set()


class _TagScope(contextlib.ContextDecorator):
    """What :func:`kiln.tag_wrapper` returns: a context manager, also usable as a decorator."""

    __slots__ = ("_tags",)

    def __init__(self, tags: Tags) -> None:
        self._tags = tags

    def __enter__(self) -> _TagScope:
        ident = threading.get_ident()
        previous = _active.get(ident, NO_TAGS)
        stack: list[Tags] | None = getattr(_saved, "stack", None)
        if stack is None:
            stack = _saved.stack = []
        stack.append(previous)
        _active[ident] = merge_tags(previous, self._tags)
        return self

    def __exit__(self, *exc_info: object) -> None:
        ident = threading.get_ident()
        stack: list[Tags] | None = getattr(_saved, "stack", None)
        # Empty only if a generator entered the block on another thread; then clear this one.
        previous = stack.pop() if stack else NO_TAGS
        if previous:
            _active[ident] = previous
        else:
            _active.pop(ident, None)


def tag_wrapper(tags: Mapping[str, object]) -> _TagScope:
    """Tags every sample taken while the calling thread is inside the block.

    ``with kiln.tag_wrapper({"endpoint": "/checkout"}): handle()`` — nested blocks add to (and
    may override) the outer block's tags; leaving a block restores them. Tags are per thread:
    other threads, and asyncio tasks that run on this thread while the block is suspended, are
    affected as the thread is. Also usable as a decorator. Invalid names or values raise
    ValueError at once.
    """
    return _TagScope(validate_tags(tags))


def tags_of(ident: int) -> Tags:
    """The dynamic tags thread ``ident`` is running with."""
    return _active.get(ident, NO_TAGS)


def prune_ended_threads(alive: AbstractSet[int]) -> None:
    """Drops the entries of threads that ended inside a block.

    An entry is dropped only when its thread was missing from two calls in a row, so a thread
    that starts (and enters a block) just after ``alive`` was taken keeps its tags.
    """
    global _suspects
    missing = {ident for ident in _active if ident not in alive}
    for ident in missing & _suspects:
        _active.pop(ident, None)
    _suspects = missing - _suspects
