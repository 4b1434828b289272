#!/usr/bin/env bash
# Rust SDK: unit tests, then the example app against a real daemon (examples/rust-app/tests/e2e.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
export KILN_BIN=${KILN_BIN:-$PWD/target/debug/kiln}
[[ -x $KILN_BIN ]] || { echo "kiln binary not found at $KILN_BIN (build it with cargo build -p kiln)"; exit 1; }
cargo test -p kiln-sdk -p rust-app
