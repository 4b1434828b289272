#!/usr/bin/env bash
# The official Pyroscope agents (Go, Python, Java, Node.js, Rust), installed from their registries as users install them, pushing
# unchanged to a real Kiln daemon; each case asserts its function, tags and profile types come
# back through /render, /label-values and /api/apps.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$root/scripts/lib/daemon.sh"

# Starts a fresh daemon; sets $url and $pid.
daemon() {
  start_kiln "$kiln" "$work/data-$1" && url=$kiln_url && pid=$kiln_pid
}

go_agent() {
  (cd "$here/go" && go build -o "$work/agent-go" .) &&
    "$work/agent-go" -server "$url" -duration 12s 2>/dev/null &&
    python3 "$here/check.py" "$url" agent-go pyroscopeBurn phase=burn cpu alloc_space inuse_space goroutines
}

python_agent() {
  python3 -m venv "$work/venv" &&
    "$work/venv/bin/pip" install --quiet pyroscope-io==1.4.0 &&
    "$work/venv/bin/python" "$here/python/workload.py" "$url" 12 &&
    python3 "$here/check.py" "$url" agent-python pyroscope_burn phase=burn cpu
}

java_agent() {
  mvn -q -B dependency:copy -Dartifact=io.pyroscope:agent:2.1.2 -DoutputDirectory="$work" &&
    javac -d "$work/classes" "$here/java/PyroscopeJavaWorkload.java" &&
    PYROSCOPE_APPLICATION_NAME=agent-java PYROSCOPE_SERVER_ADDRESS="$url" PYROSCOPE_UPLOAD_INTERVAL=3s \
      PYROSCOPE_LABELS="agent=pyroscope-java" PYROSCOPE_PROFILER_ALLOC=512k PYROSCOPE_PROFILER_LOCK=1ms \
      java "-javaagent:$work/agent-2.1.2.jar" -cp "$work/classes" PyroscopeJavaWorkload 12 &&
    python3 "$here/check.py" "$url" agent-java PyroscopeJavaWorkload.burn agent=pyroscope-java cpu
}

node_agent() {
  (cd "$here/node" && npm ci --no-audit --no-fund --silent) &&
    node "$here/node/workload.js" "$url" 12 &&
    python3 "$here/check.py" "$url" agent-node pyroscopeNodeBurn agent=pyroscope-nodejs wall wall_samples inuse_space
}

rust_agent() {
  # Its own target dir under the workspace's, kept between runs: the first build takes minutes.
  CARGO_TARGET_DIR="$root/target/compat-agent-rust" cargo build --quiet --manifest-path "$here/rust/Cargo.toml" &&
    "$root/target/compat-agent-rust/debug/kiln-compat-rust-agent" "$url" 12 &&
    python3 "$here/check.py" "$url" agent-rust pyroscope_rust_burn agent=pyroscope-rs cpu
}

passed=0
failed=0
for agent in go python java node rust; do
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
