#!/usr/bin/env bash
# Runs every test of Kiln: the Rust workspace (unit and end-to-end), each SDK's own runner and
# its end-to-end test against the real daemon, the plugin examples and the browser tests.
# The daemon is built once (debug) and handed to every suite as KILN_BIN.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Suites beyond `cargo test`, each a script that exits non-zero on failure.
suites=(
  fuzz/run.sh
  sdk/go/ci-test.sh
  sdk/java/ci-test.sh
  sdk/python/ci-test.sh
  sdk/rust/ci-test.sh
  ui-tests/ci-test.sh
  compat/agents/ci-test.sh
  compat/conformance/ci-test.sh
  compat/grafana-client/ci-test.sh
  plugins/clickhouse/ci-current.sh
  examples/wasm-exporter-python/ci-test.sh
)

passed=0
failed=0
failures=()
run() {
  local name=$1; shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

run "cargo fmt --check" cargo fmt --all -- --check
run "cargo build" cargo build --workspace --all-targets --locked
run "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
run "cargo test" cargo test --workspace --locked
export KILN_BIN="$root/target/debug/kiln"
for suite in "${suites[@]}"; do
  if [[ -f "$suite" ]]; then
    if [[ $suite == fuzz/run.sh ]]; then
      run "$suite" bash "$suite" "${FUZZ_SECONDS:-20}"
    else
      run "$suite" bash "$suite"
    fi
  else
    echo "missing test suite: $suite"
    failed=$((failed + 1))
    failures+=("$suite (missing)")
  fi
done

echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "suites: $passed passed, $failed failed"
((failed == 0))
