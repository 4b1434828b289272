#!/usr/bin/env bash
# Peak memory of the daemon under the loads that grow memory without bound in other servers:
# each scenario runs on a fresh release daemon (default settings, server.memory_limit 512 MiB)
# for SECONDS (default 60) through kiln-loadgen, then the daemon idles 60 s. Printed per scenario:
# what was accepted and refused, peak RSS (VmHWM), RSS after the idle minute.
#
#   scripts/bench-memory-limits.sh [SECONDS]
#
# Scenarios:
#   series-10k   10,000 series of the Go CPU fixture, timestamps spread over 24 h
#   stacks-1m    every request a new variant of the Go CPU fixture's 440 stacks (all function
#                names renamed per 10 s slot and series): about a million distinct stacks
#   jfr-10mb     a 10 MB JFR recording (30 chunks of testdata/java-jdk.jfr) in a loop
#   fleet-24h    the side-by-side mix (Go CPU, heap, goroutine, JFR), 200 series over 24 h
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p kiln -p kiln-loadgen >/dev/null
kiln_bin=$CARGO_TARGET_DIR/release/kiln
loadgen=$CARGO_TARGET_DIR/release/kiln-loadgen
. scripts/lib/daemon.sh
work=$(mktemp -d)
kiln_pid=''
trap '[[ -n $kiln_pid ]] && kill -KILL $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
big_jfr=$work/big.jfr
for _ in $(seq 30); do cat testdata/java-jdk.jfr; done >"$big_jfr"

rss() { awk -v k="$1:" '$1 == k { printf "%d MB", $2 / 1024 }' "/proc/$kiln_pid/status"; }

run() {
  local name=$1
  shift
  start_kiln "$kiln_bin" "$work/$name"
  echo "== $name"
  "$loadgen" --url "$kiln_url" --pid "$kiln_pid" --seconds "$secs" --concurrency 4 "$@" 2>&1 |
    grep -E "accepted|refused"
  echo "peak RSS (VmHWM): $(rss VmHWM)"
  sleep 60
  echo "RSS after 60 s idle: $(rss VmRSS)"
  kill -TERM "$kiln_pid"
  wait "$kiln_pid" || true
  kiln_pid=''
  rm -rf "${work:?}/$name"
}

run series-10k --series 10000 --spread 24h --app limits --file testdata/go-cpu.pb.gz
run stacks-1m --series 200 --spread 24h --churn 1 --churn-variants 8640 --app limits \
  --file testdata/go-cpu.pb.gz
run jfr-10mb --series 20 --app limits --file "$big_jfr"
run fleet-24h --series 200 --spread 24h --app limits \
  --file testdata/go-cpu.pb.gz --file testdata/go-heap.pb.gz --file testdata/go-goroutine.pb.gz \
  --file testdata/java-jdk.jfr@limits-java
