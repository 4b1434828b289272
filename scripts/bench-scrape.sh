#!/usr/bin/env bash
# Pull mode at scale: one Go program serving net/http/pprof on TARGETS ports (a CPU-burning,
# allocating, lock-contending workload), one Kiln scraping all of them every INTERVAL with the
# default profiles (cpu, heap, goroutine, mutex, block), for SECONDS_TO_RUN. Go runs one CPU
# profile at a time, so the program records one every 5 s and serves the latest to every
# target (after the requested seconds). Reports the daemon's CPU (user+system seconds, and
# cores used on average), its RSS at the end and its peak RSS (goal: under 256 MB), the targets
# by health and the scrapes by outcome.
#
#   TARGETS=200 INTERVAL=15s SECONDS_TO_RUN=120 scripts/bench-scrape.sh
#   KILN_BIN=path/to/kiln …   # use this binary instead of building a release one
set -euo pipefail
cd "$(dirname "$0")/.."
targets=${TARGETS:-200}
interval=${INTERVAL:-15s}
secs=${SECONDS_TO_RUN:-120}
tgt=${CARGO_TARGET_DIR:-target}
if [ -z "${KILN_BIN:-}" ]; then
  cargo build --release -p kiln >/dev/null
  KILN_BIN=$tgt/release/kiln
fi
work=$(mktemp -d)
trap 'kill ${kiln_pid:-} ${go_pid:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

(cd daemon/tests/scrape-target && go build -o "$work/scrape-target" .)
ports=$(python3 - "$targets" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)
addrs=$(for p in $ports; do printf '127.0.0.1:%s,' "$p"; done)
"$work/scrape-target" -shared-cpu 5s -addrs "${addrs%,}" 2>"$work/go.log" &
go_pid=$!

listen=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  echo '[[scrape_configs]]'
  echo 'job_name = "bench"'
  echo "scrape_interval = \"$interval\""
  echo '[[scrape_configs.static_configs]]'
  printf 'targets = ['
  for p in $ports; do printf '"127.0.0.1:%s",' "$p"; done
  echo ']'
} >"$work/kiln.toml"
"$KILN_BIN" server --config "$work/kiln.toml" --listen "127.0.0.1:$listen" \
  --storage-path "$work/data" --self-profiling false --log-level warn 2>"$work/kiln.log" &
kiln_pid=$!
url="http://127.0.0.1:$listen"
for _ in $(seq 1000); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.02; done
curl -sf "$url/healthz" >/dev/null || { echo "kiln did not start:" >&2; cat "$work/kiln.log" >&2; exit 1; }

ticks=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$ticks" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$kiln_pid/stat"; }
cpu0=$(cpu_seconds)
sleep "$secs"
cpu1=$(cpu_seconds)
rss=$(awk '/VmRSS/ { print int($2 / 1024) }' "/proc/$kiln_pid/status")
hwm=$(awk '/VmHWM/ { print int($2 / 1024) }' "/proc/$kiln_pid/status")
health=$(curl -sf "$url/api/targets" | python3 -c '
import json, sys, collections
d = json.load(sys.stdin)
c = collections.Counter(t["health"] for t in d["targets"])
print(" ".join(f"{k}={v}" for k, v in sorted(c.items())))')
echo "targets=$targets interval=$interval seconds=$secs"
awk -v a="$cpu0" -v b="$cpu1" -v s="$secs" 'BEGIN { printf "kiln cpu_seconds=%.2f cores=%.3f\n", b - a, (b - a) / s }'
echo "kiln rss_mb=$rss peak_rss_mb=$hwm (goal < 256)"
echo "targets by health: $health"
curl -sf "$url/metrics" | grep '^kiln_scrapes_total' || true
