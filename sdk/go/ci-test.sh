#!/usr/bin/env bash
# Go SDK: vet and unit tests, then the example app against a real daemon, checked via /render.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }

(cd "$here" && go vet ./... && go test -count=1 ./...)

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$kiln" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
"$work/go-app" -server "http://127.0.0.1:$port" -duration 8s -upload-rate 2s -tag env=e2e
python3 "$here/e2e_check.py" "http://127.0.0.1:$port"
