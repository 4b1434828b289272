#!/usr/bin/env bash
# CPU and memory overhead of the Go SDK on the example workload: the same run without and with
# profiling (default rates, uploading to a real daemon), user+sys CPU and max RSS of each, through
# scripts/lib/overhead.py.
#
#   DURATION  length of each run: a Go duration or seconds (default 20s)
#   REPEAT    runs of each variant, taking turns (default 1)
#   KILN_BIN  the daemon pushed to (default target/debug/kiln; any build: it is not measured)
#   OFFICIAL=1  adds the official agent, github.com/grafana/pyroscope-go (sdk/go/bench-official:
#             the same workload, profile types, upload interval and sampling rate), and the same
#             build without it; afterwards checks that the daemon stored both agents' profiles
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
official=${OFFICIAL:-0}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (set KILN_BIN or cargo build -p kiln)" >&2; exit 1; }
. "$root/scripts/lib/daemon.sh"
. "$root/scripts/lib/official-agent.sh"
work=$(mktemp -d)
kiln_pid=
trap '[[ -n $kiln_pid ]] && kill $kiln_pid 2>/dev/null && wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
if [[ $official == 1 ]]; then
  same_functions "$root/examples/go-app/main.go" "$here/bench-official/main.go" hashLoop allocLoop
  if ! log=$(cd "$here/bench-official" && go build -o "$work/go-app-official" . 2>&1); then
    echo "the official agent's variant (sdk/go/bench-official, github.com/grafana/pyroscope-go) could not be built:" >&2
    echo "$log" >&2
    exit 1
  fi
fi
start_kiln "$kiln" "$work/data"
duration=${DURATION:-20s}
[[ $duration == *[a-z] ]] || duration=${duration}s
app="$work/go-app -server $kiln_url -duration $duration"
names=(--name "no SDK" --name "kiln SDK")
commands=("$app -no-profiling" "$app")
if [[ $official == 1 ]]; then
  version=$(cd "$here/bench-official" && go list -m -f '{{.Version}}' github.com/grafana/pyroscope-go)
  agent="$work/go-app-official -server $kiln_url -duration $duration"
  names+=(--name "official pyroscope-go $version" --name "no agent (official's build)")
  commands+=("$agent" "$agent -no-profiling")
fi
python3 "$root/scripts/lib/overhead.py" --repeat "${REPEAT:-1}" "${names[@]}" "${commands[@]}"
if [[ $official == 1 ]] && ! check_stored "$kiln_url" go-app go-app-official; then
  echo "one agent's pushes were not stored; a short run of each with its log:" >&2
  "$work/go-app" -server "$kiln_url" -duration 3s -upload-rate 1s >&2 || true
  "$work/go-app-official" -server "$kiln_url" -duration 3s -upload-rate 1s >&2 || true
  exit 1
fi
