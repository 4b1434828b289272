"""Runs a workload without and with profilers and prints their CPU and memory cost in one table.

usage: overhead.py [--repeat N] [--name NAME ...] '<command without profiling>' '<command with
       a profiler>' ['<command with another profiler>' ...]

The first command is the baseline. The commands run in turns (baseline, variant 1, variant 2,
baseline, …) so that a change in the machine's load hits all of them alike; each figure is the
median of its runs. CPU is user+sys of the child and everything it waited for, max RSS its
peak resident set (both from wait4). With a fixed amount of work the extra CPU is the profiler's
cost; with a time-bound workload it is only a lower bound when the machine is busy (a busy main
thread gets less CPU when something else takes it).

A workload may instead warm up for a fixed time and then print `steady-cpu-seconds: S` (its
own CPU time over a fixed amount of work after the warm-up) and `startup-cpu-seconds: U` (CPU
time before that, less what its warm-up work costs at the steady rate). Its whole run is then
not a fixed amount of work, so the table compares those two instead: the steady-state cost of a
profiler that runs for long (in %) and its one-time start-up cost (in CPU seconds).

The noise floor is half the spread (max − min) of the baseline's own runs: a difference below it
is not a measurement. Environment variables go in front as `env NAME=VALUE command`.

With --paired (two CPUs or more), each variant instead runs at the same time as a run of the
baseline, each pinned to a CPU of its own (each variant on the other CPU in the next round), and
each figure is the median of the per-pair differences. Whatever slows the machine down during a
pair (another tenant, the clock) slows both alike, so the pair's difference keeps only the
profiler's cost: on a 2-vCPU VM whose CPU time for a fixed job drifts by 5 % from one run to the
next, two baseline runs side by side differ by 0.0–1.2 %. One CPU may run a fixed job ~1 %
slower than the other, so each variant changes CPU from round to round: give an even --repeat.
Each round also runs the baseline beside itself: the spread of those differences is the noise
floor.

Importable: :func:`measure` and :func:`table` are what the per-language scripts build on.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    cpu: float  # user + sys seconds
    wall: float
    max_rss_mb: float
    output: str = ""
    steady_cpu: float | None = None  # from the workload's `steady-cpu-seconds:` line, if any
    startup_cpu: float | None = None  # from its `startup-cpu-seconds:` line, if any


@dataclass
class Variant:
    name: str
    command: list[str]
    env: dict[str, str] | None = None
    runs: list[Run] = field(default_factory=list)

    def has(self, attr: str) -> bool:
        return bool(self.runs) and all(getattr(r, attr) is not None for r in self.runs)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def half_spread(self, attr: str) -> float:
        values = [getattr(r, attr) for r in self.runs]
        return (max(values) - min(values)) / 2


def reported(output: str, name: str) -> float | None:
    """The value of a `NAME: SECONDS` line printed by the workload."""
    found = re.search(rf"^{name}: (-?[0-9.]+)\s*$", output, re.MULTILINE)
    return float(found.group(1)) if found else None


class RunFailed(Exception):
    pass


def run_once(command: list[str], env: dict[str, str] | None = None, cpu: int | None = None) -> Run:
    """One run, on CPU ``cpu`` alone if given; raises RunFailed (with the end of its stderr) if
    the command fails."""
    started = time.monotonic()
    pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env, preexec_fn=pin)
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
        # wait4 rather than wait: it returns the child's own CPU time and peak RSS.
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace").strip().splitlines()[-10:]
            raise RunFailed(f"{shlex.join(command)!r} exited with {code}:\n  " + "\n  ".join(tail))
    rss_kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return Run(
        usage.ru_utime + usage.ru_stime,
        wall,
        rss_kib / 1024,
        output,
        reported(output, "steady-cpu-seconds"),
        reported(output, "startup-cpu-seconds"),
    )


def measure(variants: list[Variant], repeat: int) -> None:
    """Runs every variant ``repeat`` times, in turns; results go to ``variant.runs``.

    A failed run is reported and left out (the table shows how many runs counted); a baseline
    that fails stops the measurement.
    """
    for i in range(repeat):
        for v in variants:
            try:
                run = run_once(v.command, v.env)
            except RunFailed as failure:
                if v is variants[0]:
                    sys.exit(str(failure))
                print(f"  [{i + 1}/{repeat}] {v.name}: failed, left out: {failure}", file=sys.stderr)
                continue
            v.runs.append(run)
            steady = "" if run.steady_cpu is None else (
                f" ({run.steady_cpu:.2f} s after warm-up, start-up {run.startup_cpu} s)"
            )
            print(
                f"  [{i + 1}/{repeat}] {v.name}: {run.cpu:.2f} s CPU{steady}, {run.wall:.2f} s wall,"
                f" max RSS {run.max_rss_mb:.0f} MB",
                file=sys.stderr,
            )


@dataclass
class Pair:
    """A variant's run and the baseline's run made at the same time on the other CPU."""

    variant: Run
    baseline: Run


def run_pair(a: Variant, b: Variant, cpus: tuple[int, int]) -> tuple[Run, Run]:
    """Runs ``a`` on ``cpus[0]`` and ``b`` on ``cpus[1]`` at the same time."""
    results: dict[int, Run | RunFailed] = {}

    def one(i: int, v: Variant) -> None:
        try:
            results[i] = run_once(v.command, v.env, cpus[i])
        except RunFailed as failure:
            results[i] = failure

    threads = [threading.Thread(target=one, args=(i, v)) for i, v in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        if isinstance(results[i], RunFailed):
            raise results[i]
    return results[0], results[1]  # type: ignore[return-value]


def two_cpus() -> tuple[int, int]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit("--paired needs two CPUs")
    return cpus[0], cpus[1]


def measure_paired(variants: list[Variant], repeat: int) -> dict[str, list[Pair]]:
    """Each round runs every variant beside the baseline (and the baseline beside itself, the
    noise floor), the two on CPUs of their own, each variant on the other CPU in the next
    round. Returns the pairs by variant name; every run also goes to ``variant.runs``."""
    base = variants[0]
    cpu_a, cpu_b = two_cpus()
    pairs: dict[str, list[Pair]] = {v.name: [] for v in variants}
    for i in range(repeat):
        for j, v in enumerate(variants):
            # Each variant changes CPU from one round to the next (two CPUs of one VM need not
            # run alike: give an even --repeat), and neighbours differ within a round.
            cpus = (cpu_a, cpu_b) if (i + j) % 2 == 0 else (cpu_b, cpu_a)
            try:
                run, beside = run_pair(v, base, cpus)
            except RunFailed as failure:
                if v is base:
                    sys.exit(str(failure))
                print(f"  [{i + 1}/{repeat}] {v.name}: failed, left out: {failure}", file=sys.stderr)
                continue
            v.runs.append(run)
            pairs[v.name].append(Pair(run, beside))
            attr = "steady_cpu" if run.steady_cpu is not None else "cpu"
            print(
                f"  [{i + 1}/{repeat}] {v.name} on CPU {cpus[0]}: {getattr(run, attr):.2f} s CPU,"
                f" beside the baseline's {getattr(beside, attr):.2f} s; max RSS {run.max_rss_mb:.0f}"
                f" against {beside.max_rss_mb:.0f} MB",
                file=sys.stderr,
            )
    return pairs


def paired_table(variants: list[Variant], pairs: dict[str, list[Pair]]) -> str:
    """Median and half spread of the per-pair differences, variant by variant; the baseline's
    row is the baseline beside itself."""
    base = variants[0]
    steady = all(p.variant.steady_cpu is not None and p.baseline.steady_cpu is not None
                 for ps in pairs.values() for p in ps)
    cpu_attr = "steady_cpu" if steady else "cpu"

    def spread(values: list[float], fmt: str) -> str:
        half = fmt.replace("+", "").format((max(values) - min(values)) / 2)
        return f"{fmt.format(statistics.median(values))} ± {half}"

    head = ["variant", "pairs", "CPU s after warm-up" if steady else "CPU s", "vs the baseline beside it"]
    head += ["start-up CPU vs beside"] if steady else []
    head += ["max RSS MB", "RSS vs beside"]
    rows = [head]
    for v in variants:
        ps = pairs.get(v.name) or []
        if not ps:
            continue
        cpu = [100 * (getattr(p.variant, cpu_attr) - getattr(p.baseline, cpu_attr)) / getattr(p.baseline, cpu_attr)
               for p in ps]
        row = [v.name + (" (beside itself: the noise)" if v is base else ""), str(len(ps)),
               f"{v.median(cpu_attr):.2f}", spread(cpu, "{:+.1f} %")]
        if steady:
            row.append(spread([p.variant.startup_cpu - p.baseline.startup_cpu for p in ps], "{:+.2f} s"))
        row += [f"{v.median('max_rss_mb'):.0f}", spread([p.variant.max_rss_mb - p.baseline.max_rss_mb for p in ps],
                                                        "{:+.0f} MB")]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("each figure: the median of the per-pair differences ± half their spread; the baseline's"
                 " own row is the noise floor")
    lines += [f"{v.name}: every run failed" for v in variants if not pairs.get(v.name)]
    return "\n".join(lines)


def table(variants: list[Variant], extra: dict[str, dict[str, str]] | None = None) -> str:
    """The comparison table; ``extra[column][variant name]`` adds columns."""
    failed = [v.name for v in variants if not v.runs]
    variants = [v for v in variants if v.runs]
    base = variants[0]
    steady = all(v.has("steady_cpu") and v.has("startup_cpu") for v in variants)
    cpu_attr = "steady_cpu" if steady else "cpu"
    base_cpu, base_rss = base.median(cpu_attr), base.median("max_rss_mb")
    head = ["variant", "runs"]
    head += ["CPU s after warm-up", "vs baseline", "start-up CPU s", "vs baseline"] if steady else [
        "CPU s", "CPU vs baseline"]
    head += ["max RSS MB", "RSS vs baseline", *(extra or {})]
    rows = [head]
    for v in variants:
        cpu, rss = v.median(cpu_attr), v.median("max_rss_mb")
        first = v is base
        row = [v.name, str(len(v.runs))]
        row += [
            f"{cpu:.2f} ± {v.half_spread(cpu_attr):.2f}",
            "—" if first else f"{100 * (cpu - base_cpu) / base_cpu:+.1f} %",
        ]
        if steady:
            up = v.median("startup_cpu")
            row += [
                f"{up:.2f} ± {v.half_spread('startup_cpu'):.2f}",
                "—" if first else f"{up - base.median('startup_cpu'):+.2f} s",
            ]
        row += [
            f"{rss:.0f} ± {v.half_spread('max_rss_mb'):.0f}",
            "—" if first else f"{rss - base_rss:+.0f} MB",
            *(col.get(v.name, "") for col in (extra or {}).values()),
        ]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    noise_cpu = 100 * base.half_spread(cpu_attr) / base_cpu if base_cpu else 0.0
    startup_noise = f", ±{base.half_spread('startup_cpu'):.2f} s start-up CPU" if steady else ""
    lines.append(
        f"noise floor (half the spread of the baseline's {len(base.runs)} runs):"
        f" ±{noise_cpu:.1f} % CPU{' after warm-up' if steady else ''}{startup_noise},"
        f" ±{base.half_spread('max_rss_mb'):.0f} MB RSS"
        + ("" if len(base.runs) > 1 else " — one run has no noise floor; use --repeat 3 or more")
    )
    lines += [f"{name}: every run failed" for name in failed]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (median kept)")
    parser.add_argument("--paired", action="store_true",
                        help="run each variant beside a baseline run, each on a CPU of its own")
    parser.add_argument("--name", action="append", default=[], help="name of each command, in order")
    parser.add_argument("commands", nargs="+", help="baseline command, then one per profiler")
    args = parser.parse_args()
    if len(args.commands) < 2:
        parser.error("give a baseline command and at least one command with profiling")
    default = ["without profiling", "with profiling"] if len(args.commands) == 2 else []
    names = [
        (args.name[i] if i < len(args.name) else default[i] if i < len(default) else f"variant {i}")
        for i in range(len(args.commands))
    ]
    variants = [Variant(n, shlex.split(c)) for n, c in zip(names, args.commands)]
    if args.paired:
        pairs = measure_paired(variants, max(1, args.repeat))
        print(paired_table(variants, pairs))
    else:
        measure(variants, max(1, args.repeat))
        print(table(variants))


if __name__ == "__main__":
    main()
