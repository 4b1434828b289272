#!/usr/bin/env bash
# CPU and memory overhead of the Rust SDK on the example workload: the same run (release build)
# without and with the agent pushing to a real daemon; user+sys CPU and max RSS of each.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p rust-app -p kiln
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/kiln --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
python3 - ./target/release/rust-app "http://127.0.0.1:$port" "${DURATION:-20}" <<'PY'
import resource, subprocess, sys
app, server, duration = sys.argv[1:]
def run(*extra):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([app, "--server", server, "--duration", duration, *extra], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, after.ru_maxrss / 1024
base_cpu, base_rss = run("--no-profiling")
prof_cpu, prof_rss = run()
print(f"without SDK: {base_cpu:.2f} s CPU, max RSS {base_rss:.0f} MB")
print(f"with SDK:    {prof_cpu:.2f} s CPU, max RSS {prof_rss:.0f} MB")
print(f"overhead:    {100 * (prof_cpu - base_cpu) / base_cpu:+.2f} % CPU, {prof_rss - base_rss:+.0f} MB RSS")
PY
