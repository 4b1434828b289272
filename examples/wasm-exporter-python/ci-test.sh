#!/usr/bin/env bash
# End-to-end test of the `top-functions-py` sink: unit tests, component build, then the real
# daemon loading the component from a plugins directory, fed the repository's folded and pprof
# profiles, writing JSON lines into its granted directory and POSTing them to an allow-listed
# webhook; and `kiln validate` refusing a misspelt option.
#
# Needs python3 with pytest and componentize-py 0.25, and the daemon: $KILN_BIN, or
# target/debug/kiln of this repository.
set -euo pipefail
export RUST_BACKTRACE=0

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(git -C "$here" rev-parse --show-toplevel)"
kiln="${KILN_BIN:-$root/target/debug/kiln}"
testdata="$root/testdata"
ready_timeout=120

fail() {
    echo "ci-test: FAIL: $*" >&2
    exit 1
}

[[ -x "$kiln" ]] || fail "no daemon binary at $kiln (set KILN_BIN, or build it: cargo build -p kiln)"

echo "== unit tests"
(cd "$here" && PYTHONDONTWRITEBYTECODE=1 python3 -m pytest -q -p no:cacheprovider)

echo "== build"
"$here/build.sh"
wasm="$here/target/top-functions-py.wasm"

tmp="$(mktemp -d)"
daemon_pid=""
hook_pid=""
cleanup() {
    local status=$?
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" 2>/dev/null || true
        wait "$daemon_pid" 2>/dev/null || true
    fi
    if [[ -n "$hook_pid" ]]; then
        kill -TERM "$hook_pid" 2>/dev/null || true
        wait "$hook_pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$tmp/daemon.log" ]]; then
        echo "---- daemon log (last 60 lines)" >&2
        tail -n 60 "$tmp/daemon.log" >&2
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

seconds_between() { # start, end (date +%s.%N)
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

mkdir -p "$tmp/plugins" "$tmp/out" "$tmp/storage"
cp "$wasm" "$tmp/plugins/"

# A webhook on loopback that appends every POSTed body to hook.ndjson and answers 204.
hook_port="$(free_port)"
hook_url="http://127.0.0.1:$hook_port/hook"
python3 - "$hook_port" "$tmp/hook.ndjson" >"$tmp/hook.log" 2>&1 <<'EOF' &
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, path = int(sys.argv[1]), sys.argv[2]


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        with open(path, "ab") as out:
            out.write(body)
        self.send_response(204)
        self.end_headers()


HTTPServer(("127.0.0.1", port), Hook).serve_forever()
EOF
hook_pid=$!

write_config() { # file, sink options
    cat >"$1" <<EOF
[server]
plugins_dir = "$tmp/plugins"

[sinks.toppy]
type = "top-functions-py"
$2
[sinks.toppy.sandbox]
dir = "$tmp/out"

[sinks.tophook]
type = "top-functions-py"
top = 1
webhook = "$hook_url"
[sinks.tophook.sandbox]
http_allow = ["$hook_url"]

[pipelines.default]
sinks = ["toppy", "tophook"]
EOF
}

echo "== configuration errors name the sink and the option"
expect_refused() { # options, words the message must contain...
    local options="$1"
    shift
    write_config "$tmp/bad.toml" "$options"
    local out
    if out="$("$kiln" validate --config "$tmp/bad.toml" 2>&1)"; then
        fail "kiln validate accepted [sinks.toppy] $options"
    fi
    for word in "$@"; do
        [[ "$out" == *"$word"* ]] || fail "kiln validate's message for '$options' lacks '$word': $out"
    done
    echo "refused as expected: $(tr '\n' ' ' <<<"$out" | tr -s ' ')"
}
expect_refused "topp = 3" "sinks.toppy" "topp"
expect_refused 'top = "3"' "sinks.toppy" '"top"'

# Each validation compiles the component; the good configuration is checked by starting on it.
write_config "$tmp/kiln.toml" "top = 3"

echo "== daemon"
port="$(free_port)"
base="http://127.0.0.1:$port"
started=$(date +%s.%N)
"$kiln" server --config "$tmp/kiln.toml" --listen "127.0.0.1:$port" --storage-path "$tmp/storage" \
    --self-profiling false --log-level "info,kiln_wasm_host=debug" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
deadline=$((SECONDS + ready_timeout))
until curl -fsS -o /dev/null "$base/healthz" 2>/dev/null; do
    kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited during startup"
    ((SECONDS < deadline)) || fail "the daemon was not ready within ${ready_timeout}s"
    sleep 0.2
done
ready=$(date +%s.%N)
echo "daemon ready with the Python plugin loaded in $(seconds_between "$started" "$ready") s"

ingest() { # query, file
    local status
    status="$(curl -sS -o "$tmp/ingest.out" -w '%{http_code}' --data-binary "@$2" "$base/ingest?$1")"
    [[ "$status" == 200 ]] || fail "ingest $1 answered $status: $(cat "$tmp/ingest.out")"
}
until_s=$(date +%s)
from_s=$((until_s - 10))
sent=$(date +%s.%N)
ingest "name=pyapp.cpu%7Benv%3Dci%7D&format=folded&from=$from_s&until=$until_s" \
    "$testdata/collapsed.txt"
ingest "name=goapp.cpu%7Benv%3Dci%7D&format=pprof" "$testdata/go-cpu.pb.gz"

lines_file="$tmp/out/top-functions-py.jsonl"
deadline=$((SECONDS + 60))
until [[ -f "$lines_file" ]] && grep -q '"service":"goapp"' "$lines_file" &&
    grep -q '"service":"pyapp"' "$lines_file"; do
    ((SECONDS < deadline)) || fail "no line for both profiles in $lines_file within 60s"
    sleep 0.2
done
echo "both profiles written $(seconds_between "$sent" "$(date +%s.%N)") s after the first ingest"
deadline=$((SECONDS + 30))
until [[ -f "$tmp/hook.ndjson" ]] && [[ "$(grep -c '' "$tmp/hook.ndjson")" -ge 2 ]]; do
    ((SECONDS < deadline)) || fail "the webhook did not receive both lines within 30s"
    sleep 0.2
done

# The collapsed profile's top function and total, counted here without the plugin: the last
# frame of each line is the function whose self value the line adds to.
read -r expected_total expected_self expected_top < <(
    awk '{ value = $NF; sub(/ [0-9]+$/, ""); n = split($0, frames, ";");
           self[frames[n]] += value; total += value }
         END { for (f in self)
                   if (self[f] > best || (self[f] == best && f < name)) { best = self[f]; name = f }
               print total, best, name }' "$testdata/collapsed.txt"
)
echo "expected for collapsed.txt: top $expected_top (self $expected_self of $expected_total)"

python3 - "$lines_file" "$tmp/hook.ndjson" "$expected_top" "$expected_self" "$expected_total" \
    "$from_s" "$until_s" <<'EOF'
import json
import sys

lines_file, hook_file, expected_top, expected_self, expected_total, from_s, until_s = sys.argv[1:]


def fail(message):
    sys.exit(f"ci-test: FAIL: {message}")


def check(record, max_top):
    top = record["top"]
    if not 1 <= len(top) <= max_top:
        fail(f"{len(top)} top entries, wanted 1..{max_top}: {record}")
    for entry in top:
        if set(entry) != {"function", "self", "share"}:
            fail(f"entry keys {sorted(entry)}: {record}")
        if not 0 < entry["share"] <= 1:
            fail(f"share {entry['share']} outside (0, 1]: {record}")
        if abs(entry["share"] - entry["self"] / record["total"]) > 1e-9:
            fail(f"share is not self/total: {record}")
    ranked = sorted(top, key=lambda e: (-e["self"], e["function"]))
    if ranked != top:
        fail(f"top entries are not ordered by self, then name: {record}")
    if record["labels"] != {"env": "ci"}:
        fail(f"labels wrong (service_name belongs in service): {record}")
    if not 0 < record["start_ns"] <= record["end_ns"]:
        fail(f"time range wrong: {record}")


records = [json.loads(line) for line in open(lines_file)]
by_service = {}
for record in records:
    by_service.setdefault(record["service"], []).append(record)
if sorted(by_service) != ["goapp", "pyapp"]:
    fail(f"services {sorted(by_service)}, wanted goapp and pyapp")

(py,) = by_service["pyapp"]
check(py, 3)
if py["type"] != "cpu" or (py["start_ns"], py["end_ns"]) != (
    int(from_s) * 10**9, int(until_s) * 10**9
):
    fail(f"type or time range of the folded profile wrong (from={from_s} until={until_s}): {py}")
if len(py["top"]) != 3:
    fail(f"collapsed.txt has 7 leaf functions, wanted 3 entries: {py}")
if (py["top"][0]["function"], py["top"][0]["self"], py["total"]) != (
    expected_top, int(expected_self), int(expected_total)
):
    fail(f"collapsed top {py['top'][0]} total {py['total']}, wanted {expected_top} "
         f"{expected_self} of {expected_total}")
for record in by_service["goapp"]:
    check(record, 3)
    print(f"goapp {record['type']}: total {record['total']}, top {record['top'][0]['function']}")
    if record["total"] <= 0:
        fail(f"the pprof profile has no value: {record}")

hooked = [json.loads(line) for line in open(hook_file)]
if sorted({r["service"] for r in hooked}) != ["goapp", "pyapp"]:
    fail(f"webhook lines: {hooked}")
for record in hooked:
    check(record, 1)
if next(r for r in hooked if r["service"] == "pyapp")["top"][0] != py["top"][0]:
    fail("the webhook sink and the file sink disagree on the top function")

go = by_service["goapp"][0]["top"][0]
print(f"ok: {len(records)} line(s); pyapp top {py['top'][0]['function']} "
      f"({py['top'][0]['share']:.3f}); goapp top {go['function']} ({go['share']:.3f})")
EOF

# The plugin's debug lines reach the daemon's log through the host `log` import.
grep -Eq 'consumed [0-9]+ profile\(s\) in' "$tmp/daemon.log" ||
    fail "the plugin's host log line is missing from the daemon log"
grep -o 'consumed [0-9]* profile(s) in [0-9.]* ms' "$tmp/daemon.log" | sed 's/^/plugin: /'

echo "== shutdown"
kill -TERM "$daemon_pid"
wait_deadline=$((SECONDS + 30))
while kill -0 "$daemon_pid" 2>/dev/null; do
    ((SECONDS < wait_deadline)) || fail "the daemon did not stop within 30s of SIGTERM"
    sleep 0.2
done
wait "$daemon_pid" || fail "the daemon exited with status $? on SIGTERM"
daemon_pid=""
echo "ci-test: wasm-exporter-python OK"
