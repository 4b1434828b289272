#!/usr/bin/env bash
# Disk per profiled core per day on the embedded storage (sled): one day of one series, 8,640
# Go CPU profiles 10 s apart (`kiln-loadgen --day`), into a fresh data directory. Prints the
# bytes storage accounts for (`/api/storage` total_bytes: live keys and values), the bytes of
# the finest level alone, and the bytes the data directory occupies after a clean stop (`du`,
# blocks allocated: the chunk store preallocates its journal sparsely, so apparent sizes say
# nothing).
#
#   scripts/bench-core-day.sh            each push's counts drawn around the fixture's (Poisson,
#                                        `--vary-values`), as a program's vary from push to push
#   REPLAY=1 scripts/bench-core-day.sh   the fixture's values replayed exactly (the shape of the
#                                        figures before 2026-12-01's thirteenth session)
#   CHURN=0.1 …                          10 % of function names renamed every hour
#   FILE=testdata/go-heap.pb.gz …        another fixture (default testdata/go-cpu.pb.gz)
#   SERIES=10 …                          a day of 10 series (10 profiled cores) side by side;
#                                        the figure is per core-day (the directory's bytes / 10)
#   PACED=1 …                            an apply after (nearly) every push, as a real day's
#                                        pushes 10 s apart cause (the daemon's flush interval
#                                        2 ms): coarse chunks are rewritten per push, not per
#                                        batch of pushes as when a day arrives in seconds
#   KILN_BIN_DIR=/path/to/bin …          binaries built elsewhere (kiln, kiln-loadgen)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench.sh
. scripts/lib/daemon.sh
if [ -z "${KILN_BIN_DIR:-}" ]; then
  cargo build --release -p kiln -p kiln-loadgen
  KILN_BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
file=${FILE:-testdata/go-cpu.pb.gz}
vary=--vary-values
[ "${REPLAY:-0}" = 1 ] && vary=
work=$(mktemp -d)
trap 'kill "${kiln_pid:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" || rm -rf "$work"' EXIT

series=${SERIES:-1}
if [ "${PACED:-0}" = 1 ]; then export KILN_FLUSH_INTERVAL=2ms; fi
start_kiln "$KILN_BIN_DIR/kiln" "$work/data"
"$KILN_BIN_DIR/kiln-loadgen" --url "$kiln_url" --day --day-series "$series" $vary \
  --churn "${CHURN:-0}" --file "$file" --concurrency 4 >"$work/load.out"
tail -n 2 "$work/load.out"
curl -sf "$kiln_url/api/storage" >"$work/usage.json"
stop_timed "$kiln_pid"
python3 - "$work/usage.json" "$(du -s --block-size=1 "$work/data" | cut -f1)" "$series" <<'PY'
import json, sys
usage = json.load(open(sys.argv[1]))
disk = int(sys.argv[2])
series = int(sys.argv[3])
finest = sum(e["bytes"] for e in usage["entries"] if e["level"] == "10s")
chunks = sum(e["chunks"] for e in usage["entries"] if e["level"] == "10s")
print(f"accounted (live keys and values): {usage['total_bytes']:,} bytes")
print(f"  finest level: {finest:,} bytes in {chunks:,} chunks ({finest / max(chunks, 1):.0f} B a chunk)")
print(f"data directory after a clean stop: {disk:,} bytes for {series} series "
      f"({disk / series / 1e6:.2f} MB per profiled core-day)")
PY
