#!/usr/bin/env bash
# CPU and memory overhead of the Go SDK on the example workload: the same 20 s run without and
# with profiling (default rates, uploading to a real daemon), user+sys CPU and max RSS of each.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$kiln" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
python3 - "$work/go-app" "http://127.0.0.1:$port" "${DURATION:-20s}" <<'PY'
import resource, subprocess, sys
app, server, duration = sys.argv[1:]
def run(*extra):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([app, "-server", server, "-duration", duration, *extra], check=True, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, after.ru_maxrss / 1024
base_cpu, base_rss = run("-no-profiling")
prof_cpu, prof_rss = run()
print(f"without SDK: {base_cpu:.2f} s CPU, max RSS {base_rss:.0f} MB")
print(f"with SDK:    {prof_cpu:.2f} s CPU, max RSS {prof_rss:.0f} MB")
print(f"overhead:    {100 * (prof_cpu - base_cpu) / base_cpu:+.2f} % CPU, {prof_rss - base_rss:+.0f} MB RSS")
PY
