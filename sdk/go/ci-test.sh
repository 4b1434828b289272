#!/usr/bin/env bash
# Go SDK: vet and unit tests, then the example app against a real daemon, checked via /render.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }

(cd "$here" && go vet ./... && go test -count=1 ./...)

work=$(mktemp -d)
trap 'kill $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln "$kiln" "$work/data"
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
"$work/go-app" -server "$kiln_url" -duration 8s -upload-rate 2s -tag env=e2e
python3 "$here/e2e_check.py" "$kiln_url"
