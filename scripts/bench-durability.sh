#!/usr/bin/env bash
# What the write-ahead log costs and what a crash costs (release build, loopback only):
#   1. ingest throughput and latency with the log off, then on (same load: the Go CPU fixture,
#      200 series, timestamps spread over the last 24 h, 4 connections, as fast as accepted);
#   2. the log's size on disk while that load runs (steady state);
#   3. recovery: the same load, `kill -9` after SECONDS_TO_RUN/2, restart on the same data dir,
#      time until /healthz answers (the replay happens before the daemon listens).
#
#   SECONDS_TO_RUN=15 scripts/bench-durability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECONDS_TO_RUN:-15}
cargo build --release -p kiln -p kiln-loadgen >/dev/null
. scripts/lib/daemon.sh
work=$(mktemp -d)
trap 'kill -9 ${kiln_pid:-} ${load_pid:-} 2>/dev/null; rm -rf "$work"' EXIT

load() { # url pid seconds json
  ./target/release/kiln-loadgen --url "$1" --pid "$2" --seconds "$3" --series 200 \
    --concurrency 4 --spread 24h --json "$4" >/dev/null
}
summary() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(f"{k}={d[k]}" for k in sys.argv[2:] if k in d))' "$@"; }

for wal in false true; do
  data="$work/wal-$wal"
  KILN_WAL_ENABLED=$wal start_kiln ./target/release/kiln "$data"
  max_wal=0
  load "$kiln_url" "$kiln_pid" "$secs" "$work/$wal.json" &
  load_pid=$!
  while kill -0 "$load_pid" 2>/dev/null; do
    if [[ -d $data/wal ]]; then
      size=$(du -sb "$data/wal" | cut -f1)
      ((size > max_wal)) && max_wal=$size
    fi
    sleep 0.5
  done
  wait "$load_pid"
  echo "wal.enabled=$wal: $(summary "$work/$wal.json" accepted_per_s p50_ms p99_ms server_cpu_ms_per_profile server_vmhwm_kb refused_503) log on disk, peak: $((max_wal / 1024)) KiB"
  kill -TERM "$kiln_pid"; wait "$kiln_pid" || true
done

data="$work/crash"
start_kiln ./target/release/kiln "$data"
load "$kiln_url" "$kiln_pid" "$secs" "$work/crash.json" &
load_pid=$!
sleep $((secs / 2))
wal_bytes=$(du -sb "$data/wal" | cut -f1)
kill -9 "$kiln_pid"; wait "$kiln_pid" 2>/dev/null || true
wait "$load_pid" || true
t0=$(date +%s%N)
start_kiln ./target/release/kiln "$data"
echo "kill -9 under full load: log at the kill $((wal_bytes / 1024)) KiB; restart to /healthz $(( ($(date +%s%N) - t0) / 1000000 )) ms (replay included)"
kill -TERM "$kiln_pid"; wait "$kiln_pid" || true
