#!/usr/bin/env bash
# Go SDK: vet and unit tests, then the example app against a real daemon with auth on, pushing
# with a writer key and checked via /render with a reader key; the same push without the key
# must be refused (401).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }

(cd "$here" && go vet ./... && go test -count=1 ./...)

work=$(mktemp -d)
trap 'kill $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln_auth "$kiln" "$work/data"
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
"$work/go-app" -server "$kiln_url" -duration 8s -upload-rate 2s -tag env=e2e -auth-token "$kiln_write_key"
KILN_READ_KEY=$kiln_read_key python3 "$here/e2e_check.py" "$kiln_url"
before=$(kiln_unauthenticated)
KILN_AUTH_TOKEN= "$work/go-app" -server "$kiln_url" -duration 3s -upload-rate 1s -tag env=nokey -auth-token "" 2>/dev/null
after=$(kiln_unauthenticated)
((after > before)) || { echo "sdk/go: the push without a key was not refused ($before → $after)"; exit 1; }
echo "sdk/go: pushes without a key refused with 401 ($((after - before)))"
