"""Application names, tags and the ``/ingest`` URL, as the Pyroscope wire format spells them.

An ingest ``name`` is ``APP.TYPE{k1=v1,k2=v2}``: keys sorted, values unquoted. The grammar has
no escaping, so values that would break it (``,`` ``{`` ``}``) are refused here, when the user
passes them, rather than mangled on the server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import quote, urlencode, urlsplit

#: Tags in canonical form: ``(key, value)`` pairs sorted by key, hashable.
Tags = tuple[tuple[str, str], ...]

NO_TAGS: Tags = ()

_APP_NAME = re.compile(r"[A-Za-z0-9_./-]+")
_TAG_KEY = re.compile(r"[A-Za-z0-9_.]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[,{}\x00-\x1f\x7f]")
# Labels the server sets itself; a tag with one of these names would be overwritten or dropped.
_RESERVED_KEYS = frozenset({"service_name"})

SPY_NAME = "pyspy"


def validate_app_name(name: str) -> str:
    """Returns ``name`` if the server accepts it as an application name, else raises ValueError."""
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
        raise ValueError(
            f"application_name {name!r} must be non-empty and use only letters, digits and _ . / -"
        )
    return name


def validate_tags(tags: Mapping[str, object] | None) -> Tags:
    """Checks every key and value and returns the tags in canonical (sorted) form.

    Values that are not strings are converted with ``str()``, so ``{"shard": 3}`` works.
    """
    if not tags:
        return NO_TAGS
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping of str to str, not {type(tags).__name__}")
    checked = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
            raise ValueError(
                f"tag name {key!r} must be non-empty and use only letters, digits, _ and ."
            )
        if key.startswith("__") or key in _RESERVED_KEYS:
            raise ValueError(f"tag name {key!r} is reserved for the server")
        text = value if isinstance(value, str) else str(value)
        if not text or text != text.strip():
            raise ValueError(
                f"tag {key}={text!r}: the value must be non-empty, without surrounding spaces"
            )
        if _FORBIDDEN_IN_VALUE.search(text):
            raise ValueError(
                f"tag {key}={text!r}: the value cannot contain ',', '{{', '}}' or control chars"
            )
        checked[key] = text
    return tuple(sorted(checked.items()))


def merge_tags(base: Tags, override: Tags) -> Tags:
    """``base`` with every key of ``override`` added or replaced."""
    if not base:
        return override
    if not override:
        return base
    merged = dict(base)
    merged.update(override)
    return tuple(sorted(merged.items()))


def ingest_name(app: str, profile_type: str, tags: Tags) -> str:
    """``app.cpu{env=prod,region=eu}`` (tags must already be canonical)."""
    body = ",".join(f"{key}={value}" for key, value in tags)
    return f"{app}.{profile_type}{{{body}}}"


def normalize_server_address(address: str) -> str:
    """Checks that ``address`` is an http(s) URL; drops a trailing slash, keeps a path prefix."""
    if not isinstance(address, str):
        raise TypeError("server_address must be a string such as 'http://127.0.0.1:4040'")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"server_address {address!r} must be an http:// or https:// URL, "
            "e.g. 'http://127.0.0.1:4040'"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"server_address {address!r} must not have a query or fragment")
    return address.rstrip("/")


def ingest_url(server_address: str, name: str, from_s: int, until_s: int, sample_rate: int) -> str:
    """The full ``POST`` URL of one folded upload."""
    query = urlencode(
        [
            ("name", name),
            ("from", str(from_s)),
            ("until", str(until_s)),
            ("format", "folded"),
            ("sampleRate", str(sample_rate)),
            ("spyName", SPY_NAME),
        ],
        quote_via=quote,
    )
    return f"{server_address}/ingest?{query}"
