#!/usr/bin/env bash
# Java agent: unit tests and jar (Maven), then the example app with -javaagent against a real
# daemon with auth on, pushing with a writer key (authToken=) and checked through /render,
# /label-values and /api/apps with a reader key; the same push without the key must get 401.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
(cd "$here" && mvn -q -B package)

work=$(mktemp -d)
trap 'kill $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln_auth "$kiln" "$work/data"
java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,tags=env:e2e,uploadInterval=3,authToken=$kiln_write_key" \
  "$root/examples/java-app/JavaApp.java" 12
python3 - "$kiln_url" "$kiln_read_key" <<'PY'
import json, sys, urllib.parse, urllib.request
base, key = sys.argv[1:3]
def get(path, **params):
    req = urllib.request.Request(base + path + "?" + urllib.parse.urlencode(params))
    req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req) as r:
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
before=$(kiln_unauthenticated)
KILN_AUTH_TOKEN= java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,tags=env:nokey,uploadInterval=2" \
  "$root/examples/java-app/JavaApp.java" 4 >/dev/null 2>&1 || true
after=$(kiln_unauthenticated)
((after > before)) || { echo "sdk/java: the push without a key was not refused ($before → $after)"; exit 1; }
echo "sdk/java: pushes without a key refused with 401 ($((after - before)))"
