"""The component's entry module against the generated bindings, with the host imports replaced by
recorders: the WIT records reach topn unchanged and errors come back as `Err`."""

import importlib
import json
import sys

import pytest

from profiles import TESTDATA, folded_profile


@pytest.fixture
def app(bindings, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(bindings))
    for name in [m for m in sys.modules if m == "app" or m.startswith("wit_world")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("app")
    from wit_world.imports import host

    logged, posted = [], []
    monkeypatch.setattr(host, "log", lambda level, message: logged.append((level, message)))

    def http_post(url, content_type, body):
        posted.append((url, content_type, body))
        return 204

    monkeypatch.setattr(host, "http_post", http_post)
    monkeypatch.setattr(module, "DATA_DIR", str(tmp_path))
    module.logged, module.posted = logged, posted
    return module


def wit_profile(text, labels):
    """A `types.Profile` as the daemon hands it over."""
    from wit_world.imports import types

    data = folded_profile(text, labels)
    return types.Profile(
        labels=[types.Label(name=k, value=v) for k, v in labels],
        profile_type=types.ProfileType(
            name="cpu",
            metric="process_cpu",
            sample_type="cpu",
            sample_unit="nanoseconds",
            period_type="cpu",
            period_unit="nanoseconds",
            aggregation=types.Aggregation.SUM,
        ),
        start_ns=data.start_ns,
        end_ns=data.end_ns,
        frames=[types.Frame(function=f, file="", line=0) for f in data.frames],
        stack_lens=[len(stack) for stack, _ in data.samples],
        values=[value for _, value in data.samples],
        stacks=[frame for stack, _ in data.samples for frame in stack],
        spy_name="",
        sample_rate=100,
    )


def test_info_names_the_plugin(app):
    info = app.WitWorld().info()
    assert (info.name, info.version) == ("top-functions-py", "0.1.0")


def test_init_refuses_an_unknown_option_with_err(app):
    from componentize_py_types import Err

    with pytest.raises(Err) as refused:
        app.WitWorld().init('{"topp": 3}')
    assert 'unknown option "topp"' in refused.value.value


def test_consume_appends_lines_to_the_granted_dir_and_posts_them(app, tmp_path):
    world = app.WitWorld()
    world.init('{"top": 3, "file": "t.jsonl", "webhook": "http://127.0.0.1:1/hook"}')
    profile = wit_profile((TESTDATA / "collapsed.txt").read_text(), [("service_name", "pyapp")])
    world.consume([profile])
    world.consume([profile])

    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["service"] == "pyapp" and record["type"] == "cpu"
    assert [t["function"] for t in record["top"]] == ["deflate", "net.Read", "decodeString"]
    assert [(url, ctype) for url, ctype, _ in app.posted] == [
        ("http://127.0.0.1:1/hook", "application/x-ndjson")
    ] * 2
    assert app.posted[0][2].decode() == lines[0] + "\n"


def test_a_refused_webhook_fails_the_batch(app, monkeypatch):
    from componentize_py_types import Err
    from wit_world.imports import host

    def refuse(url, content_type, body):
        raise Err(f"POST {url} refused: not in this plugin's sandbox.http_allow")

    monkeypatch.setattr(host, "http_post", refuse)
    world = app.WitWorld()
    world.init('{"webhook": "http://127.0.0.1:1/hook"}')
    with pytest.raises(Err) as failed:
        world.consume([wit_profile("main;f 1\n", [])])
    assert "refused" in failed.value.value


def test_a_webhook_error_status_is_logged_and_fails_the_batch(app, monkeypatch):
    from componentize_py_types import Err
    from wit_world.imports import host

    monkeypatch.setattr(host, "http_post", lambda url, content_type, body: 500)
    world = app.WitWorld()
    world.init('{"webhook": "http://127.0.0.1:1/hook"}')
    with pytest.raises(Err) as failed:
        world.consume([wit_profile("main;f 1\n", [])])
    assert "answered 500" in failed.value.value
    assert any(level == host.LogLevel.WARN and "500" in m for level, m in app.logged)


def test_a_malformed_profile_is_an_error_not_a_crash(app):
    from componentize_py_types import Err

    profile = wit_profile("main;f 1\n", [])
    # The first sample's stack now ends in a frame that does not exist.
    profile.stacks.insert(profile.stack_lens[0], 99)
    profile.stack_lens[0] += 1
    world = app.WitWorld()
    world.init("{}")
    with pytest.raises(Err) as failed:
        world.consume([profile])
    assert "frame 99" in failed.value.value
