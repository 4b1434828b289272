"""Application names, tags and the ingest URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from kiln._naming import (
    ingest_name,
    ingest_url,
    merge_tags,
    normalize_server_address,
    validate_app_name,
    validate_tags,
)


@pytest.mark.parametrize("name", ["app", "my.app", "team/svc-1", "a_b.c"])
def test_accepts_the_server_charset_for_app_names(name):
    assert validate_app_name(name) == name


@pytest.mark.parametrize("name", ["", "my app", "app{x=1}", "app,b", "é", None])
def test_refuses_app_names_the_server_would_reject(name):
    with pytest.raises(ValueError, match="application_name"):
        validate_app_name(name)


def test_tags_are_sorted_and_values_stringified():
    assert validate_tags({"zone": "b", "env": "prod", "shard": 3}) == (
        ("env", "prod"),
        ("shard", "3"),
        ("zone", "b"),
    )
    assert validate_tags(None) == ()
    assert validate_tags({}) == ()


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"bad key": "v"}, "tag name"),
        ({"": "v"}, "tag name"),
        ({"k-dash": "v"}, "tag name"),
        ({"__name__": "v"}, "reserved"),
        ({"service_name": "v"}, "reserved"),
        ({"k": "a,b"}, "cannot contain"),
        ({"k": "a}b"}, "cannot contain"),
        ({"k": "a{b"}, "cannot contain"),
        ({"k": "line\nbreak"}, "cannot contain"),
        ({"k": ""}, "non-empty"),
        ({"k": " padded"}, "surrounding spaces"),
    ],
)
def test_refuses_tags_that_cannot_be_encoded(tags, message):
    with pytest.raises(ValueError, match=message):
        validate_tags(tags)


def test_tags_must_be_a_mapping():
    with pytest.raises(TypeError):
        validate_tags([("k", "v")])


def test_dotted_keys_and_inner_spaces_are_allowed():
    assert validate_tags({"otel.scope": "a b=c"}) == (("otel.scope", "a b=c"),)


def test_merge_overrides_and_keeps_order():
    base = (("env", "prod"), ("region", "eu"))
    assert merge_tags(base, (("env", "dev"), ("a", "1"))) == (
        ("a", "1"),
        ("env", "dev"),
        ("region", "eu"),
    )
    assert merge_tags(base, ()) is base
    assert merge_tags((), base) is base


def test_ingest_name_is_app_dot_type_with_sorted_tags():
    assert ingest_name("shop", "cpu", (("a", "1"), ("b", "x y"))) == "shop.cpu{a=1,b=x y}"
    assert ingest_name("shop", "wall", ()) == "shop.wall{}"


def test_ingest_url_round_trips_through_query_parsing():
    name = ingest_name("shop", "cpu", (("env", "prod"), ("path", "/a b")))
    url = ingest_url("http://127.0.0.1:4040/base", name, 1700000000, 1700000010, 100)
    parts = urlsplit(url)
    assert parts.path == "/base/ingest"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "name": "shop.cpu{env=prod,path=/a b}",
        "from": "1700000000",
        "until": "1700000010",
        "format": "folded",
        "sampleRate": "100",
        "spyName": "pyspy",
    }
    # the label-set syntax is fully percent-encoded, spaces included
    assert "%7Benv%3Dprod%2Cpath%3D%2Fa%20b%7D" in parts.query


def test_server_address_is_checked_and_trailing_slash_dropped():
    assert normalize_server_address("http://127.0.0.1:4040/") == "http://127.0.0.1:4040"
    assert normalize_server_address("https://h/prefix/") == "https://h/prefix"
    for bad in ["127.0.0.1:4040", "ftp://h", "http://", "http://h/?a=1"]:
        with pytest.raises(ValueError, match="server_address"):
            normalize_server_address(bad)
