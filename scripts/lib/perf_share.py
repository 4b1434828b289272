"""A profiler's CPU cost from where the workload's own CPU goes, sampled with `perf record`.

usage: perf_share.py [--repeat N] [--warmup S] [--seconds S] [--code DSO] [--name NAME ...]
       '<command without profiling>' '<command with a profiler>' ...

Each command must keep working for longer than warm-up + seconds (it is stopped after). Once
warmed up, `perf record` samples the whole process (every thread) for the given seconds, and
the share of the samples in the workload's own code (--code, a prefix of perf's "dso" column:
`[JIT]` for a JVM's compiled Java code) is read from `perf report`. Whatever a profiler adds,
in the process's threads or the JVM's hooks on the application's threads, shrinks that share;
the cost relative to the workload is then share(baseline) / share(variant) - 1.

Why not time: on a shared VM the CPU time of a fixed job drifts by several per cent between
runs, and a profiler's cost of 1 % is lost in it; a share inside one run is immune to how fast
the machine runs meanwhile. It also sees through stalls that merely move: a JVM hook that
waits for the stores of the array it follows (a `lock xadd` after a 16 KiB memset) takes
samples that, without it, land in the allocation itself; both are outside the workload's code,
so the share is unchanged and no cost is counted. Agent code that runs as compiled Java (its
uploads) counts as the workload's and is not seen: measure agent threads separately if they
matter (bench-overhead.sh's whole-process figures include them).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time


def code_share(report: str, prefix: str) -> float:
    """Percent of the samples whose dso starts with ``prefix``, from `perf report --sort dso`."""
    total = 0.0
    for line in report.splitlines():
        found = re.match(r"^\s*([0-9.]+)%\s+(.*?)\s*$", line)
        if found and found.group(2).startswith(prefix):
            total += float(found.group(1))
    return total


def sample(command: list[str], warmup: float, seconds: float, prefix: str) -> float:
    """Runs the command, samples it after the warm-up, stops it; returns its code share in %."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(warmup)
        if proc.poll() is not None:
            raise SystemExit(f"{shlex.join(command)!r} ended during the warm-up:\n"
                             + proc.stderr.read().decode(errors="replace")[-2000:])
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            subprocess.run(["perf", "record", "-q", "-F", "1999", "-p", str(proc.pid), "-o", data,
                            "--", "sleep", str(seconds)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            if proc.poll() is not None:
                raise SystemExit(f"{shlex.join(command)!r} ended while sampled: give it more work")
            report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio"],
                                    check=True, capture_output=True, text=True).stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    share = code_share(report, prefix)
    if share <= 0:
        raise SystemExit(f"no samples in {prefix!r} for {shlex.join(command)!r}:\n{report[-2000:]}")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=12, help="seconds before sampling")
    parser.add_argument("--seconds", type=float, default=20, help="seconds sampled")
    parser.add_argument("--code", default="[JIT]", help="dso prefix of the workload's own code")
    parser.add_argument("--name", action="append", default=[])
    parser.add_argument("commands", nargs="+")
    args = parser.parse_args()
    if len(args.commands) < 2:
        parser.error("give a baseline command and at least one command with profiling")
    names = [args.name[i] if i < len(args.name) else f"variant {i}" for i in range(len(args.commands))]
    shares: dict[str, list[float]] = {n: [] for n in names}
    for i in range(max(1, args.repeat)):
        for name, command in zip(names, args.commands):
            share = sample(shlex.split(command), args.warmup, args.seconds, args.code)
            shares[name].append(share)
            print(f"  [{i + 1}/{args.repeat}] {name}: {share:.2f} % of samples in {args.code}", file=sys.stderr)
    # Each run is compared with the baseline's run of the same round: the share drifts a little
    # from round to round (compilation, placement), alike for every variant of a round.
    base_runs = shares[names[0]]
    rows = [["variant", "runs", f"share in {args.code}", "cost vs the round's baseline"]]
    for name in names:
        values = shares[name]
        costs = [100 * (b / v - 1) for b, v in zip(base_runs, values)]
        rows.append([name, str(len(values)),
                     f"{statistics.median(values):.2f} % ± {(max(values) - min(values)) / 2:.2f}",
                     "—" if name == names[0] else f"{statistics.median(costs):+.2f} % ± {(max(costs) - min(costs)) / 2:.2f}"])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"the baseline's share moved by ±{(max(base_runs) - min(base_runs)) / 2:.2f} points over"
                 f" {len(base_runs)} rounds; cost = median over rounds of share(baseline) / share(variant) - 1")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
