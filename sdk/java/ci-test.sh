#!/usr/bin/env bash
# Java agent: unit tests and jar (Maven), then the example app with -javaagent against a real
# daemon, checked through /render, /label-values and /api/apps.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
(cd "$here" && mvn -q -B package)

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$kiln" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
java "-javaagent:$here/target/kiln-agent.jar=server=http://127.0.0.1:$port,app=java-app,tags=env:e2e,uploadInterval=3" \
  "$root/examples/java-app/JavaApp.java" 12
python3 - "http://127.0.0.1:$port" <<'PY'
import json, sys, urllib.parse, urllib.request
base = sys.argv[1]
def get(path, **params):
    with urllib.request.urlopen(base + path + "?" + urllib.parse.urlencode(params)) as r:
        return json.load(r)
r = get("/render", query='java-app.cpu{env="e2e"}', **{"from": "now-10m", "until": "now+1m"})
names = r["flamebearer"]["names"]
assert any(n.endswith("JavaApp.hashLoop") for n in names), f"hashLoop missing: {names[:30]}"
assert "e2e" in get("/label-values", label="env")
apps = {a["name"] for a in get("/api/apps")}
assert "java-app.cpu" in apps and "java-app.alloc_sample_bytes" in apps, sorted(apps)
alloc = get("/render", query='java-app.alloc_sample_bytes{env="e2e"}', **{"from": "now-10m", "until": "now+1m"})
assert any(n.endswith("JavaApp.allocLoop") for n in alloc["flamebearer"]["names"]), "allocLoop missing from allocations"
print("java e2e: 1 passed, 0 failed")
PY
