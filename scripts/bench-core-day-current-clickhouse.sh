#!/usr/bin/env bash
# ClickHouse bytes on disk per profiled core per day on a current ClickHouse release: one day of
# one series (8,640 Go CPU pushes 10 s apart, `kiln-loadgen --day --vary-values`) into a fresh
# database on chDB's embedded engine (`chdb-core`, as .ci/run installs it) behind
# plugins/clickhouse/test-server/chdb_http.py, then `OPTIMIZE … FINAL` and the bytes of its
# active parts, per table and per column with each column's codec. Bytes only: the adapter
# runs one statement at a time in Python, so its speed says nothing of a server's (for speed,
# scripts/bench-clickhouse.sh against clickhouse-server).
#
#   KILN_BIN_DIR=/path/to/bin …   binaries built elsewhere (kiln, kiln-loadgen)
#   KILN_TEST_PYTHON=…            the interpreter that has chdb-core (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/daemon.sh
if [ -z "${KILN_BIN_DIR:-}" ]; then
  cargo build --release -p kiln -p kiln-loadgen
  KILN_BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
ch_pid='' kiln_pid=''
trap 'kill $kiln_pid $ch_pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/ch/cwd"
ch_port=$(free_port)
# Its own working directory: chDB reads a config.xml it finds there.
(cd "$work/ch/cwd" && exec "${KILN_TEST_PYTHON:-python3}" "$OLDPWD/plugins/clickhouse/test-server/chdb_http.py" \
  --port "$ch_port" --path "$work/ch/data" --user kiln --password bench 2>"$work/ch/log") &
ch_pid=$!
sql() { curl -sf -u kiln:bench "http://127.0.0.1:$ch_port/" --data-binary "$1"; }
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ch_port/ping" >/dev/null && break; sleep 0.1; done
head -n 1 "$work/ch/log"
export KILN_CONFIG=$work/kiln.toml
cat > "$KILN_CONFIG" <<TOML
[storage]
type = "clickhouse"
[storage.clickhouse]
url = "http://127.0.0.1:$ch_port"
database = "day"
user = "kiln"
password = "bench"
TOML
start_kiln "$KILN_BIN_DIR/kiln" "$work/wal" >"$work/kiln.log" 2>&1
"$KILN_BIN_DIR/kiln-loadgen" --url "$kiln_url" --day --vary-values --concurrency 4 | tail -n 2
# A clean stop sends what the daemon still buffers.
kill "$kiln_pid"; wait "$kiln_pid" || true; kiln_pid=''
for t in buckets fine series stacks frames; do sql "OPTIMIZE TABLE day.$t FINAL"; done
sql "SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts
     WHERE database = 'day' AND active GROUP BY table ORDER BY table FORMAT PrettyCompactNoEscapes"
echo "per profiled core per day: $(sql "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = 'day' AND active") bytes on disk; the largest columns:"
sql "SELECT table, name, data_compressed_bytes AS packed, data_uncompressed_bytes AS raw,
     compression_codec FROM system.columns WHERE database = 'day' AND table != 'all_buckets'
     ORDER BY packed DESC LIMIT 6 FORMAT PrettyCompactNoEscapes"
