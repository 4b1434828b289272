"""The top-N computation and the option parsing, on the repository's real folded profile."""

import json

import pytest

from profiles import TESTDATA, folded_profile
from topn import (
    DEFAULT_FILE,
    DEFAULT_TOP,
    Options,
    OptionsError,
    ProfileData,
    lines_body,
    parse_options,
    profile_line,
    profile_record,
    top_functions,
)


def leaf_selfs(text: str):
    """Self value per function, straight from the folded text (the last frame of each line)."""
    selfs = {}
    for line in text.splitlines():
        stack, value = line.rsplit(" ", 1)
        leaf = stack.split(";")[-1]
        selfs[leaf] = selfs.get(leaf, 0) + int(value)
    return selfs


def test_top_functions_of_the_collapsed_testdata(collapsed):
    top = top_functions(collapsed, 3)
    assert [(e.function, e.self_value) for e in top] == [
        ("deflate", 310),
        ("net.Read", 200),
        ("decodeString", 120),
    ]
    total = 120 + 30 + 200 + 75 + 310 + 12 + 44
    assert top[0].share == pytest.approx(310 / total)


def test_every_function_agrees_with_an_independent_count(collapsed):
    text = (TESTDATA / "collapsed.txt").read_text()
    expected = leaf_selfs(text)
    everything = top_functions(collapsed, 1000)
    assert {e.function: e.self_value for e in everything} == expected
    # parseJSON is a leaf once (30) and an inner frame of decodeString's stack: only 30 is self.
    assert {e.function: e.self_value for e in everything}["parseJSON"] == 30
    assert "main" not in expected and all(e.function != "main" for e in everything)
    assert sum(e.share for e in everything) == pytest.approx(1.0)
    values = [e.self_value for e in everything]
    assert values == sorted(values, reverse=True)


def test_ties_are_ordered_by_name_and_the_same_function_adds_up():
    p = folded_profile("main;zeta 5\nmain;alpha 5\nother;alpha 1\nmain;mid 6\n", [])
    top = top_functions(p, 10)
    assert [(e.function, e.self_value) for e in top] == [("alpha", 6), ("mid", 6), ("zeta", 5)]


def test_empty_stacks_count_in_the_total_only():
    p = ProfileData(type_name="cpu", frames=["f"], samples=[([0], 3), ([], 1)])
    record = profile_record(p, 10)
    assert record["total"] == 4
    assert record["top"] == [{"function": "f", "self": 3, "share": 0.75}]


def test_a_profile_without_value_has_zero_shares():
    p = ProfileData(type_name="cpu", frames=["f"], samples=[([0], 0)])
    assert top_functions(p, 5)[0].share == 0.0


def test_a_stack_pointing_past_the_frames_is_refused():
    p = ProfileData(type_name="cpu", frames=["f"], samples=[([0, 7], 1)])
    with pytest.raises(ValueError, match="frame 7"):
        top_functions(p, 5)


def test_the_line_has_the_rust_sinks_shape(collapsed):
    line = profile_line(collapsed, 2)
    assert "\n" not in line
    assert line.startswith('{"service":"pyapp","type":"cpu","labels":{"az":"b","env":"ci"},')
    record = json.loads(line)
    assert list(record) == ["service", "type", "labels", "start_ns", "end_ns", "total", "top"]
    assert record["labels"] == {"az": "b", "env": "ci"}
    assert record["start_ns"] == collapsed.start_ns and record["end_ns"] == collapsed.end_ns
    assert record["total"] == 791
    assert [t["function"] for t in record["top"]] == ["deflate", "net.Read"]
    assert list(record["top"][0]) == ["function", "self", "share"]


def test_a_profile_without_service_name_has_an_empty_service():
    p = folded_profile("a;b 1\n", [("env", "x")], type_name="alloc_space")
    record = profile_record(p, 1)
    assert record["service"] == "" and record["type"] == "alloc_space"
    assert record["labels"] == {"env": "x"}


def test_non_ascii_names_are_kept_as_utf8():
    p = folded_profile("main;größe 2\n", [("service_name", "ü")])
    assert '"function":"größe"' in profile_line(p, 1)


def test_a_batch_is_one_line_per_profile(collapsed):
    other = folded_profile("main;work 9\n", [("service_name", "other")])
    body = lines_body([collapsed, other], 1)
    lines = body.splitlines()
    assert body.endswith("\n") and len(lines) == 2
    assert [json.loads(line)["service"] for line in lines] == ["pyapp", "other"]
    assert json.loads(lines[1])["top"] == [{"function": "work", "self": 9, "share": 1.0}]


def test_options_default_when_empty():
    assert parse_options("{}") == Options(top=DEFAULT_TOP, file=DEFAULT_FILE, webhook=None)


def test_options_are_read():
    options = parse_options('{"top": 3, "file": "out.jsonl", "webhook": "http://127.0.0.1:9/h"}')
    assert options == Options(top=3, file="out.jsonl", webhook="http://127.0.0.1:9/h")


@pytest.mark.parametrize(
    "text, names",
    [
        ('{"topp": 3}', ['unknown option "topp"']),
        ('{"top": "3"}', ['"top"', '"3"']),
        ('{"top": 0}', ['"top"', "at least 1"]),
        ('{"top": true}', ['"top"', "true"]),
        ('{"top": 2.5}', ['"top"', "2.5"]),
        ('{"file": 7}', ['"file"', "7"]),
        ('{"file": "../escape.jsonl"}', ['"file"', "../escape.jsonl"]),
        ('{"file": ""}', ['"file"']),
        ('{"webhook": "ftp://x"}', ['"webhook"', "ftp://x"]),
        ("[1]", ["JSON object"]),
        ("{top: 3}", ["not valid JSON"]),
    ],
)
def test_bad_options_are_refused_naming_the_option(text, names):
    with pytest.raises(OptionsError) as refused:
        parse_options(text)
    for name in names:
        assert name in str(refused.value)
