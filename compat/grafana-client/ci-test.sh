#!/usr/bin/env bash
# Grafana's Pyroscope data source reads Kiln: the generated Connect clients of
# github.com/grafana/pyroscope/api (from the Go module proxy) against a fresh daemon ($KILN_BIN)
# on a free loopback port. See main.go for the checks.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
work=$(mktemp -d)
kiln_pid=
cleanup() {
  [[ -n $kiln_pid ]] && kill "$kiln_pid" 2>/dev/null && wait "$kiln_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

. "$root/scripts/lib/daemon.sh"

(cd "$here" && go mod download && go build -o "$work/grafana-client" .) || { echo "building the client failed"; exit 1; }
start_kiln "$kiln" "$work/data" || exit 1
"$work/grafana-client" -kiln "$kiln_url" -testdata "$root/testdata"
