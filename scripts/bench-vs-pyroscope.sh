#!/usr/bin/env bash
# Kiln and Grafana Pyroscope v1 side by side, under the same load.
#
#   scripts/bench-vs-pyroscope.sh PYROSCOPE_BIN [SECONDS]
#
# PYROSCOPE_BIN is a Grafana Pyroscope v1 single binary (see BENCHMARKS.md, "Side by side with
# Grafana Pyroscope"). Kiln is built once (release). Each server in turn, Kiln first, on a fresh
# temporary data dir and free loopback ports:
#   1. start (time to /healthz or /ready on an empty dir);
#   2. kiln-loadgen for SECONDS (default 60): the Go CPU, heap and goroutine fixtures under app
#      `loadgen` and the JDK JFR fixture under `loadgen-java` (as the official Java agent sends
#      it: a multipart form, the recording gzip'd; JFR_RAW=1 sends the raw recording instead),
#      SERIES (200) series, spread over the
#      last 24 h in 10 s slots, CONCURRENCY (4) connections, RATE requests/s (0: as fast as the
#      server answers), CHURN (0) of function names renamed per variant;
#   3. SIGTERM (time to exit), bytes on disk (blocks allocated, `du`);
#   4. restart (time to ready with a day of data), a 24 h query of one series (cold); restart
#      again, a 24 h query of all series merged (cold); then each query QUERY_REPEAT (5) times
#      more (warm, median);
#   5. the merged total against what was accepted (accepted Go CPU profiles × the fixture's
#      nanoseconds), for both servers, as answered right after the load (before the restarts)
#      and after them.
# One table follows. Everything is loopback only, bounded in time (every wait has a deadline;
# the whole run is stopped after SECONDS×2 + 15 min), and the servers are stopped on exit.
# KEEP=1 keeps the work dir (data, logs, loadgen JSON).
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
  exit 2
fi
pyro_bin=$(realpath "$1")
secs=${2:-60}
[[ -x $pyro_bin ]] || { echo "$pyro_bin is not an executable" >&2; exit 2; }
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=lib/daemon.sh
source scripts/lib/daemon.sh
# shellcheck source=lib/bench.sh
source scripts/lib/bench.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
cargo build --release -p kiln -p kiln-loadgen
kiln_bin=$CARGO_TARGET_DIR/release/kiln
loadgen=$CARGO_TARGET_DIR/release/kiln-loadgen

series=${SERIES:-200}
repeat=${QUERY_REPEAT:-5}
work=$(mktemp -d)
kiln_pid='' pyro_pid='' loadgen_pid='' watchdog=''
cleanup() {
  local p
  for p in "$loadgen_pid" "$kiln_pid" "$pyro_pid"; do
    [[ -n $p ]] && kill -KILL "$p" 2>/dev/null || true
  done
  [[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null || true
  if [[ ${KEEP:-0} == 1 ]]; then echo "work dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Bound the whole run: past the limit, this shell is told to stop (and its trap cleans up).
(
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  sleep $((secs * 2 + 900)) &
  nap=$!
  wait "$nap" && echo "bench-vs-pyroscope: time limit reached" >&2 && kill -TERM $$
) &
watchdog=$!
echo "$pyro_bin: $("$pyro_bin" -version 2>/dev/null | head -1 || true)"

# Same query text for both: Kiln takes Grafana Pyroscope's profile type ids too.
type_id='process_cpu:cpu:nanoseconds:cpu:nanoseconds'
q_one="$type_id{service_name=\"loadgen\",pod=\"pod-7\"}"
q_all="$type_id{service_name=\"loadgen\"}"
urlencode() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

# start_server NAME DIR → $srv_pid, $srv_url, $srv_start_ms
start_server() {
  local name=$1 dir=$2 t0
  t0=$(now_ms)
  case $name in
    kiln) start_kiln "$kiln_bin" "$dir"; srv_pid=$kiln_pid; srv_url=$kiln_url ;;
    pyroscope) start_pyroscope "$pyro_bin" "$dir"; srv_pid=$pyro_pid; srv_url=$pyro_url ;;
  esac
  srv_start_ms=$(($(now_ms) - t0))
}

stop_server() {
  stop_timed "$srv_pid" 120
  kiln_pid='' pyro_pid=''
}

render_url() {
  local name=$1 query=$2 path=/render
  [[ $name == pyroscope ]] && path=/pyroscope/render
  echo "$srv_url$path?query=$(urlencode "$query")&from=now-24h&until=now&format=json"
}

# A flamebearer answer's total.
total_of() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["flamebearer"]["numTicks"])' "$1"; }

run() {
  local name=$1 dir=$work/$1 out=$work/$1.env q key t
  mkdir -p "$dir"
  echo "== $name: start on an empty dir"
  start_server "$name" "$dir"
  echo "start_empty_ms=$srv_start_ms" >"$out"
  echo "== $name: load for ${secs}s"
  "$loadgen" --url "$srv_url" --pid "$srv_pid" --seconds "$secs" --series "$series" \
    --concurrency "${CONCURRENCY:-4}" --rate "${RATE:-0}" --spread 24h --churn "${CHURN:-0}" \
    --app loadgen \
    --file testdata/go-cpu.pb.gz --file testdata/go-heap.pb.gz --file testdata/go-goroutine.pb.gz \
    --file testdata/java-jdk.jfr@loadgen-java \
    ${JFR_RAW:+--jfr-raw} --json "$work/$name.load.json" &
  # In the background so that a signal reaches the trap now, not when the load ends.
  loadgen_pid=$!
  wait "$loadgen_pid"
  loadgen_pid=''
  # What the running server answers right after the load, before any restart.
  timed_get "$(render_url "$name" "$q_all")" "$work/$name.live.json" >/dev/null
  echo "live_total_all=$(total_of "$work/$name.live.json")" >>"$out"
  stop_server
  echo "shutdown_ms=$stop_ms" >>"$out"
  echo "disk_bytes=$(du -s --block-size=1 "$dir" | cut -f1)" >>"$out"
  for d in "$dir"/*/; do
    if [[ -d $d ]]; then echo "disk_part_$(basename "$d")=$(du -s --block-size=1 "$d" | cut -f1)" >>"$out"; fi
  done
  for key in one all; do
    [[ $key == one ]] && q=$q_one || q=$q_all
    start_server "$name" "$dir"
    [[ $key == one ]] && echo "start_data_ms=$srv_start_ms" >>"$out"
    t=$(timed_get "$(render_url "$name" "$q")" "$work/$name.$key.json")
    echo "cold_${key}_s=$t" >>"$out"
    echo "total_${key}=$(total_of "$work/$name.$key.json")" >>"$out"
    for _ in $(seq "$repeat"); do
      timed_get "$(render_url "$name" "$q")" "$work/$name.$key.warm.json"
    done | median | sed "s/^/warm_${key}_s=/" >>"$out"
    echo "warm_total_${key}=$(total_of "$work/$name.$key.warm.json")" >>"$out"
    stop_server
  done
}

run kiln
run pyroscope

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]

def load(name):
    env = {}
    for line in open(f"{work}/{name}.env"):
        k, _, v = line.strip().partition("=")
        env[k] = int(v) if v.lstrip("-").isdigit() else float(v)
    return env, json.load(open(f"{work}/{name}.load.json"))

k_env, k_load = load("kiln")
p_env, p_load = load("pyroscope")

def expected(load):
    for f in load["fixtures"]:
        if f["file"].endswith("go-cpu.pb.gz"):
            return f["accepted"] * f["totals_per_profile"]["cpu:nanoseconds"]
    return None

def row(label, k, p, fmt="{:,.0f}"):
    show = lambda v: "—" if v is None else fmt.format(v)
    ratio = f"{k / p:.2f}" if k is not None and p not in (None, 0) else "—"
    print(f"| {label} | {show(k)} | {show(p)} | {ratio} |")

def per_profile(env, load):
    return env["disk_bytes"] / load["accepted"] if load["accepted"] else None

print()
print(f"Load: {k_load['series']} series, 24 h spread, fixtures "
      + ", ".join(f["file"].split("/")[-1] for f in k_load["fixtures"])
      + f"; {k_load['seconds']:.0f} s per server.")
print()
print("| | Kiln | Grafana Pyroscope | Kiln ÷ Pyroscope |")
print("|---|---|---|---|")
row("profiles/s accepted", k_load["accepted_per_s"], p_load["accepted_per_s"])
row("profiles accepted", k_load["accepted"], p_load["accepted"])
for what in ("refused_429", "refused_503", "refused_413", "other_http_errors", "no_answer"):
    row(what.replace("_", " "), k_load[what], p_load[what])
row("p50 latency, accepted (ms)", k_load["p50_ms"], p_load["p50_ms"], "{:.2f}")
row("p99 latency, accepted (ms)", k_load["p99_ms"], p_load["p99_ms"], "{:.2f}")
row("CPU per accepted profile (ms)", k_load.get("server_cpu_ms_per_profile"),
    p_load.get("server_cpu_ms_per_profile"), "{:.3f}")
row("CPU used (cores)", k_load.get("server_cpu_s", 0) / k_load["seconds"],
    p_load.get("server_cpu_s", 0) / p_load["seconds"], "{:.2f}")
row("peak RSS, VmHWM (MB)", k_load.get("server_vmhwm_kb", 0) / 1024,
    p_load.get("server_vmhwm_kb", 0) / 1024)
row("bytes on disk per profile (du after shutdown)", per_profile(k_env, k_load),
    per_profile(p_env, p_load))
row("startup, empty dir (ms)", k_env["start_empty_ms"], p_env["start_empty_ms"])
row("startup with the day's data (ms)", k_env["start_data_ms"], p_env["start_data_ms"])
row("shutdown after the load (ms)", k_env["shutdown_ms"], p_env["shutdown_ms"])
for key, what in (("one", "one series"), ("all", "all series merged")):
    row(f"24 h query, {what}, cold (ms)", k_env[f"cold_{key}_s"] * 1000,
        p_env[f"cold_{key}_s"] * 1000, "{:.1f}")
    row(f"24 h query, {what}, warm median (ms)", k_env[f"warm_{key}_s"] * 1000,
        p_env[f"warm_{key}_s"] * 1000, "{:.1f}")
row("total, one series (cpu ns)", k_env["total_one"], p_env["total_one"])
row("total, all series (cpu ns)", k_env["total_all"], p_env["total_all"])
row("total, all series, before the restarts", k_env["live_total_all"], p_env["live_total_all"])
row("expected: accepted Go CPU × fixture total", expected(k_load), expected(p_load))
print()
for name, env, load in (("Kiln", k_env, k_load), ("Pyroscope", p_env, p_load)):
    exp = expected(load)
    got = env["total_all"]
    def verdict(got):
        if not exp:
            return "no expectation"
        return "equal" if got == exp else f"off by {got - exp:+,.0f} ({(got - exp) / exp * 100:+.3f} %)"
    parts = ", ".join(f"{k[10:]} {v / 1e6:.1f} MB" for k, v in env.items() if k.startswith("disk_part_"))
    print(f"{name}: all-series total vs expected {exp or 0:,.0f}: before the restarts "
          f"{verdict(env['live_total_all'])}, after {verdict(got)}; "
          f"warm and cold totals {'agree' if env['total_all'] == env['warm_total_all'] else 'DIFFER'}; "
          f"disk {env['disk_bytes'] / 1e6:.1f} MB ({parts})")
PY
