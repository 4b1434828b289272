#!/usr/bin/env bash
# The official Pyroscope agents (Go, Python, Java, Node.js, Rust), installed from their registries as users install them, pushing
# unchanged to a real Kiln daemon with auth on: each pushes with a writer API key (Bearer or
# Basic, as the agent offers) and its function, tags and profile types must come back through
# /render, /label-values and /api/apps; then the same agent pushes briefly without the key and
# the daemon must refuse it (401, counted in kiln_auth_refused_total{cause="unauthenticated"}).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$root/scripts/lib/daemon.sh"

# A fresh daemon with auth on and a writer and a reader key (scripts/lib/daemon.sh); sets $url,
# $pid, $write_key and $read_key.
daemon() {
  start_kiln_auth "$kiln" "$work/data-$1" &&
    url=$kiln_url && pid=$kiln_pid && write_key=$kiln_write_key && read_key=$kiln_read_key
}

# Pushes with the writer key, checks what came back; then runs the agent again without a key
# for a few seconds and expects the daemon to have refused it.
# usage: with_and_without_key RUN_FUNCTION CHECK_ARGS…
with_and_without_key() {
  local run=$1 before after
  shift
  KILN_AGENT_KEY=$write_key "$run" 12 &&
    KILN_READ_KEY=$read_key python3 "$here/check.py" "$url" "$@" || return 1
  before=$(kiln_unauthenticated)
  "$run" 5 >/dev/null 2>&1 || true
  after=$(kiln_unauthenticated)
  ((after > before)) || { echo "the push without a key was not refused with 401 ($before → $after)"; return 1; }
}

run_go() { "$work/agent-go" -server "$url" -duration "${1}s" 2>/dev/null; }
go_agent() {
  (cd "$here/go" && go build -o "$work/agent-go" .) &&
    with_and_without_key run_go agent-go pyroscopeBurn phase=burn cpu alloc_space inuse_space goroutines
}

run_python() { "$work/venv/bin/python" "$here/python/workload.py" "$url" "$1"; }
python_agent() {
  python3 -m venv "$work/venv" &&
    "$work/venv/bin/pip" install --quiet pyroscope-io==1.4.0 &&
    with_and_without_key run_python agent-python pyroscope_burn phase=burn cpu
}

# The Java agent reads its key from PYROSCOPE_AUTH_TOKEN (sent as Bearer).
run_java() {
  PYROSCOPE_AUTH_TOKEN=${KILN_AGENT_KEY:-} \
    PYROSCOPE_APPLICATION_NAME=agent-java PYROSCOPE_SERVER_ADDRESS="$url" PYROSCOPE_UPLOAD_INTERVAL=3s \
    PYROSCOPE_LABELS="agent=pyroscope-java" PYROSCOPE_PROFILER_ALLOC=512k PYROSCOPE_PROFILER_LOCK=1ms \
    java "-javaagent:$work/agent-2.1.2.jar" -cp "$work/classes" PyroscopeJavaWorkload "$1"
}
java_agent() {
  mvn -q -B dependency:copy -Dartifact=io.pyroscope:agent:2.1.2 -DoutputDirectory="$work" &&
    javac -d "$work/classes" "$here/java/PyroscopeJavaWorkload.java" &&
    with_and_without_key run_java agent-java PyroscopeJavaWorkload.burn agent=pyroscope-java cpu
}

run_node() { node "$here/node/workload.js" "$url" "$1"; }
node_agent() {
  (cd "$here/node" && npm ci --no-audit --no-fund --silent) &&
    with_and_without_key run_node agent-node pyroscopeNodeBurn agent=pyroscope-nodejs wall wall_samples inuse_space
}

# Its own target dir under the workspace's (or $KILN_AGENT_RUST_TARGET), kept between runs: the
# first build takes minutes.
rust_target=${KILN_AGENT_RUST_TARGET:-$root/target/compat-agent-rust}
run_rust() { "$rust_target/debug/kiln-compat-rust-agent" "$url" "$1"; }
rust_agent() {
  CARGO_TARGET_DIR="$rust_target" cargo build --quiet --manifest-path "$here/rust/Cargo.toml" &&
    with_and_without_key run_rust agent-rust pyroscope_rust_burn agent=pyroscope-rs cpu
}

passed=0
failed=0
for agent in ${KILN_AGENTS:-go python java node rust}; do
  if ! daemon "$agent"; then
    echo "FAIL $agent: daemon did not start"
    failed=$((failed + 1))
    continue
  fi
  if out=$("${agent}_agent" 2>&1); then
    echo "PASS $agent"
    passed=$((passed + 1))
  else
    echo "FAIL $agent: $(echo "$out" | tail -n 5)"
    failed=$((failed + 1))
  fi
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
done
echo "agents: $passed passed, $failed failed"
((failed == 0))
