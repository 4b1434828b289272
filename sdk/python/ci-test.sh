#!/usr/bin/env bash
# Tests of the Python SDK: the native sampler's crate (clippy, its unit tests, a wheel built with
# maturin), then the unit tests (fake server) with both samplers, then the end-to-end test that
# profiles the example app into the real daemon. Works from any directory; exits non-zero on any
# failure. The daemon binary comes from $KILN_BIN, else target/debug/kiln of this repository.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(git -C "$here" rev-parse --show-toplevel)
python=${PYTHON:-python3}

if ! "$python" -c 'import pytest' 2>/dev/null; then
  echo "sdk/python: pytest is missing for $python (install it: $python -m pip install pytest)" >&2
  exit 1
fi

export KILN_BIN=${KILN_BIN:-$root/target/debug/kiln}
if [[ ! -x $KILN_BIN ]]; then
  echo "sdk/python: daemon binary $KILN_BIN not found; build it with 'cargo build -p kiln' or set KILN_BIN" >&2
  exit 1
fi

# Keep the checkout clean of bytecode caches.
export PYTHONDONTWRITEBYTECODE=1

# The native sampler: built into the shared cargo target dir (the crate is outside the cargo
# workspace, so its default would be a target dir of its own), unpacked into a scratch
# directory put on PYTHONPATH rather than installed. The tests then require it to load.
if ! "$python" -m maturin --version >/dev/null 2>&1; then
  echo "sdk/python: maturin is missing for $python (install it: $python -m pip install maturin)" >&2
  exit 1
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
native=$here/native/Cargo.toml
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
echo "--- sdk/python: native sampler (clippy, unit tests, wheel)"
cargo clippy --manifest-path "$native" --all-targets --locked -- -D warnings
cargo test --manifest-path "$native" --locked
"$python" -m maturin build --manifest-path "$native" --locked --interpreter "$python" \
  --out "$scratch/wheel"
"$python" -m zipfile -e "$scratch"/wheel/*.whl "$scratch/site"
export PYTHONPATH=$scratch/site${PYTHONPATH:+:$PYTHONPATH}
export KILN_NATIVE_REQUIRED=1

echo "--- sdk/python: unit tests (each sampler)"
"$python" -m pytest -q "$here/tests" --ignore "$here/tests/test_e2e.py" --ignore "$here/tests/test_e2e_tls.py"

echo "--- sdk/python: end-to-end against $KILN_BIN (native sampler, then pure Python)"
KILN_E2E=1 "$python" -m pytest -q "$here/tests/test_e2e.py" "$here/tests/test_e2e_tls.py"
