#!/usr/bin/env bash
# Ingest benchmark: a release daemon on a fresh data dir, the load generator replaying the Go CPU
# fixture across 200 series for 15 s, then the daemon's CPU and peak RSS and the disk used.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p kiln -p kiln-loadgen
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/kiln --config /dev/null --listen "127.0.0.1:$port" --storage-path "$data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
./target/release/kiln-loadgen --url "http://127.0.0.1:$port" --series "${SERIES:-200}" --concurrency "${CONCURRENCY:-4}" --seconds "${SECONDS_TO_RUN:-15}" --pid "$pid"
kill -TERM $pid; wait $pid || true
echo "disk: $(du -sh "$data" | cut -f1)"
