#!/usr/bin/env python3
"""Overhead of the Python SDK: the example workload with and without profiling.

Runs ``examples/python-app/app.py --rounds N`` (a fixed amount of work, tagged per hot path)
without the SDK (``--no-profiling``), with it (100 Hz, uploads every 10 s to a local sink that
answers 200 like the daemon) once with the native sampler (when the ``_kiln_native`` extension
imports: install ``sdk/python/native`` with pip, or put an unpacked wheel on PYTHONPATH) and once
with the pure-Python sampler, and, when the ``pyroscope-io`` package is installed, with the
official agent at 100 Hz on the same workload and tags (its ``tag_wrapper`` in place of Kiln's).
The runs take turns and are compared by ``scripts/lib/overhead.py``: median CPU time (user +
system) and peak RSS of the child against the baseline, the noise floor, and the CPU time of the
Kiln SDK's own threads as it reports it (the part of its cost that does not depend on noise in
the rest of the process).

Whole-process figures include side effects on the workload: with pymalloc, objects the SDK
allocates while the workload runs keep some allocator arenas in use, so ``alloc_loop`` returns
fewer of them to the OS and faults fewer back in every round, which can make the profiled run
*faster*. ``--pythonmalloc malloc`` runs all variants without pymalloc to take that effect out.

    python3 sdk/python/bench_overhead.py [--rounds 800] [--repeat 3] [--mode cpu|wall]
                                         [--pythonmalloc pymalloc|malloc] [--no-official]
                                         [--sampler both|native|python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
APP = os.path.join(ROOT, "examples", "python-app", "app.py")
sys.path.insert(0, os.path.join(ROOT, "scripts", "lib"))

import overhead  # noqa: E402  (scripts/lib, put on the path above)

STATS_PREFIX = "kiln stats: "


class Sink:
    """Accepts uploads and counts them."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_port}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()


def run_official(server: str, rounds: int) -> None:
    """The workload of app.py under the official agent (run in the child process)."""
    import pyroscope

    sys.path.insert(0, os.path.dirname(APP))
    import app

    pyroscope.configure(
        application_name="python-bench-official", server_address=server, sample_rate=100
    )
    app.kiln.tag_wrapper = pyroscope.tag_wrapper  # the same tags, set through the official API
    app.run_workload(0.0, rounds)
    pyroscope.shutdown()


def sdk_stats(run: overhead.Run) -> dict | None:
    for line in run.output.splitlines():
        if line.startswith(STATS_PREFIX):
            return json.loads(line[len(STATS_PREFIX) :])  # type: ignore[no-any-return]
    return None


def sdk_threads_cpu(run: overhead.Run) -> float | None:
    stats = sdk_stats(run)
    if stats is None:
        return None
    return (stats["sampler_cpu_ms"] + stats["uploader_cpu_ms"]) / 1000


def native_loads(env: dict[str, str]) -> bool:
    """Whether the native sampler imports in the children's environment."""
    probe = [sys.executable, "-c", "import _kiln_native"]
    return subprocess.run(probe, env=env, capture_output=True, check=False).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=800, help="hash/alloc rounds per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median kept)")
    parser.add_argument("--mode", choices=["cpu", "wall"], default="cpu")
    parser.add_argument(
        "--pythonmalloc",
        choices=["pymalloc", "malloc"],
        default="pymalloc",
        help="allocator of all runs (PYTHONMALLOC); 'malloc' removes pymalloc's arena effect",
    )
    parser.add_argument("--no-official", action="store_true", help="leave out pyroscope-io")
    parser.add_argument(
        "--sampler",
        choices=["both", "native", "python"],
        default="both",
        help="the Kiln samplers to measure (native only where the extension imports)",
    )
    parser.add_argument("--run-official", metavar="SERVER", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.run_official:
        run_official(options.run_official, options.rounds)
        return 0

    sink = Sink()
    env = {**os.environ, "PYTHONMALLOC": options.pythonmalloc}
    common = [sys.executable, APP, "--rounds", str(options.rounds)]
    variants = [overhead.Variant("no SDK", [*common, "--no-profiling"], env)]
    samplers = ["native", "python"] if options.sampler == "both" else [options.sampler]
    if "native" in samplers and not native_loads(env):
        print("the native sampler (_kiln_native) does not import: leaving it out", file=sys.stderr)
        samplers.remove("native")
    for sampler in samplers:
        variants.append(
            overhead.Variant(
                f"kiln SDK, {sampler} sampler",
                [*common, "--server", sink.url, "--mode", options.mode, "--print-stats"],
                {**env, "KILN_SAMPLER": sampler},
            )
        )
    official = None
    if not options.no_official:
        try:
            from importlib.metadata import version

            official = version("pyroscope-io")
        except Exception:
            print("pyroscope-io is not installed: comparing without it", file=sys.stderr)
    if official:
        variants.append(
            overhead.Variant(
                f"pyroscope-io {official}",
                [sys.executable, os.path.abspath(__file__), "--rounds", str(options.rounds),
                 "--run-official", sink.url],
                env,
            )
        )
    overhead.measure(variants, options.repeat)
    sink.close()

    sdk_cpu = {}
    for v in variants:
        natives = {s.get("native_sampler") for s in map(sdk_stats, v.runs) if s is not None}
        if "native" in v.name and natives != {1}:
            print(f"{v.name}: the native sampler did not run in every run", file=sys.stderr)
        values = [c for c in map(sdk_threads_cpu, v.runs) if c is not None]
        if values:
            share = statistics.median(values) / v.median("wall")
            sdk_cpu[v.name] = f"{statistics.median(values):.3f} s = {share:.2%} of a core"
            # per tick: a loaded machine gives fewer ticks, which lowers the share above
            per_tick = [
                s["sampler_cpu_ms"] * 1000 / s["ticks"]
                for s in map(sdk_stats, v.runs)
                if s is not None and s.get("ticks")
            ]
            if per_tick:
                sdk_cpu[v.name] += f", {statistics.median(per_tick):.0f} µs per tick"
                handed = [
                    s["main_thread_ticks"] / s["ticks"]
                    for s in map(sdk_stats, v.runs)
                    if s is not None and s.get("ticks")
                ]
                sdk_cpu[v.name] += f" ({statistics.median(handed):.0%} in the main thread)"
    print(
        f"python {sys.version.split()[0]}, PYTHONMALLOC={options.pythonmalloc},"
        f" {options.rounds} rounds, mode {options.mode}, median of {options.repeat}"
    )
    print(overhead.table(variants, {"SDK threads' own CPU": sdk_cpu}))
    print(f"{sink.requests} uploads, {sink.bytes / 1024:.1f} KiB received by the sink")
    return 0


if __name__ == "__main__":
    sys.exit(main())
