"""Runs a workload command without and with profiling and prints the CPU and memory difference.

usage: overhead.py '<command without profiling>' '<command with profiling>'

CPU is user+sys of the child (getrusage); the workloads are time-bound, so extra CPU is the
profiler's cost. Max RSS is read per run from /proc while the child lives.
"""
import resource
import shlex
import subprocess
import sys
import time


def run(command):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(shlex.split(command), stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        sys.exit(f"{command!r} exited with {proc.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, peak / 1024


base_cpu, base_rss = run(sys.argv[1])
prof_cpu, prof_rss = run(sys.argv[2])
print(f"without profiling: {base_cpu:.2f} s CPU, max RSS {base_rss:.0f} MB")
print(f"with profiling:    {prof_cpu:.2f} s CPU, max RSS {prof_rss:.0f} MB")
print(f"overhead:          {100 * (prof_cpu - base_cpu) / base_cpu:+.2f} % CPU, {prof_rss - base_rss:+.0f} MB RSS")
