#!/usr/bin/env python3
"""A small program profiled by Kiln's Python SDK.

Its main thread alternates between a CPU hot path (``hash_loop``: chained SHA-256) and an
allocation-heavy path (``alloc_loop``: builds and drops many small dicts and strings), each inside
``kiln.tag_wrapper({"workload": ...})``; a second thread mostly waits, and so does not show up
in the CPU profile.

    python3 examples/python-app/app.py --server http://127.0.0.1:4040 --duration 30

The SDK is imported from this repository (``sdk/python/src`` is put on ``sys.path``), so nothing
needs installing; with the SDK installed (``pip install -e sdk/python``) the same code works.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import time

_SDK_SRC = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python", "src"
)
sys.path.insert(0, os.path.normpath(_SDK_SRC))

import kiln  # noqa: E402  (after the path insertion above)


def hash_loop(rounds: int) -> bytes:
    """The CPU hot path: each digest feeds the next, so none of it can be skipped."""
    digest = b"kiln"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest


def alloc_loop(items: int) -> int:
    """The allocation-heavy path: many short-lived objects, then dropped."""
    records = [{"id": i, "name": f"item-{i}", "tags": [i, i * 2, i * 3]} for i in range(items)]
    total = sum(len(record["name"]) for record in records)
    del records
    return total


def background_waiter(stop: threading.Event) -> None:
    """Wakes up once a second to do almost nothing: idle, so absent from the CPU profile."""
    while not stop.wait(1.0):
        pass


def run_workload(deadline: float, rounds: int) -> int:
    """Runs hash/alloc pairs until ``deadline`` (monotonic) or for ``rounds`` pairs if > 0."""
    done = 0
    while (rounds > 0 and done < rounds) or (rounds <= 0 and time.monotonic() < deadline):
        with kiln.tag_wrapper({"workload": "hash"}):
            hash_loop(20_000)
        with kiln.tag_wrapper({"workload": "alloc"}):
            alloc_loop(15_000)
        done += 1
    return done


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"tags are KEY=VALUE, not {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:4040", help="Kiln daemon URL")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="run this many hash/alloc rounds instead of --duration",
    )
    parser.add_argument(
        "--app-name", default="python-app", help="application name (default python-app)"
    )
    parser.add_argument(
        "--tag",
        action="append",
        type=parse_tag,
        default=[],
        metavar="KEY=VALUE",
        help="static tag, repeatable",
    )
    parser.add_argument(
        "--upload-interval", type=float, default=10.0, help="seconds between uploads (default 10)"
    )
    parser.add_argument("--auth-token", default=None, help="bearer token for the daemon")
    parser.add_argument("--ca-file", default=None, help="PEM CA file trusted for an https server")
    parser.add_argument("--client-cert", default=None, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--client-key", default=None, help="PEM key of --client-cert")
    parser.add_argument("--mode", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--print-stats", action="store_true", help="print the SDK's counters as JSON at exit"
    )
    parser.add_argument(
        "--no-profiling",
        action="store_true",
        help="run the workload without the SDK (for overhead comparisons)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if not args.no_profiling:
        try:
            kiln.configure(
                application_name=args.app_name,
                server_address=args.server,
                auth_token=args.auth_token,
                ca_file=args.ca_file,
                client_cert_file=args.client_cert,
                client_key_file=args.client_key,
                tags=dict(args.tag),
                upload_interval=args.upload_interval,
                mode=args.mode,
            )
        except ValueError as error:  # a bad name, tag or address: say which
            parser.error(str(error))

    stop = threading.Event()
    waiter = threading.Thread(target=background_waiter, args=(stop,), name="waiter", daemon=True)
    waiter.start()
    started = time.monotonic()
    done = run_workload(started + args.duration, args.rounds)
    stop.set()
    waiter.join()

    elapsed = time.monotonic() - started
    print(f"{done} rounds in {elapsed:.1f}s")
    if not args.no_profiling:
        if not kiln.shutdown():  # flushes the last partial interval
            print(f"some profiles were not delivered: {kiln.stats()}", file=sys.stderr)
        if args.print_stats:
            print("kiln stats:", json.dumps(kiln.stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
