#!/usr/bin/env bash
# What a Wasm sink adds to ingest: the ingest benchmark's load (scripts/bench-ingest.sh) at a
# fixed rate (RATE pushes/s, default 2,000 — the core target; each push is a Go CPU
# pprof stored as two profile types), run three times on a release daemon — without a sink,
# with the `top-functions` example sink in the default pipeline receiving every profile, and
# with it asking for the `cpu` type only — printing the daemon's CPU for each, and the share of it
# the sink's calls took (kiln_plugin_cpu_seconds_total). REPEAT=N runs the three N times in
# turn (each repeat starting one variant later) and ends with the medians: identical runs on a
# small shared machine differ by more than the effect measured.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Honours CARGO_TARGET_DIR like cargo does. KILN_BIN runs another daemon binary (one built from
# an earlier commit, to compare) under the same load generator and sink; SINK_WASM runs another
# build of the sink (one built against the contract that daemon speaks).
target=${CARGO_TARGET_DIR:-$root/target}
kiln_bin=${KILN_BIN:-$target/release/kiln}
cargo build --release -p kiln -p kiln-loadgen
(cd examples/wasm-exporter-rust &&
  CARGO_TARGET_DIR="$target/wasm-guests" cargo build --release --target wasm32-wasip2)

work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/plugins" "$work/out"
cp "${SINK_WASM:-$target/wasm-guests/wasm32-wasip2/release/kiln_top_functions.wasm}" \
  "$work/plugins/kiln_top_functions.wasm"

run() {
  local label=$1 config=$2
  local data port
  data=$(mktemp -d -p "$work")
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$kiln_bin" server --config "$config" --listen "127.0.0.1:$port" --storage-path "$data" \
    --self-profiling false --log-level warn &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "== $label"
  "$target"/release/kiln-loadgen --url "http://127.0.0.1:$port" --series "${SERIES:-200}" \
    --concurrency "${CONCURRENCY:-4}" --seconds "${SECONDS_TO_RUN:-15}" --rate "${RATE:-2000}" --pid "$pid" |
    tee "$work/load.txt"
  local per_profile
  per_profile=$(awk '/^server:/ { for (i = 1; i < NF; i++) if ($(i + 1) == "ms") print $i }' "$work/load.txt")
  # The sink's own share, measured inside the same run (no run-to-run noise): CPU the daemon
  # spent converting batches and in the guest (kiln_plugin_cpu_seconds_total) against all the
  # CPU the daemon used since it started.
  local plugin_cpu process_cpu
  plugin_cpu=$(curl -sf "http://127.0.0.1:$port/metrics" |
    awk '/^kiln_plugin_cpu_seconds_total/ { s += $NF } END { printf "%.3f", s + 0 }')
  process_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$pid/stat")
  python3 -c "import sys; p, t = map(float, sys.argv[1:]); print(f'plugin CPU {p:.2f} s of the daemon\'s {t:.2f} s ({100 * p / t:.1f} %)')" \
    "$plugin_cpu" "$process_cpu"
  printf '%s\t%s\t%s\t%s\n' "$label" "${per_profile:-nan}" "$plugin_cpu" "$process_cpu" >> "$work/runs.tsv"
  kill -TERM "$pid"; wait "$pid" || true
  # The next run starts with this one's data gone and written back, not still being flushed.
  rm -rf "$data"; sync; sleep 2
}

printf '[server]\nplugins_dir = "%s"\n' "$work/plugins" > "$work/plain.toml"
cat > "$work/sink.toml" <<TOML
[server]
plugins_dir = "$work/plugins"

[sinks.top]
type = "top-functions"
[sinks.top.sandbox]
dir = "$work/out"

[pipelines.default]
sinks = ["top"]
TOML
sed 's/^type = "top-functions"$/type = "top-functions"\ntypes = ["cpu"]/' "$work/sink.toml" > "$work/sink-cpu.toml"

labels=("without a sink" "with the Wasm sink top-functions, every profile"
  "with the Wasm sink top-functions, types = [\"cpu\"]")
configs=("$work/plain.toml" "$work/sink.toml" "$work/sink-cpu.toml")
# Each repeat starts one variant later, so that none is always the first or the last run
# (runs late in a sequence were measured slower, whatever they ran).
for ((r = 0; r < ${REPEAT:-1}; r++)); do
  for ((i = 0; i < 3; i++)); do
    v=$(((r + i) % 3))
    run "${labels[$v]}" "${configs[$v]}"
  done
done
echo "sink output: $(wc -l < "$work/out/top-functions.jsonl") JSON lines"
python3 - "$work/runs.tsv" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, per_profile, plugin, process = line.rstrip("\n").split("\t")
    runs.setdefault(label, []).append((float(per_profile), float(plugin) / float(process)))
base = statistics.median(p for p, _ in runs["without a sink"])
print(f"medians over {len(runs['without a sink'])} run(s) of each:")
for label, rs in runs.items():
    per_profile = statistics.median(p for p, _ in rs)
    share = statistics.median(s for _, s in rs)
    if label == "without a sink":
        print(f"  {label}: {per_profile:.3f} ms CPU per profile")
        continue
    print(f"  {label}: {per_profile:.3f} ms CPU per profile, {100 * (per_profile / base - 1):+.1f} % "
          f"against no sink; its calls {100 * share:.1f} % of the daemon's CPU "
          f"(+{100 * share / (1 - share):.1f} % on top of the rest)")
PY
