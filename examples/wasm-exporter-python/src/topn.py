"""The logic of the `top-functions-py` sink, free of any WebAssembly binding.

For one profile it finds the functions with the most self value (the value of the samples whose
stack ends in them) and renders one JSON line:

    {"service":"checkout","type":"cpu","labels":{"env":"prod"},"start_ns":...,"end_ns":...,
     "total":1234,"top":[{"function":"main.hash","self":800,"share":0.648}]}

`app.py` converts the WIT records into `ProfileData` and calls `profile_line`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DEFAULT_TOP = 10
DEFAULT_FILE = "top-functions-py.jsonl"
SERVICE_LABEL = "service_name"


class OptionsError(ValueError):
    """The sink's options are not what it accepts; the message names the option."""


@dataclass(frozen=True)
class Options:
    """What `[sinks.NAME]` may set besides `type` and `sandbox`."""

    top: int = DEFAULT_TOP
    file: str = DEFAULT_FILE
    webhook: str | None = None


def parse_options(text: str) -> Options:
    """Reads the JSON object the daemon hands to `init`; refuses unknown keys and bad values."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise OptionsError(f"options are not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise OptionsError("options must be a JSON object")
    known = ("top", "file", "webhook")
    for key in raw:
        if key not in known:
            raise OptionsError(f'unknown option "{key}" (known: {", ".join(known)})')

    top = raw.get("top", DEFAULT_TOP)
    # bool is a subclass of int in Python; `top = true` is a mistake, not 1.
    if not isinstance(top, int) or isinstance(top, bool) or top < 1:
        raise OptionsError(f'option "top" must be an integer of at least 1, not {json.dumps(top)}')

    file = raw.get("file", DEFAULT_FILE)
    if not isinstance(file, str) or file in ("", ".", "..") or "/" in file or "\\" in file:
        raise OptionsError(
            f'option "file" must be a plain file name inside the granted directory, '
            f"not {json.dumps(file)}"
        )

    webhook = raw.get("webhook")
    if webhook is not None and not (
        isinstance(webhook, str) and webhook.startswith(("http://", "https://"))
    ):
        raise OptionsError(f'option "webhook" must be an http(s) URL, not {json.dumps(webhook)}')

    return Options(top=top, file=file, webhook=webhook)


@dataclass
class ProfileData:
    """The parts of a `kiln:plugin/types.profile` this sink reads, as plain Python values."""

    type_name: str
    labels: list[tuple[str, str]] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0
    #: Function name of every frame; stacks index into it.
    frames: list[str] = field(default_factory=list)
    #: (stack of frame indices, root first; value)
    samples: list[tuple[Sequence[int], int]] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    function: str
    self_value: int
    share: float


def total_value(profile: ProfileData) -> int:
    return sum(value for _, value in profile.samples)


def top_functions(profile: ProfileData, n: int) -> list[Entry]:
    """The `n` functions with the most self value, ties ordered by name so output is stable."""
    by_function: dict[str, int] = defaultdict(int)
    for stack, value in profile.samples:
        if not stack:
            continue
        leaf = stack[-1]
        if not 0 <= leaf < len(profile.frames):
            raise ValueError(
                f"sample refers to frame {leaf}, the profile has {len(profile.frames)}"
            )
        by_function[profile.frames[leaf]] += value
    total = total_value(profile)
    ranked = sorted(by_function.items(), key=lambda item: (-item[1], item[0]))
    return [
        Entry(function=name, self_value=value, share=value / total if total else 0.0)
        for name, value in ranked[:n]
    ]


def profile_record(profile: ProfileData, n: int) -> dict:
    """The JSON object written for one profile (same shape as the Rust `top-functions` sink)."""
    service = next((v for k, v in profile.labels if k == SERVICE_LABEL), "")
    return {
        "service": service,
        "type": profile.type_name,
        "labels": {k: v for k, v in sorted(profile.labels) if k != SERVICE_LABEL},
        "start_ns": profile.start_ns,
        "end_ns": profile.end_ns,
        "total": total_value(profile),
        "top": [
            {"function": e.function, "self": e.self_value, "share": e.share}
            for e in top_functions(profile, n)
        ],
    }


def profile_line(profile: ProfileData, n: int) -> str:
    """`profile_record` as one compact JSON line (no trailing newline)."""
    return json.dumps(profile_record(profile, n), separators=(",", ":"), ensure_ascii=False)


def lines_body(profiles: Iterable[ProfileData], n: int) -> str:
    """Newline-delimited JSON for a batch, one line per profile."""
    return "".join(profile_line(p, n) + "\n" for p in profiles)
