"""Dynamic tags: per thread, nested, restored on exit."""

from __future__ import annotations

import threading

import pytest

import kiln
from kiln import _tags


def current():
    return _tags.tags_of(threading.get_ident())


def test_nested_blocks_merge_and_restore():
    assert current() == ()
    with kiln.tag_wrapper({"endpoint": "/a", "tier": "1"}):
        assert current() == (("endpoint", "/a"), ("tier", "1"))
        with kiln.tag_wrapper({"tier": "2", "user": "x"}):
            assert current() == (("endpoint", "/a"), ("tier", "2"), ("user", "x"))
        assert current() == (("endpoint", "/a"), ("tier", "1"))
    assert current() == ()
    assert threading.get_ident() not in _tags._active


def test_exception_inside_the_block_restores_tags():
    with pytest.raises(RuntimeError), kiln.tag_wrapper({"k": "v"}):
        raise RuntimeError("boom")
    assert current() == ()


def test_works_as_a_decorator_and_is_reentrant():
    seen = []

    @kiln.tag_wrapper({"job": "report"})
    def job(depth):
        seen.append(current())
        if depth:
            job(depth - 1)
        seen.append(current())

    job(1)
    assert seen == [(("job", "report"),)] * 4
    assert current() == ()


def test_tags_belong_to_the_thread_that_entered_the_block():
    entered = threading.Barrier(3)
    checked = threading.Barrier(3)
    observed = {}

    def worker(value):
        with kiln.tag_wrapper({"worker": value}):
            entered.wait(5)
            observed[value] = current()
            checked.wait(5)

    threads = [threading.Thread(target=worker, args=(v,)) for v in ("a", "b")]
    for t in threads:
        t.start()
    entered.wait(5)
    # both workers are inside their blocks now; the sampler sees each thread's own tags
    by_thread = {t.ident: _tags.tags_of(t.ident) for t in threads}
    assert sorted(by_thread.values()) == [(("worker", "a"),), (("worker", "b"),)]
    assert current() == ()
    checked.wait(5)
    for t in threads:
        t.join(5)
    assert observed == {"a": (("worker", "a"),), "b": (("worker", "b"),)}
    assert all(_tags.tags_of(t.ident) == () for t in threads)


def test_invalid_tags_raise_when_the_wrapper_is_made():
    with pytest.raises(ValueError):
        kiln.tag_wrapper({"bad,key": "v"})
    with pytest.raises(ValueError):
        kiln.tag_wrapper({"k": "a,b"})


def test_entries_of_ended_threads_are_pruned_after_two_misses():
    ghost = 987654321
    _tags._active[ghost] = (("k", "v"),)
    try:
        _tags.prune_ended_threads({threading.get_ident()})
        assert ghost in _tags._active  # first miss: only suspected
        _tags.prune_ended_threads({threading.get_ident()})
        assert ghost not in _tags._active
    finally:
        _tags._active.pop(ghost, None)


def test_a_thread_seen_again_is_no_longer_suspected():
    ident = 123456789
    _tags._active[ident] = (("k", "v"),)
    try:
        _tags.prune_ended_threads(set())
        _tags.prune_ended_threads({ident})
        _tags.prune_ended_threads(set())
        assert ident in _tags._active
    finally:
        _tags._active.pop(ident, None)
        _tags._suspects.discard(ident)
