#!/usr/bin/env bash
# ClickHouse backend benchmark: one clickhouse-server (a plain process in a temp dir, free
# loopback ports), then
#   1. ingest profiles/s with 1 daemon, then with 2 daemons sharing the database (one load
#      generator each, replaying the Go CPU fixture over SERIES series spread over SPREAD);
#   2. /render of one series over 24 h and 30 days, and of every series merged, and ClickHouse
#      bytes on disk per stored profile, after the 1-daemon run (1x) and again after pushing
#      GROWTH-1 times as much more into the same database (GROWTH, default 10; 1 skips it);
#   3. ClickHouse bytes on disk per profiled core per day: one day of one series (8,640 Go
#      CPU profiles 10 s apart, `kiln-loadgen --day --vary-values`: counts drawn around the
#      fixture's as a program's vary; DAY_REPLAY=1 replays the fixture's values, the shape of
#      figures before 2026-12-01's thirteenth session) into a fresh database;
#   4. the same load into one daemon on sled (the embedded default), the same renders, and its
#      bytes on disk; then one table, sled beside ClickHouse with one and two daemons.
# CH_COMPRESSION=zstd sets the server's part compression (default: its own, lz4).
# SECONDS_TO_RUN (default 15), SERIES (200), CONCURRENCY (4), SPREAD (24h), RATE (pushes/s per
# load generator; default 0, as fast as answered, a refusal followed at once by the next push),
# LEVELS (a TOML array for `storage.levels`; default unset, the three levels), e.g. the five
# levels ten times apart to compare:
#   LEVELS='[{resolution="10s",retention="3d"},{resolution="100s",retention="14d"},…]'
# KILN_BIN_DIR: binaries built elsewhere (kiln, kiln-loadgen) instead of building them.
# Figures come from release binaries; a quick check that the script works, on the debug ones:
#   PROFILE=debug SECONDS_TO_RUN=2 SERIES=4 scripts/bench-clickhouse.sh
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
target=${CARGO_TARGET_DIR:-target}
if [ -n "${KILN_BIN_DIR:-}" ]; then
  bin=$KILN_BIN_DIR
elif [ "$profile" = release ]; then
  cargo build --release -p kiln -p kiln-loadgen
  bin="$target/$profile"
else
  cargo build -p kiln -p kiln-loadgen
  bin="$target/$profile"
fi
secs=${SECONDS_TO_RUN:-15}
series=${SERIES:-200}
conc=${CONCURRENCY:-4}
spread=${SPREAD:-24h}
growth=${GROWTH:-10}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
# Daemons first (they flush on SIGTERM), ClickHouse (the first pid) last.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  for ((i = ${#pids[@]} - 1; i >= 1; i--)); do wait "${pids[$i]}" 2>/dev/null || true; done
  kill "${pids[0]}" 2>/dev/null || true; wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ch_http=$(free_port); ch_tcp=$(free_port); ch_inter=$(free_port)
# CH_COMPRESSION=zstd: the server compresses every part with zstd instead of its default lz4 (a
# server setting, not the schema's: the `<compression>` section of its config).
ch_compression=
if [ -n "${CH_COMPRESSION:-}" ]; then
  ch_compression="<compression><case><min_part_size>0</min_part_size><min_part_size_ratio>0</min_part_size_ratio><method>$CH_COMPRESSION</method></case></compression>"
fi
mkdir -p "$work/ch/data" "$work/ch/tmp" "$work/ch/user_files" "$work/ch/format_schemas"
cat > "$work/ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$work/ch/server.log</log><errorlog>$work/ch/error.log</errorlog></logger>
  <http_port>$ch_http</http_port><tcp_port>$ch_tcp</tcp_port><interserver_http_port>$ch_inter</interserver_http_port>
  <listen_host>127.0.0.1</listen_host>
  <path>$work/ch/data/</path><tmp_path>$work/ch/tmp/</tmp_path>
  <user_files_path>$work/ch/user_files/</user_files_path><format_schema_path>$work/ch/format_schemas/</format_schema_path>
  <users_config>$work/ch/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
  $ch_compression
</yandex>
XML
cat > "$work/ch/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><kiln><password>bench</password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></kiln></users>
  <quotas><default></default></quotas>
</yandex>
XML
clickhouse-server --config-file="$work/ch/config.xml" >"$work/ch/stdout.log" 2>&1 &
ch_pid=$!; pids+=("$ch_pid")
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ch_http/ping" >/dev/null && break; sleep 0.1; done
sql() { curl -sf -u kiln:bench "http://127.0.0.1:$ch_http/" --data-binary "$1"; }

# start_daemon NAME DATABASE: its port goes to $work/NAME/port, its pid to $work/NAME/pid.
start_daemon() {
  local port; port=$(free_port)
  mkdir -p "$work/$1"
  cat > "$work/$1/kiln.toml" <<TOML
[storage]
type = "clickhouse"
${LEVELS:+levels = $LEVELS}
[storage.clickhouse]
url = "http://127.0.0.1:$ch_http"
database = "$2"
user = "kiln"
password = "bench"
TOML
  "$bin/kiln" server --config "$work/$1/kiln.toml" --listen "127.0.0.1:$port" \
    --storage-path "$work/$1/data" --self-profiling false --log-level warn >"$work/$1/log" 2>&1 &
  pids+=("$!"); echo "$!" > "$work/$1/pid"; echo "$port" > "$work/$1/port"
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "kiln $1 did not start:"; cat "$work/$1/log"; exit 1
}

loadgen() { # PORT PID JSON [SECONDS]
  "$bin/kiln-loadgen" --url "http://127.0.0.1:$1" --series "$series" --concurrency "$conc" \
    --seconds "${4:-$secs}" --spread "$spread" --rate "${RATE:-0}" --pid "$2" --json "$3"
}

# Rows, parts and bytes per table of DATABASE, after a flush.
tables() {
  sleep 2
  sql "SELECT table, count() AS parts, sum(rows), sum(bytes_on_disk) FROM system.parts \
       WHERE database = '$1' AND active GROUP BY table ORDER BY table FORMAT PrettyCompactNoEscapes"
}

# Bytes on disk of DATABASE once ClickHouse has merged it.
merged_bytes() {
  sleep 2
  for t in buckets fine series stacks frames; do sql "OPTIMIZE TABLE $1.$t FINAL" || true; done
  sql "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '$1' AND active"
}

# The first answer right after a load includes the daemon sending its last buffered rows (a
# query waits for what this daemon accepted) and ClickHouse still merging; the next three show
# the steady state.
# Medians land in $work/renders.tsv under $render_as, for the table at the end.
render_port=; render_as=
render() { # LABEL QUERY FROM
  local now url first times
  now=$(date +%s)
  url="http://127.0.0.1:${render_port:-$p1}/render?query=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$2")&from=$3&until=$now"
  first=$(curl -s -o "$work/render.json" -w 'HTTP %{http_code}, %{time_total}s' "$url")
  times=$(for _ in 1 2 3; do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done | sort -n | sed -n 2p)
  echo "$1: $first first, then ${times}s (median of 3)"
  if [ -n "$render_as" ]; then printf '%s\t%s\t%s\n' "$render_as" "$1" "$times" >>"$work/renders.tsv"; fi
}

renders() { # the four renders of the tables' figures
  local now; now=$(date +%s)
  render "one series (pod-0), 24h" 'loadgen.cpu{pod="pod-0"}' $((now - 86400))
  render "one series (pod-0), 30d" 'loadgen.cpu{pod="pod-0"}' $((now - 30 * 86400))
  render "all series merged, 24h" 'loadgen.cpu' $((now - 86400))
  render "all series merged, 30d" 'loadgen.cpu' $((now - 30 * 86400))
}

# /render timings and bytes per profile of the 1-daemon database, labelled LABEL.
figures() {
  local profiles bytes
  echo "== /render and bytes on disk, $1 (database of the 1-daemon run)"
  render_as=$2 renders
  bytes=$(merged_bytes bench1)
  profiles=$(sql "SELECT sum(profiles) FROM bench1.all_buckets WHERE level = 0")
  echo "$1: profiles: $profiles, bytes on disk: $bytes, per profile: $((bytes / (profiles > 0 ? profiles : 1)))"
  if [ -n "$2" ]; then echo "$bytes" >"$work/$2.bytes"; fi
}

# CPU seconds (user + system) PID has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# ClickHouse's own CPU over a load: cores, and ms per profile the load generators' JSON files
# (the rest of the arguments) say were accepted.
clickhouse_cpu() { # CPU_BEFORE SECONDS JSON...
  local before=$1 secs=$2; shift 2
  python3 - "$before" "$(cpu_s "$ch_pid")" "$secs" "$@" <<'PY'
import json, sys
before, after, secs = map(float, sys.argv[1:4])
accepted = sum(json.load(open(f))["accepted"] for f in sys.argv[4:])
used = after - before
print(f"clickhouse-server: {used / secs:.2f} cores, {1000 * used / max(accepted, 1):.2f} ms CPU per accepted profile")
PY
}

echo "== 1 daemon"
start_daemon one bench1; p1=$(cat "$work/one/port")
ch_before=$(cpu_s "$ch_pid")
loadgen "$p1" "$(cat "$work/one/pid")" "$work/one.json"
clickhouse_cpu "$ch_before" "$secs" "$work/one.json" | tee "$work/one.chcpu"
tables bench1
figures 1x clickhouse

echo "== 2 daemons, one database"
start_daemon a bench2; start_daemon b bench2
pa=$(cat "$work/a/port"); pb=$(cat "$work/b/port")
ch_before=$(cpu_s "$ch_pid")
loadgen "$pa" "$(cat "$work/a/pid")" "$work/a.json" & la=$!
loadgen "$pb" "$(cat "$work/b/pid")" "$work/b.json" & lb=$!
wait $la $lb
clickhouse_cpu "$ch_before" "$secs" "$work/a.json" "$work/b.json" | tee "$work/two.chcpu"
python3 - "$work/a.json" "$work/b.json" <<'PY'
import json, sys
rates = [json.load(open(f))["accepted_per_s"] for f in sys.argv[1:]]
print(f"2 daemons: {sum(rates):.0f} profiles/s accepted in total ({', '.join(f'{r:.0f}' for r in rates)})")
PY

if [ "$growth" -gt 1 ]; then
  echo "== $((growth - 1))x more into the 1-daemon database"
  loadgen "$p1" "$(cat "$work/one/pid")" "$work/grow.json" $(((growth - 1) * secs))
  figures "${growth}x" ""
fi

echo "== one profiled core for one day (8,640 profiles of one series, fresh database)"
start_daemon day bench_day; pd=$(cat "$work/day/port")
vary=--vary-values
[ -n "${DAY_REPLAY:-}" ] && vary=
"$bin/kiln-loadgen" --url "http://127.0.0.1:$pd" --day $vary --concurrency "$conc" >"$work/day.out"
tail -n 2 "$work/day.out"
bytes=$(merged_bytes bench_day)
profiles=$(sql "SELECT sum(profiles) FROM bench_day.all_buckets WHERE level = 0")
echo "per profiled core per day: $bytes bytes on disk ($profiles profiles); the largest columns:"
sql "SELECT table, name, data_compressed_bytes AS packed, data_uncompressed_bytes AS raw \
     FROM system.columns WHERE database = 'bench_day' ORDER BY packed DESC LIMIT 6 \
     FORMAT PrettyCompactNoEscapes"

echo "== sled (the embedded default), the same load into one daemon"
sled_port=$(free_port)
mkdir -p "$work/sled"
"$bin/kiln" server --config /dev/null --listen "127.0.0.1:$sled_port" --storage-path "$work/sled/data" \
  --self-profiling false --log-level warn >"$work/sled/log" 2>&1 &
sled_pid=$!; pids+=("$sled_pid")
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$sled_port/healthz" >/dev/null && break; sleep 0.1; done
loadgen "$sled_port" "$sled_pid" "$work/sled.json"
render_port=$sled_port render_as=sled renders
kill -TERM "$sled_pid"; wait "$sled_pid" || true
du -s --block-size=1 "$work/sled/data" | cut -f1 >"$work/sled.bytes"

echo "== sled and ClickHouse, the same load (Go CPU fixture, $series series over $spread, $conc connections per daemon, rate ${RATE:-0})"
python3 - "$work" <<'PY'
import json, os, re, statistics, sys
w = sys.argv[1]
load = lambda f: json.load(open(os.path.join(w, f)))
sled, one, a, b = load("sled.json"), load("one.json"), load("a.json"), load("b.json")
def ch_cpu(f):
    m = re.search(r"([0-9.]+) ms CPU per accepted", open(os.path.join(w, f)).read())
    return m.group(1) if m else "?"
renders = {}
for line in open(os.path.join(w, "renders.tsv")):
    who, label, secs = line.rstrip("\n").split("\t")
    renders[(who, label)] = f"{1000 * float(secs):.0f}"
def r(who, a, b):
    return f"{renders.get((who, a), '?')} / {renders.get((who, b), '?')}"
def per_push(who, accepted):
    try:
        return f"{int(open(os.path.join(w, who + '.bytes')).read()) / max(accepted, 1):,.0f}"
    except (OSError, ValueError):
        return "?"
refused = lambda j: j["refused_429"] + j["refused_503"] + j["refused_413"]
rows = [
    ("pushes/s accepted", f"{sled['accepted_per_s']:,.0f}", f"{one['accepted_per_s']:,.0f}",
     f"{a['accepted_per_s'] + b['accepted_per_s']:,.0f}"),
    ("refused (429, 503, 413)", f"{refused(sled):,}", f"{refused(one):,}", f"{refused(a) + refused(b):,}"),
    ("p50 / p99 latency (ms)", f"{sled['p50_ms']:.1f} / {sled['p99_ms']:.1f}",
     f"{one['p50_ms']:.1f} / {one['p99_ms']:.1f}", f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f}"),
    ("daemon CPU per push (ms)", f"{sled.get('server_cpu_ms_per_profile', 0):.2f}",
     f"{one.get('server_cpu_ms_per_profile', 0):.2f}",
     f"{statistics.mean([a.get('server_cpu_ms_per_profile', 0), b.get('server_cpu_ms_per_profile', 0)]):.2f}"),
    ("clickhouse-server CPU per push (ms)", "—", ch_cpu("one.chcpu"), ch_cpu("two.chcpu")),
    ("daemon peak RSS (MB)", f"{sled.get('server_vmhwm_kb', 0) / 1024:.0f}",
     f"{one.get('server_vmhwm_kb', 0) / 1024:.0f}",
     f"{max(a.get('server_vmhwm_kb', 0), b.get('server_vmhwm_kb', 0)) / 1024:.0f}"),
    ("/render one series, 24 h / 30 d (ms, median of 3)",
     r("sled", "one series (pod-0), 24h", "one series (pod-0), 30d"),
     r("clickhouse", "one series (pod-0), 24h", "one series (pod-0), 30d"), "—"),
    ("/render all series, 24 h / 30 d (ms, median of 3)",
     r("sled", "all series merged, 24h", "all series merged, 30d"),
     r("clickhouse", "all series merged, 24h", "all series merged, 30d"), "—"),
    ("bytes on disk per accepted push", per_push("sled", sled["accepted"]),
     per_push("clickhouse", one["accepted"]), "—"),
]
print("| | sled, 1 daemon | ClickHouse, 1 daemon | ClickHouse, 2 daemons |")
print("|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
PY
