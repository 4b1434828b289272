#!/usr/bin/env python3
"""Overhead of the Python SDK: the example workload with and without profiling.

Runs ``examples/python-app/app.py --rounds N`` (a fixed amount of work) alternately without the
SDK (``--no-profiling``) and with it (100 Hz sampling, uploads every 10 s to a local sink that
answers 200 like the daemon), and prints, per variant, the median wall time, CPU time (user +
system), peak RSS and minor page faults of the child process, the CPU time of the SDK's own
threads, then the relative overhead.

Whole-process figures include side effects on the workload: with pymalloc, objects the SDK
allocates while the workload runs keep some allocator arenas in use, so ``alloc_loop`` returns
fewer of them to the OS and faults fewer back in every round (see the minor faults column),
which can make the profiled run *faster*.
``--pythonmalloc malloc`` runs both variants without pymalloc to take that effect out; the SDK
threads' own CPU time is unaffected by it.

    python3 sdk/python/bench_overhead.py [--rounds 800] [--repeat 3] [--mode cpu|wall]
                                         [--pythonmalloc pymalloc|malloc]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS_PREFIX = "kiln stats: "
APP = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "python-app", "app.py"
)


class Sink:
    """Accepts uploads and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.requests += 1
                sink.bytes += len(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()


@dataclass
class Run:
    wall: float
    cpu: float
    max_rss_mib: float
    minor_faults: int
    sdk_threads_cpu: float  # the sampling and upload threads' own CPU time (0 without the SDK)


def run_once(args: list[str], env: dict[str, str]) -> Run:
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, APP, *args], stdout=stdout, stderr=stderr, env=env
        )
        # wait4, not wait: it also returns the child's own CPU time and peak RSS
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        if process.returncode != 0:
            stderr.seek(0)
            sys.exit(f"app.py {' '.join(args)} failed:\n{stderr.read().decode()}")
        stdout.seek(0)
        output = stdout.read().decode()
    # ru_maxrss is in KiB on Linux, bytes on macOS
    rss_kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    sdk_ms = 0
    for line in output.splitlines():
        if line.startswith(STATS_PREFIX):
            stats = json.loads(line[len(STATS_PREFIX) :])
            sdk_ms = stats["sampler_cpu_ms"] + stats["uploader_cpu_ms"]
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, cpu, rss_kib / 1024, usage.ru_minflt, sdk_ms / 1000)


def median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=800, help="hash/alloc rounds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median kept)")
    parser.add_argument("--mode", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--pythonmalloc",
        choices=["pymalloc", "malloc"],
        default="pymalloc",
        help="allocator of both runs (PYTHONMALLOC); 'malloc' removes pymalloc's arena effect",
    )
    options = parser.parse_args()

    sink = Sink()
    env = {**os.environ, "PYTHONMALLOC": options.pythonmalloc}
    common = ["--rounds", str(options.rounds)]
    variants = {
        "without SDK": [*common, "--no-profiling"],
        "with SDK": [*common, "--server", sink.url, "--mode", options.mode, "--print-stats"],
    }
    results: dict[str, list[Run]] = {name: [] for name in variants}
    for _ in range(options.repeat):
        for name, args in variants.items():  # alternate, so load changes hit both alike
            results[name].append(run_once(args, env))
    sink.close()

    print(
        f"python {sys.version.split()[0]}, PYTHONMALLOC={options.pythonmalloc},"
        f" {options.rounds} rounds, median of {options.repeat}"
    )
    print(
        f"{'variant':<12} {'wall s':>8} {'CPU s':>8} {'max RSS MiB':>12} {'minor faults':>13}"
        f" {'SDK threads CPU s':>18}"
    )
    for name, runs in results.items():
        print(
            f"{name:<12} {median(runs, 'wall'):>8.2f} {median(runs, 'cpu'):>8.2f}"
            f" {median(runs, 'max_rss_mib'):>12.1f} {median(runs, 'minor_faults'):>13.0f}"
            f" {median(runs, 'sdk_threads_cpu'):>18.3f}"
        )
    base, profiled = results["without SDK"], results["with SDK"]
    cpu_overhead = median(profiled, "cpu") / median(base, "cpu") - 1
    wall_overhead = median(profiled, "wall") / median(base, "wall") - 1
    rss_delta = median(profiled, "max_rss_mib") - median(base, "max_rss_mib")
    sdk_share = median(profiled, "sdk_threads_cpu") / median(profiled, "wall")
    print(
        f"overhead: process CPU {cpu_overhead:+.1%}, wall {wall_overhead:+.1%},"
        f" RSS {rss_delta:+.1f} MiB; SDK threads {sdk_share:.2%} of one core;"
        f" {sink.requests} uploads, {sink.bytes / 1024:.1f} KiB received"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
