#!/usr/bin/env bash
# The ClickHouse tests again on a current ClickHouse release: `cargo test` runs them on the
# server Debian packages (18.16); here they run on chDB's embedded engine (`chdb-core`, the
# version .ci/run installs) behind test-server/chdb_http.py, so Kiln's SQL is held to both.
# The same tests, the same assertions: storage, schema upgrades and races, TLS, and the daemon
# on ClickHouse answering like sled.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
python=${KILN_TEST_PYTHON:-python3}
version=$("$python" -c 'from chdb import session; s = session.Session(); print(bytes(s.query("SELECT version()", "TabSeparated").bytes()).decode().strip())') ||
  { echo "chDB is missing: $python -m pip install chdb-core"; exit 1; }
echo "ClickHouse $version (chDB)"
export KILN_TEST_CLICKHOUSE=chdb KILN_TEST_PYTHON=$python
cargo test --locked -p kiln-storage-clickhouse --tests
cargo test --locked -p kiln --test clickhouse
