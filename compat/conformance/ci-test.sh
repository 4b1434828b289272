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
# Line numbers survive storage: a real Go program's CPU profile, pushed and exported as pprof,
# builds the program with PGO, and `go tool pprof -lines` shows the same hot lines.
pgo_check() {
  (cd "$here" && go build -o "$work/pgo" ./pgo) &&
    "$work/pgo" -cpuprofile "$work/input.pprof" -duration 3s >/dev/null &&
    curl -sf -X POST -F "profile=@$work/input.pprof" \
      "$kiln_url/ingest?name=pgo-check.cpu&spyName=gospy&from=$(($(date +%s) - 10))&until=$(date +%s)" &&
    curl -sf -o "$work/export.pb.gz" \
      "$kiln_url/render?query=pgo-check.cpu%7B%7D&from=now-1h&until=now%2B1h&format=pprof" &&
    (cd "$here" && go build -pgo="$work/export.pb.gz" -o "$work/pgo-optimized" ./pgo) || return 1
  # The top lines by flat sample count, as `name file:line flat`.
  top_lines() {
    go tool pprof -lines -top -nodecount=5 "$@" 2>/dev/null |
      awk '/^ *flat/ {on=1; next} on && NF >= 7 {print $6, $7, $1}'
  }
  top_lines -sample_index=samples "$work/input.pprof" >"$work/input.top"
  top_lines "$work/export.pb.gz" >"$work/export.top"
  if [[ ! -s $work/input.top ]] || ! diff -u "$work/input.top" "$work/export.top"; then
    echo "FAIL pgo: the export's hot lines differ from the input's"
    return 1
  fi
  echo "ok   pgo: go build -pgo=<kiln export> succeeded; hot lines match:"
  sed 's/^/       /' "$work/input.top"
}
if ! pgo_check; then
  echo "FAIL pgo check"
  status=1
fi

# Bad input is skipped and counted, never a 500: the corpus leaves its counts in /metrics.
if ! curl -sf "$kiln_url/metrics" | grep -q '^kiln_decode_skipped_total{'; then
  echo "FAIL /metrics has no kiln_decode_skipped_total"
  status=1
fi
exit $status
