#!/usr/bin/env bash
# CPU and memory overhead of the Rust SDK on the example workload: the same run (release build)
# without and with the agent pushing to a real daemon; user+sys CPU and max RSS of each, through
# scripts/lib/overhead.py. Honours CARGO_TARGET_DIR.
#
#   DURATION  seconds per run (default 20)      REPEAT  runs of each variant, taking turns (default 1)
#   KILN_BIN  a kiln binary to push to (any build: the daemon is not measured); without it a
#             release one is built
#   OFFICIAL=1  adds the official agent, the `pyroscope` crate with its pprof-rs backend
#             (sdk/rust/bench-official: the same workload and tags, 100 Hz, 10 s upload interval),
#             and the same build without it; afterwards checks that the daemon stored both
#             agents' profiles. That crate is not in the workspace (its own Cargo.lock): it is
#             built here only, into the same target dir.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-$PWD/target}
official=${OFFICIAL:-0}
cargo build --release -p rust-app
if [[ $official == 1 ]]; then
  . scripts/lib/official-agent.sh
  if ! CARGO_TARGET_DIR=$target cargo build --release --locked --manifest-path sdk/rust/bench-official/Cargo.toml; then
    echo "the official agent's variant (sdk/rust/bench-official, the pyroscope crate) could not be built: see cargo's error above" >&2
    exit 1
  fi
fi
if [[ -z ${KILN_BIN:-} ]]; then
  cargo build --release -p kiln
  KILN_BIN=$target/release/kiln
fi
. scripts/lib/daemon.sh
work=$(mktemp -d)
kiln_pid=
trap '[[ -n $kiln_pid ]] && kill $kiln_pid 2>/dev/null && wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
start_kiln "$KILN_BIN" "$work/data"
args="--server $kiln_url --duration ${DURATION:-20}"
app="$target/release/rust-app $args"
names=(--name "no SDK" --name "kiln SDK")
commands=("$app --no-profiling" "$app")
if [[ $official == 1 ]]; then
  version=$(awk '/^name = "pyroscope"$/ { getline; gsub(/"/, "", $3); print $3 }' sdk/rust/bench-official/Cargo.lock)
  agent="$target/release/rust-app-official $args"
  names+=(--name "official pyroscope $version (pprof-rs)" --name "no agent (official's build)")
  commands+=("$agent" "$agent --no-profiling")
fi
python3 scripts/lib/overhead.py --repeat "${REPEAT:-1}" "${names[@]}" "${commands[@]}"
if [[ $official == 1 ]] && ! check_stored "$kiln_url" rust-app rust-app-official; then
  echo "one agent's pushes were not stored; a short run of each with its log:" >&2
  RUST_LOG=info "$target/release/rust-app" --server "$kiln_url" --duration 3 --upload-interval 1 >&2 || true
  RUST_LOG=info "$target/release/rust-app-official" --server "$kiln_url" --duration 3 --upload-interval 1 >&2 || true
  exit 1
fi
