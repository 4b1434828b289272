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
app="$work/go-app -server http://127.0.0.1:$port -duration ${DURATION:-20s}"
python3 "$root/scripts/lib/overhead.py" "$app -no-profiling" "$app"
