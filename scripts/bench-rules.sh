#!/usr/bin/env bash
# Cost of [metrics_rules] at ingest: the load generator replays the Go CPU fixture against a
# daemon with no rules, then against one with 20 rules (selectors, function regexes, group_by),
# and prints both throughputs and the cost in %.
#
#   SECONDS_TO_RUN  seconds per run (default 20)    SERIES       series (default 200)
#   CONCURRENCY     loadgen connections (default 4)  BUILD=debug  use the debug build
#   NO_BUILD=1      use the binaries already built
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench.sh

profile=${BUILD:-release}
if [[ -n ${NO_BUILD:-} ]]; then
  :
elif [[ $profile == release ]]; then
  cargo build --release -p kiln -p kiln-loadgen
else
  # The workspace build the test command makes: nothing rebuilt with other features.
  cargo build --workspace --locked
fi
bin=${CARGO_TARGET_DIR:-target}/$profile
work=$(mktemp -d)
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT

# 20 rules as a busy installation might write them: every one selects the fixture's series,
# half filter on a function, some group by a label.
rules=$work/rules.toml
: >"$rules"
for i in $(seq 1 20); do
  {
    echo "[metrics_rules.r$i]"
    echo "query = 'loadgen.cpu{service_name=~\"loadgen.*\"}'"
    ((i % 2 == 0)) && echo "function = 'runtime\\..*|main\\.f$i.*'"
    ((i % 4 == 1)) && echo 'value = "self"'
    ((i % 3 == 0)) && echo 'group_by = ["pod"]'
    echo
  } >>"$rules"
done

# One run: prints profiles/s.
run() {
  local config=$1 data port out
  data=$(mktemp -d -p "$work")
  port=$(free_port)
  "$bin/kiln" server --config "$config" --listen "127.0.0.1:$port" --storage-path "$data" \
    --self-profiling false --log-level warn &
  pid=$!
  wait_http "http://127.0.0.1:$port/healthz" 60
  out=$("$bin/kiln-loadgen" --url "http://127.0.0.1:$port" --series "${SERIES:-200}" \
    --concurrency "${CONCURRENCY:-4}" --seconds "${SECONDS_TO_RUN:-20}" --pid "$pid")
  echo "$out" >&2
  curl -sf "http://127.0.0.1:$port/metrics" | grep -c '^kiln_profile_r' >&2 || true
  stop_timed "$pid"
  pid=
  echo "$out" | sed -n 's/.* = \([0-9.]*\) profiles\/s.*/\1/p' | head -1
}

echo "== 0 rules" >&2
base=$(run /dev/null)
echo "== 20 rules" >&2
with=$(run "$rules")
python3 - "$base" "$with" <<'PY'
import sys
base, with_rules = float(sys.argv[1]), float(sys.argv[2])
print(f"ingest: {base:.0f} profiles/s with 0 rules, {with_rules:.0f} with 20 rules: "
      f"cost {100 * (base - with_rules) / base:.1f} %")
PY
