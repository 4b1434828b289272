#!/usr/bin/env bash
# The ClickHouse tests again on a current ClickHouse release: `cargo test` runs them on the
# server Debian packages (18.16); here they run on chDB's embedded engine (`chdb-core`, the
# version .ci/run installs) behind test-server/chdb_http.py, so Kiln's SQL is held to both.
# The same tests, the same assertions: storage, schema upgrades and races, TLS, and the daemon
# on ClickHouse answering like sled. The test binaries are the ones `cargo test --workspace`
# built (selecting packages with -p would resolve features anew and rebuild the daemon).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${KILN_TEST_PYTHON:-python3}
version=$("$python" -c 'from chdb import session; s = session.Session(); print(bytes(s.query("SELECT version()", "TabSeparated").bytes()).decode().strip())') ||
  { echo "chDB is missing: $python -m pip install chdb-core"; exit 1; }
echo "ClickHouse $version (chDB)"
export KILN_TEST_CLICKHOUSE=chdb KILN_TEST_PYTHON=$python
# Each as `cargo test` runs it: from its package's directory.
mapfile -t binaries < <(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    src = m["target"]["src_path"]
    tests = os.path.dirname(src)
    if tests.endswith("/plugins/clickhouse/tests") or src.endswith("/daemon/tests/clickhouse.rs"):
        print(os.path.dirname(tests) + "\t" + m["executable"])
')
((${#binaries[@]} == 4)) || { echo "expected 4 ClickHouse test binaries, found ${#binaries[@]}: ${binaries[*]}"; exit 1; }
for b in "${binaries[@]}"; do
  dir=${b%%$'\t'*} exe=${b#*$'\t'}
  echo "== $exe"
  (cd "$dir" && "$exe")
done
