#!/usr/bin/env bash
# Conformance against the reference parsers: builds the Go harness (github.com/google/pprof and
# github.com/grafana/jfr-parser, from the Go module proxy), starts a fresh daemon ($KILN_BIN) on
# a free loopback port, pushes every file of corpus/manifest.json as an agent would and compares
# /render with what the reference parsers compute. See README.md.
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

(cd "$here" && go build -o "$work/conformance" .) || { echo "building the harness failed"; exit 1; }
start_kiln "$kiln" "$work/data" || exit 1
"$work/conformance" -kiln "$kiln_url" -manifest "$here/corpus/manifest.json" "$@"
status=$?
# Bad input is skipped and counted, never a 500: the corpus leaves its counts in /metrics.
if ! curl -sf "$kiln_url/metrics" | grep -q '^kiln_decode_skipped_total{'; then
  echo "FAIL /metrics has no kiln_decode_skipped_total"
  status=1
fi
exit $status
