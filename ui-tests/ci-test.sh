#!/usr/bin/env bash
# Kiln web UI tests in headless Chromium: installs the test dependencies (npm ci), starts the real
# daemon ($KILN_BIN, else target/debug/kiln) on a free loopback port with a temporary storage dir,
# pushes the testdata profiles at two times (so a diff has two sides), then runs every test under
# ui-tests/tests with Node's test runner (login.e2e starts a second daemon of its own, with auth on). Screenshots and exported files go to artifacts/ui/.
# Needs: Node >= 20, Debian's chromium (/usr/bin/chromium or $KILN_CHROMIUM), curl, and Go for
# `go tool pprof`. Works from any directory; exits non-zero on any failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))"
kiln_bin="${KILN_BIN:-$repo/target/debug/kiln}"
chromium="${KILN_CHROMIUM:-/usr/bin/chromium}"

fail() { echo "ui-tests: $*" >&2; exit 1; }
[ -x "$kiln_bin" ] || fail "no kiln binary at $kiln_bin: run 'cargo build -p kiln' or set KILN_BIN"
[ -x "$chromium" ] || fail "no Chromium at $chromium: apt-get install -y chromium (or set KILN_CHROMIUM)"
command -v node >/dev/null || fail "node (>= 20) is not installed"
command -v curl >/dev/null || fail "curl is not installed"

cd "$here"
npm ci --no-audit --no-fund --loglevel=error

workdir="$(mktemp -d "${TMPDIR:-/tmp}/kiln-ui-tests.XXXXXX")"
daemon_pid=""
cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

port="$(node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
url="http://127.0.0.1:$port"
"$kiln_bin" server --listen "127.0.0.1:$port" --storage-path "$workdir/data" --self-profiling false >"$workdir/kiln.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 150); do
  curl -fsS "$url/healthz" >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$workdir/kiln.log" >&2; fail "the daemon exited before it was ready"; }
  sleep 0.2
done
curl -fsS "$url/healthz" >/dev/null || { cat "$workdir/kiln.log" >&2; fail "the daemon did not answer /healthz within 30 s"; }

# Two pushes of each profile, 45 and 15 minutes ago: the default diff (halves of the last hour)
# then has data on both sides. Each time carries its own region label for the tag explorer.
testdata="$repo/testdata"
now="$(date +%s)"
earlier=$((now - 2700))
later=$((now - 900))
ingest() { # ingest NAME TIME CURL-ARGS...
  local name="$1" time="$2"
  shift 2
  curl -fsS -o /dev/null "$@" "$url/ingest?name=$name&from=$time&until=$((time + 10))" ||
    fail "ingest of $name at $time failed"
}
for pair in "eu:$earlier" "us:$later"; do
  region="${pair%%:*}"
  time="${pair#*:}"
  labels="%7Benv%3Dci%2Cregion%3D$region%7D"
  ingest "uitest$labels" "$time" -F "profile=@$testdata/go-cpu.pb.gz"
  ingest "uitest$labels&format=pprof" "$time" --data-binary "@$testdata/go-heap.pb.gz"
  ingest "uitest-folded.cpu$labels&format=folded" "$time" --data-binary "@$testdata/collapsed.txt"
done
# The later folded push spends more in one function, so the folded diff shows a change.
ingest "uitest-folded.cpu%7Benv%3Dci%2Cregion%3Dus%7D&format=folded" "$later" \
  --data-binary $'main;handleRequest;parseJSON;decodeString 400\n'

mkdir -p "$repo/artifacts/ui"
cp "$workdir/kiln.log" "$repo/artifacts/ui/kiln.log" 2>/dev/null || true
status=0
KILN_URL="$url" KILN_BIN="$kiln_bin" node --test --test-concurrency=1 tests/ || status=$?
cp "$workdir/kiln.log" "$repo/artifacts/ui/kiln.log" 2>/dev/null || true
exit "$status"
