"""`top-functions-py`: a Kiln sink plugin (world `kiln:plugin/sink`) written in Python.

For every profile a pipeline stores it writes one JSON line with the functions that have the most
self value (see `topn.py`). Lines are appended to `/data/<file>` when the sandbox grants a
directory, and POSTed (`application/x-ndjson`, one request per batch) to `webhook` when that URL
is set and allow-listed in `sandbox.http_allow`.

Options: `top` (default 10), `file` (default `top-functions-py.jsonl`), `webhook` (none).
"""

import os
import time

import wit_world
from componentize_py_types import Err
from wit_world.imports import host, types

import topn

PLUGIN_NAME = "top-functions-py"
PLUGIN_VERSION = "0.1.0"

#: Where the daemon mounts the directory granted by `sandbox.dir`; absent without a grant.
DATA_DIR = "/data"

# One instance serves one configured sink; `init` runs before any `consume`.
_options = topn.Options()


def split_stacks(stacks: list[int], lengths: list[int]) -> list[list[int]]:
    """The samples' stacks: `stacks` holds them one after another, `lengths` says where."""
    out, start = [], 0
    for length in lengths:
        out.append(stacks[start : start + length])
        start += length
    return out


def to_profile_data(profile: types.Profile) -> topn.ProfileData:
    return topn.ProfileData(
        type_name=profile.profile_type.name,
        labels=[(label.name, label.value) for label in profile.labels],
        start_ns=profile.start_ns,
        end_ns=profile.end_ns,
        frames=[frame.function for frame in profile.frames],
        samples=list(
            zip(split_stacks(profile.stacks, profile.stack_lens), profile.values, strict=True)
        ),
    )


def append_to_data_dir(file: str, body: str) -> None:
    path = os.path.join(DATA_DIR, file)
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(body)
    except OSError as e:
        raise Err(f"writing {path}: {e}") from None


def post_to_webhook(url: str, body: str) -> None:
    # A URL outside sandbox.http_allow comes back as Err, which ends this call as a sink error.
    status = host.http_post(url, "application/x-ndjson", body.encode("utf-8"))
    if not 200 <= status < 300:
        host.log(host.LogLevel.WARN, f"webhook {url} answered {status}")
        raise Err(f"webhook {url} answered {status}")


class WitWorld(wit_world.WitWorld):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(name=PLUGIN_NAME, version=PLUGIN_VERSION)

    def init(self, options: str) -> None:
        global _options
        try:
            _options = topn.parse_options(options)
        except topn.OptionsError as e:
            raise Err(str(e)) from None
        host.log(
            host.LogLevel.DEBUG,
            f"top={_options.top} file={_options.file} webhook={_options.webhook or '-'}",
        )

    def consume(self, profiles: list[types.Profile]) -> None:
        started = time.perf_counter()
        try:
            body = topn.lines_body((to_profile_data(p) for p in profiles), _options.top)
        except ValueError as e:
            raise Err(f"malformed profile: {e}") from None
        if os.path.isdir(DATA_DIR):
            append_to_data_dir(_options.file, body)
        if _options.webhook:
            post_to_webhook(_options.webhook, body)
        elapsed_ms = (time.perf_counter() - started) * 1000
        host.log(host.LogLevel.DEBUG, f"consumed {len(profiles)} profile(s) in {elapsed_ms:.2f} ms")
