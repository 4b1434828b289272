#!/usr/bin/env bash
# Querier latency: Grafana's SelectMergeStacktraces (Connect, binary protobuf) against /render on
# the same selection, over 24 h and 30 days of data loaded with kiln-loadgen --spread. Both go
# through one query engine; their medians should be within 10 % of each other.
#
#   scripts/bench-querier.sh                        # release build, the full sizes
#   SERIES=2 LOAD_SECONDS=2 RUNS=3 WINDOWS="1h" KILN_BIN=... LOADGEN_BIN=... scripts/bench-querier.sh
#                                                   # a quick check with tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
series=${SERIES:-50}
load_seconds=${LOAD_SECONDS:-60}
runs=${RUNS:-20}
windows=${WINDOWS:-"24h 30d"}
if [[ -z ${KILN_BIN:-} || -z ${LOADGEN_BIN:-} ]]; then
  cargo build --release -p kiln -p kiln-loadgen
fi
kiln=${KILN_BIN:-$root/target/release/kiln}
loadgen=${LOADGEN_BIN:-$root/target/release/kiln-loadgen}
. "$root/scripts/lib/daemon.sh"

kiln_pid=
work=$(mktemp -d)
trap '[[ -n $kiln_pid ]] && kill $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT

seconds_of() {
  case $1 in
    *d) echo $((${1%d} * 86400)) ;;
    *h) echo $((${1%h} * 3600)) ;;
    *m) echo $((${1%m} * 60)) ;;
    *) echo "$1" ;;
  esac
}

# A SelectMergeStacktracesRequest in binary protobuf: fields 1 and 2 strings, 3 and 4 varints.
proto_request() {
  python3 - "$@" <<'PY'
import sys
type_id, selector, start, end, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def varint(n):
    b = bytearray()
    while n >= 0x80:
        b.append((n & 0x7f) | 0x80); n >>= 7
    b.append(n); return bytes(b)
def field_str(tag, s):
    s = s.encode(); return varint(tag << 3 | 2) + varint(len(s)) + s
body = field_str(1, type_id) + field_str(2, selector) + varint(3 << 3) + varint(start) + varint(4 << 3) + varint(end)
open(out, "wb").write(body)
PY
}

# Median and p90 of a file of one latency (seconds) per line, in ms.
stats() {
  sort -n "$1" | awk '{v[NR]=$1} END {printf "median %.1f ms  p90 %.1f ms", v[int((NR+1)/2)]*1000, v[int(NR*0.9+0.5)]*1000}'
}

median() {
  sort -n "$1" | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'
}

for window in $windows; do
  span=$(seconds_of "$window")
  start_kiln "$kiln" "$work/data-$window"
  "$loadgen" --url "$kiln_url" --app bench-querier.cpu --series "$series" --concurrency 2 \
    --seconds "$load_seconds" --spread "$window" >"$work/load-$window.txt"
  end_ms=$(($(date +%s) * 1000 + 60000))
  start_ms=$((end_ms - span * 1000 - 120000))
  type_id=$(curl -sf -X POST -H 'Content-Type: application/json' -d '{}' \
    "$kiln_url/querier.v1.QuerierService/ProfileTypes" |
    python3 -c 'import json,sys; t=[p["ID"] for p in json.load(sys.stdin).get("profileTypes",[])]; print(next((x for x in t if x.startswith("process_cpu:")), t[0] if t else ""))')
  [[ -n $type_id ]] || { echo "no profile type stored for $window"; exit 1; }
  selector='{service_name="bench-querier"}'
  proto_request "$type_id" "$selector" "$start_ms" "$end_ms" "$work/req.bin"
  render_url="$kiln_url/render?query=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$type_id$selector")&from=$((start_ms / 1000))&until=$((end_ms / 1000))"
  : >"$work/render.txt"; : >"$work/connect.txt"
  # Interleaved, after one warm-up each, so caches and background work hit both alike.
  curl -sf -o /dev/null "$render_url"
  size=$(curl -sf -o /dev/null -w '%{size_download}' -X POST -H 'Content-Type: application/proto' \
    --data-binary @"$work/req.bin" "$kiln_url/querier.v1.QuerierService/SelectMergeStacktraces")
  ((size > 100)) || { echo "SelectMergeStacktraces answered $size bytes: no data selected"; exit 1; }
  for _ in $(seq "$runs"); do
    curl -sf -o /dev/null -w '%{time_total}\n' "$render_url" >>"$work/render.txt"
    curl -sf -o /dev/null -w '%{time_total}\n' -X POST -H 'Content-Type: application/proto' \
      --data-binary @"$work/req.bin" "$kiln_url/querier.v1.QuerierService/SelectMergeStacktraces" >>"$work/connect.txt"
  done
  echo "== $window of data, $series series ($(grep -m1 -i 'accepted' "$work/load-$window.txt" || true))"
  echo "   /render                 $(stats "$work/render.txt")"
  echo "   SelectMergeStacktraces  $(stats "$work/connect.txt")"
  python3 -c 'import sys; r,c=float(sys.argv[1]),float(sys.argv[2]); print("   ratio (connect / render): %.2f" % (c / r if r else float("nan")))' \
    "$(median "$work/render.txt")" "$(median "$work/connect.txt")"
  kill "$kiln_pid"; wait "$kiln_pid" 2>/dev/null || true; kiln_pid=
done
