#!/usr/bin/env bash
# Soak test (loopback only, bounded in time; not part of the test command — run it on a quiet
# machine):
#
#   scripts/soak.sh [SECONDS]        # default 600
#
#   1. Auth on, 10 tenants t0…t9, each with its own writer and reader key (made offline with
#      `kiln admin apikey create … --tenant tK` before the daemon starts) and a per-tenant ingest
#      limit of a tenth of the core target (2,000 profiles/s): kiln-loadgen offers as much as the
#      machine can push (well over 10× the target) of two real pprof fixtures (Go CPU and heap)
#      over 2,000 series (pod label) spread over the last 24 h, while a query loop renders 1 h
#      and 24 h flamegraphs of random tenants and services. Every push carries w=<window> (its
#      send time in windows of SECONDS/10), so the series count is 2,000 × windows.
#   2. At 60 % of SECONDS the daemon is killed with SIGKILL and restarted on the same port and
#      data directory; the load goes on. At the end, for every tenant and every window whose
#      pushes were all answered more than one flush interval before the kill, the profiles the
#      daemon answers for (/render totals divided by the total of one profile of that fixture,
#      measured first under w=calib) must be at least the acknowledged ones.
#   3. Auth cost: the same load without the window label and without the per-tenant limit for
#      AUTH_COST_SECONDS (default 30) with auth off (tenants named by X-Scope-OrgID), then on
#      (API keys), each on a fresh data directory, AUTH_COST_ROUNDS times (default 3, off and on
#      alternating, so that drift of the machine falls on both); the ratio of the summed
#      throughputs is reported, and each round's.
#
# Environment: KILN_BIN and LOADGEN_BIN (default: a release build of both), CONCURRENCY (pushing
# connections, default 32), AUTH_COST_SECONDS, AUTH_COST_ROUNDS. Prints one table; exits non-zero when an
# acknowledged profile is missing after the restart.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
auth_secs=${AUTH_COST_SECONDS:-30}
auth_rounds=${AUTH_COST_ROUNDS:-3}
concurrency=${CONCURRENCY:-32}
((secs >= 10)) || { echo "soak: SECONDS must be at least 10" >&2; exit 2; }
target=${CARGO_TARGET_DIR:-$PWD/target}
if [[ -z ${KILN_BIN:-} || -z ${LOADGEN_BIN:-} ]]; then
  cargo build --release -p kiln -p kiln-loadgen >/dev/null
fi
kiln=${KILN_BIN:-$target/release/kiln}
loadgen=${LOADGEN_BIN:-$target/release/kiln-loadgen}
. scripts/lib/bench.sh

tenants=10
series=2000
core_target=2000 # profiles/s the daemon is built to take
window=$((secs / 10 > 2 ? secs / 10 : 2))
flush_ms=1000
apps=(soakgo soakheap)
files=(testdata/go-cpu.pb.gz testdata/go-heap.pb.gz)
# What a window's profile count is read from, per fixture: a query summing one value per profile.
count_queries=(soakgo.cpu soakheap.alloc_space)
work=$(mktemp -d)
query_pid=
memory_pid=
load_pid=
daemon_pid=
trap 'kill -9 $daemon_pid $load_pid $query_pid $memory_pid 2>/dev/null || true; rm -rf "$work"' EXIT

# Per-tenant ingest rate: a tenth of the core target's bytes (the mean fixture size × 200/s).
bytes=0
for f in "${files[@]}"; do bytes=$((bytes + $(stat -c %s "$f"))); done
per_tenant_bps=$((bytes / ${#files[@]} * core_target / tenants))

# start_daemon DATA PORT AUTH LIMIT_BPS → $daemon_pid once /healthz answers
start_daemon() {
  local data=$1 port=$2 auth=$3 bps=$4
  KILN_AUTH_ENABLED=$auth KILN_ADMIN_PASSWORD="soak-$RANDOM$RANDOM$RANDOM" \
    KILN_LIMITS_INGEST_BYTES_PER_SECOND=$bps KILN_LIMITS_INGEST_BURST_BYTES=$((bps * 2)) \
    KILN_FLUSH_INTERVAL=${flush_ms}ms \
    "$kiln" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$data" \
    --self-profiling false --log-level warn >>"$work/kiln.log" 2>&1 &
  daemon_pid=$!
  wait_http "http://127.0.0.1:$port/healthz" 120 || { echo "soak: daemon did not start" >&2; tail "$work/kiln.log" >&2; exit 1; }
}

# make_keys DATA → $work/writers and $work/readers, line k for tenant tk
make_keys() {
  : >"$work/writers"
  : >"$work/readers"
  for ((k = 0; k < tenants; k++)); do
    for role in writer reader; do
      "$kiln" admin apikey create --config /dev/null --storage-path "$1" --name "soak-$role-t$k" \
        --role "$role" --tenant "t$k" 2>/dev/null >>"$work/${role}s"
    done
  done
}

key() { sed -n "$(($2 + 1))p" "$work/$1"; }

# ticks TENANT QUERY → numTicks of QUERY over the last 25 h, read with TENANT's reader key
ticks() {
  curl -sfG -H "Authorization: Bearer $(key readers "$1")" --data-urlencode "query=$2" \
    --data-urlencode from=now-25h --data-urlencode until=now+10m "$url/render" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["flamebearer"]["numTicks"])'
}

# Renders random tenants' services over 1 h or 24 h until killed; "HTTP_CODE SECONDS" per line.
query_loop() {
  local k app range
  while :; do
    k=$((RANDOM % tenants))
    app=${count_queries[RANDOM % ${#count_queries[@]}]}
    range=$((RANDOM % 2 ? 1 : 24))
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 120 -G \
      -H "Authorization: Bearer $(key readers "$k")" --data-urlencode "query=$app{}" \
      --data-urlencode "from=now-${range}h" --data-urlencode until=now "$url/render" || sleep 0.1
  done
}

# Every 2 s until killed: "SECONDS RSS_MB ALLOCATED RESIDENT BACKLOG WRITE_BUFFER DICTIONARIES" (MB;
# the last five from the daemon's /metrics), for whichever daemon serves DATA, so that the peak
# can be told apart: what the allocator holds, what the bounds hold, and the slack between.
memory_loop() {
  local data=$1 t0 pid rss gauges
  t0=$(now_ms)
  while :; do
    pid=$(pgrep -f -- "--storage-path $data --" | head -1)
    if [[ -n $pid ]]; then
      rss=$(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$pid/status" 2>/dev/null || echo 0)
      gauges=$(curl -s --max-time 2 -H "Authorization: Bearer $(key readers 0)" "$url/metrics" |
        awk '/^kiln_(memory_allocated|memory_resident|wal_unapplied|storage_write_buffer|storage_dictionary)_bytes / {v[$1] = int($2 / 1048576)}
          END {printf "%d %d %d %d %d", v["kiln_memory_allocated_bytes"], v["kiln_memory_resident_bytes"], v["kiln_wal_unapplied_bytes"], v["kiln_storage_write_buffer_bytes"], v["kiln_storage_dictionary_bytes"]}' || true)
      echo "$((($(now_ms) - t0) / 1000)) $rss $gauges"
    fi
    sleep 2
  done
}

load_args=(--concurrency "$concurrency" --series "$series" --spread 24h --tenants "$tenants")
for i in "${!files[@]}"; do load_args+=(--file "${files[i]}@${apps[i]}"); done

# ---- 1 and 2: the soak, with a kill -9 at 60 %
data=$work/soak
port=$(free_port)
url=http://127.0.0.1:$port
make_keys "$data"
start_daemon "$data" "$port" true "$per_tenant_bps"

# One profile of each fixture under w=calib (tenant t0): what a window's /render total is divided by.
calib=()
for i in "${!files[@]}"; do
  curl -sf -o /dev/null -X POST -H "Authorization: Bearer $(key writers 0)" --data-binary "@${files[i]}" \
    "$url/ingest?name=${apps[i]}%7Bw%3Dcalib%7D&format=pprof&from=$(($(date +%s) - 10))&until=$(date +%s)"
done
sleep $((flush_ms * 2 / 1000 + 1))
for q in "${count_queries[@]}"; do
  c=$(ticks 0 "${q}{w=\"calib\"}")
  ((c > 0)) || { echo "soak: calibration query $q answered $c" >&2; exit 1; }
  calib+=("$c")
done

"$loadgen" --url "$url" "${load_args[@]}" --key-file "$work/writers" --window "$window" \
  --seconds "$secs" --pid "$daemon_pid" --json "$work/soak.json" >"$work/soak.out" 2>&1 &
load_pid=$!
query_loop >"$work/queries" 2>/dev/null &
query_pid=$!
memory_loop "$data" >"$work/memory" 2>/dev/null &
memory_pid=$!

kill_at=$((secs * 6 / 10))
sleep "$kill_at"
peak_kb=$(vmhwm_kb "$daemon_pid")
kill_ms=$(now_ms)
kill -9 "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
restart_t0=$(now_ms)
start_daemon "$data" "$port" true "$per_tenant_bps"
restart_ms=$(($(now_ms) - restart_t0))
wait "$load_pid" || { echo "soak: loadgen failed" >&2; cat "$work/soak.out" >&2; exit 1; }
load_pid=
peak_kb=$(($(vmhwm_kb "$daemon_pid") > peak_kb ? $(vmhwm_kb "$daemon_pid") : peak_kb))
kill "$query_pid" "$memory_pid" 2>/dev/null || true
wait "$query_pid" "$memory_pid" 2>/dev/null || true
query_pid= memory_pid=
# The sample with the most RSS: when it was (the kill was at kill_at s) and what the daemon held.
read -r m_t m_rss m_alloc m_res m_backlog m_wbuf m_dict < <(sort -k2,2n "$work/memory" | tail -1)
sleep $((flush_ms * 2 / 1000 + 1))

# Acknowledged before the cutoff vs what the restarted daemon answers, per tenant and window.
cutoff=$((kill_ms - flush_ms))
python3 - "$work/soak.json" "$cutoff" >"$work/windows" <<'PY'
import json, sys
summary, cutoff = json.load(open(sys.argv[1])), int(sys.argv[2])
start, w = summary["started_unix_ms"], summary["window_s"] * 1000
for tenant, windows in sorted(summary.get("windows", {}).items()):
    for index, t in sorted(windows.items(), key=lambda kv: int(kv[0])):
        if start + (int(index) + 1) * w <= cutoff and t["last_ack_unix_ms"] <= cutoff:
            print(tenant[1:], index, t["acked"])
PY
checked=0 acked_total=0 found_total=0 missing=0 extra=0
while read -r k w acked; do
  found=0
  for i in "${!count_queries[@]}"; do
    t=$(ticks "$k" "${count_queries[i]}{w=\"$w\"}")
    found=$(python3 -c "import sys; print($found + $t / ${calib[i]})")
  done
  found=$(python3 -c "print(round($found))")
  checked=$((checked + 1))
  acked_total=$((acked_total + acked))
  found_total=$((found_total + found))
  if ((found < acked)); then
    missing=$((missing + acked - found))
    echo "soak: tenant t$k window $w: $acked acknowledged, $found after the restart" >&2
  fi
  ((found > acked)) && extra=$((extra + found - acked))
done <"$work/windows"
((checked > 0)) || { echo "soak: no window ended before the kill; run longer" >&2; exit 1; }

soak=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["accepted"], d["refused_429"], d["refused_503"], d["no_answer"], round(d["p99_ms"], 1), round(d["accepted_per_s"]))' "$work/soak.json")
read -r accepted r429 r503 unanswered p99 per_s <<<"$soak"
queries=$(awk '$1 ~ /^2/ {print $2 * 1000}' "$work/queries" | sort -g | awk '{v[NR] = $1} END {if (NR) printf "%d %.0f %.0f", NR, v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1]; else print "0 - -"}')
read -r q_ok q50 q99 <<<"$queries"
q_failed=$(awk '$1 !~ /^2/ && $1 != "000"' "$work/queries" | wc -l)
q_down=$(awk '$1 == "000"' "$work/queries" | wc -l)
kill -TERM "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=

# ---- 3: auth cost, same load, no per-tenant limit (0 = off), no window label
rate() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["accepted_per_s"])' "$1"; }
off=0 on=0 rounds=""
for ((round = 1; round <= auth_rounds; round++)); do
  for auth in false true; do
    data=$work/cost-$auth-$round
    port=$(free_port)
    url=http://127.0.0.1:$port
    keys=()
    if [[ $auth == true ]]; then
      make_keys "$data"
      keys=(--key-file "$work/writers")
    fi
    start_daemon "$data" "$port" "$auth" 0
    "$loadgen" --url "$url" "${load_args[@]}" "${keys[@]}" --seconds "$auth_secs" --json "$work/cost-$auth-$round.json" >/dev/null
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
  done
  r_off=$(rate "$work/cost-false-$round.json")
  r_on=$(rate "$work/cost-true-$round.json")
  off=$(python3 -c "print($off + $r_off)")
  on=$(python3 -c "print($on + $r_on)")
  rounds+="${rounds:+, }$(python3 -c "print(f'{$r_on / $r_off:.3f}')")"
done
off=$(python3 -c "print($off / $auth_rounds)")
on=$(python3 -c "print($on / $auth_rounds)")

cat <<EOF

Soak: ${secs} s, ${tenants} tenants, ${series} series × $((secs / window)) windows, ${concurrency} connections, per-tenant limit ${per_tenant_bps} B/s
| measure | value | goal |
|---|---|---|
| pushes accepted | ${accepted} (${per_s}/s) | |
| refused 429 / 503 | ${r429} / ${r503} | overload refused, not queued |
| no answer (around the kill) | ${unanswered} | |
| ingest p99, accepted | ${p99} ms | |
| daemon peak RSS | $((peak_kb / 1024)) MB | < 512 MB |
| largest 2 s sample: at / RSS / allocated / allocator resident / decoded backlog / write buffer / dictionaries | ${m_t} s (kill at ${kill_at} s) / ${m_rss} / ${m_alloc} / ${m_res} / ${m_backlog} / ${m_wbuf} / ${m_dict} MB | |
| queries (1 h / 24 h /render) ok / failed / no answer (restart) | ${q_ok} / ${q_failed} / ${q_down} | |
| query p50 / p99 | ${q50} / ${q99} ms | |
| restart after kill -9 to /healthz | ${restart_ms} ms | |
| acknowledged ≥ ${flush_ms} ms before the kill (${checked} tenant-windows) | ${acked_total} | |
| of those, answered after the restart | $((acked_total - missing)) (missing ${missing}; ${extra} more stored than acknowledged) | missing 0 |
| auth cost: mean profiles/s auth off / on (${auth_rounds} rounds of ${auth_secs} s each) | ${off%.*} / ${on%.*} | |
| auth on / auth off (each round) | $(python3 -c "print(f'{$on / $off:.3f}')") (${rounds}) | > 0.95 |
EOF
((missing == 0))
