#!/usr/bin/env bash
# CPU and memory overhead of the Rust SDK on the example workload: the same run (release build)
# without and with the agent pushing to a real daemon; user+sys CPU and max RSS of each.
# DURATION: seconds per run (default 20). KILN_BIN: a kiln binary to push to (any build: the
# daemon is not measured); without it a release one is built. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -p rust-app
if [[ -z ${KILN_BIN:-} ]]; then
  cargo build --release -p kiln
  KILN_BIN=$target/release/kiln
fi
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$KILN_BIN" --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
app="$target/release/rust-app --server http://127.0.0.1:$port --duration ${DURATION:-20}"
python3 scripts/lib/overhead.py "$app --no-profiling" "$app"
