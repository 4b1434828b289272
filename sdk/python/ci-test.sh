#!/usr/bin/env bash
# Tests of the Python SDK: the unit tests (fake server), then the end-to-end test that profiles
# the example app into the real daemon. Works from any directory; exits non-zero on any failure.
# The daemon binary comes from $KILN_BIN, else target/debug/kiln of this repository.
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

echo "--- sdk/python: unit tests"
"$python" -m pytest -q "$here/tests" --ignore "$here/tests/test_e2e.py" --ignore "$here/tests/test_e2e_tls.py"

echo "--- sdk/python: end-to-end against $KILN_BIN"
KILN_E2E=1 "$python" -m pytest -q "$here/tests/test_e2e.py" "$here/tests/test_e2e_tls.py"
