#!/usr/bin/env bash
# Java agent: unit tests and jar (Maven), then the example app with -javaagent against a real
# daemon with auth on, once with each engine (async-profiler, the default, and the JDK Flight
# Recorder fallback), pushing with a writer key (authToken=) and checked through /render,
# /label-values and /api/apps with a reader key; then the profile settings (CPU only stores no
# allocation series, a fixed allocInterval stores allocations, a bad value stops the start); the
# same push without the key must get 401.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }
(cd "$here" && mvn -q -B package)

work=$(mktemp -d)
# Let the daemon finish its shutdown flush before its data directory goes.
trap 'kill $kiln_pid 2>/dev/null; wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln_auth "$kiln" "$work/data"
# Each engine names its allocation profile after the JFR event it records. With async-profiler
# (the default) allocations come from Flight Recorder's sampler, uploaded in the same JFR as
# async-profiler's CPU samples; with a fixed allocInterval (below) from async-profiler's.
for run in "async-profiler java-app alloc_sample_bytes" "jfr java-app-jfr alloc_sample_bytes"; do
  read -r engine app alloc <<<"$run"
  java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=$app,tags=env:e2e,uploadInterval=3,engine=$engine,authToken=$kiln_write_key" \
    "$root/examples/java-app/JavaApp.java" 12
  python3 - "$kiln_url" "$kiln_read_key" "$app" "$alloc" "$engine" <<'PY'
import json, sys, urllib.parse, urllib.request
base, key, app, alloc_type, engine = sys.argv[1:]
def get(path, **params):
    req = urllib.request.Request(base + path + "?" + urllib.parse.urlencode(params))
    req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req) as r:
        return json.load(r)
r = get("/render", query=f'{app}.cpu{{env="e2e"}}', **{"from": "now-10m", "until": "now+1m"})
names = r["flamebearer"]["names"]
assert any(n.endswith("JavaApp.hashLoop") for n in names), f"hashLoop missing: {names[:30]}"
assert "e2e" in get("/label-values", label="env")
apps = {a["name"] for a in get("/api/apps")}
assert f"{app}.cpu" in apps and f"{app}.{alloc_type}" in apps, sorted(apps)
alloc = get("/render", query=f'{app}.{alloc_type}{{env="e2e"}}', **{"from": "now-10m", "until": "now+1m"})
assert any(n.endswith("JavaApp.allocLoop") for n in alloc["flamebearer"]["names"]), "allocLoop missing from allocations"
print(f"java e2e ({engine}): 1 passed, 0 failed")
PY
done
# With -javaagent the agent sets Flight Recorder's small buffers in jdk.jfr.internal directly
# (no MBean server): the running JVM must report them. Then, cpuStartDelay (6 s) after its start,
# it trims the native heap and starts async-profiler (both logged at FINE).
printf '%s\n' handlers=java.util.logging.ConsoleHandler java.util.logging.ConsoleHandler.level=FINE \
  dev.kiln.level=FINE >"$work/fine.properties"
java "-Xlog:class+load=info:file=$work/buffers-classes.log" "-Djava.util.logging.config.file=$work/fine.properties" \
  "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app-buffers,uploadInterval=2,authToken=$kiln_write_key" \
  "$root/examples/java-app/JavaApp.java" 12 >"$work/buffers.log" 2>&1 &
app_pid=$!
configured=
for _ in $(seq 80); do
  configured=$(jcmd "$app_pid" JFR.configure 2>/dev/null || true)
  [[ $configured == *"Memory size: 1.0 MB"* ]] && break # or the agent has not run yet
  sleep 0.25
done
for _ in $(seq 60); do
  grep -q "kiln: started async-profiler" "$work/buffers.log" && break
  sleep 0.25
done
kill "$app_pid" 2>/dev/null; wait "$app_pid" 2>/dev/null || true
for want in "Memory size: 1.0 MB" "Global buffer count: 2" "Thread buffer size: 4.0 kB"; do
  [[ $configured == *"$want"* ]] || { echo "sdk/java: Flight Recorder not configured by the agent (no \"$want\"):"; echo "$configured"; exit 1; }
done
if grep -q "com.sun.jmx.mbeanserver" "$work/buffers-classes.log"; then
  echo "sdk/java: the agent loaded the platform MBean server"; exit 1
fi
for want in "kiln: Trim native heap: RSS" "kiln: started async-profiler"; do
  grep -q "$want" "$work/buffers.log" || { echo "sdk/java: no \"$want\" in the agent's log:"; cat "$work/buffers.log"; exit 1; }
done
echo "sdk/java: -javaagent gives Flight Recorder 1 MB of buffers without the MBean server, trims the native heap, starts async-profiler after cpuStartDelay"
# Profile types follow the settings: CPU only (allocInterval=0, lockThreshold=0) stores no
# allocation series; a fixed allocInterval stores async-profiler's allocation samples from
# allocLoop; a bad value stops the agent's start with a message naming the setting.
java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app-cpuonly,tags=env:e2e,uploadInterval=2,allocInterval=0,lockThreshold=0,authToken=$kiln_write_key" \
  "$root/examples/java-app/JavaApp.java" 4
java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app-fixed,tags=env:e2e,uploadInterval=2,allocInterval=1m,samplingInterval=20ms,authToken=$kiln_write_key" \
  "$root/examples/java-app/JavaApp.java" 4
python3 - "$kiln_url" "$kiln_read_key" <<'PY'
import json, sys, urllib.parse, urllib.request
base, key = sys.argv[1:]
def get(path, **params):
    req = urllib.request.Request(base + path + "?" + urllib.parse.urlencode(params))
    req.add_header("Authorization", "Bearer " + key)
    with urllib.request.urlopen(req) as r:
        return json.load(r)
apps = {a["name"] for a in get("/api/apps")}
cpu_only = sorted(a for a in apps if a.startswith("java-app-cpuonly."))
assert cpu_only == ["java-app-cpuonly.cpu"], f"allocInterval=0,lockThreshold=0 stored {cpu_only}"
fixed = get("/render", query='java-app-fixed.alloc_in_new_tlab_bytes{env="e2e"}', **{"from": "now-10m", "until": "now+1m"})
assert any(n.endswith("JavaApp.allocLoop") for n in fixed["flamebearer"]["names"]), "allocInterval=1m: allocLoop missing"
print("java e2e (profile settings): cpu only stores only cpu; allocInterval=1m stores allocations")
PY
# The JVM aborts when an agent fails to start (bash reports "Aborted"): that is the expected outcome.
if java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,allocInterval=lots" -version >"$work/bad.log" 2>&1; then
  echo "sdk/java: the JVM started with allocInterval=lots"; exit 1
fi
grep -q "allocInterval must be a byte count" "$work/bad.log" || { echo "sdk/java: no message naming allocInterval"; cat "$work/bad.log"; exit 1; }
echo "sdk/java: allocInterval=lots refused at start with a message naming it"

before=$(kiln_unauthenticated)
KILN_AUTH_TOKEN= java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,tags=env:nokey,uploadInterval=2" \
  "$root/examples/java-app/JavaApp.java" 4 >/dev/null 2>&1 || true
after=$(kiln_unauthenticated)
((after > before)) || { echo "sdk/java: the push without a key was not refused ($before → $after)"; exit 1; }
echo "sdk/java: pushes without a key refused with 401 ($((after - before)))"

# TLS: a daemon serving HTTPS with a throwaway CA and requiring client certificates (mutual
# TLS). The push with caFile and the client certificate is stored; the push trusting another CA
# is refused by the agent's certificate check, logged, and stores nothing.
kill "$kiln_pid" && wait "$kiln_pid" 2>/dev/null || true
certs=$work/certs
make_test_certs "$certs"
cp "$certs/ca.pem" "$certs/client-ca.pem"
start_kiln_tls_auth "$kiln" "$work/tls-data" "$certs"
client="clientCertFile=$certs/client.pem,clientKeyFile=$certs/client.key"
read_tls=(--cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key")
java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,tags=env:tls,uploadInterval=2,engine=jfr,authToken=$kiln_write_key,caFile=$certs/ca.pem,$client" \
  "$root/examples/java-app/JavaApp.java" 6 >"$work/tls.log" 2>&1
ticks=$(kiln_ticks 'java-app.cpu{env="tls"}' "${read_tls[@]}")
((ticks > 0)) || { echo "sdk/java: nothing stored from the push over TLS with caFile"; cat "$work/tls.log"; exit 1; }
java "-javaagent:$here/target/kiln-agent.jar=server=$kiln_url,app=java-app,tags=env:wrongca,uploadInterval=2,engine=jfr,authToken=$kiln_write_key,caFile=$certs/other-ca.pem,$client" \
  "$root/examples/java-app/JavaApp.java" 3 >"$work/wrongca.log" 2>&1
grep -q "unable to find valid certification path" "$work/wrongca.log" ||
  { echo "sdk/java: the push trusting another CA did not report a certificate error"; cat "$work/wrongca.log"; exit 1; }
wrong=$(kiln_ticks 'java-app.cpu{env="wrongca"}' "${read_tls[@]}")
((wrong == 0)) || { echo "sdk/java: a push trusting another CA was stored ($wrong ticks)"; exit 1; }
echo "sdk/java: TLS with caFile and a client certificate stored ($ticks ticks); another CA refused by the agent"
