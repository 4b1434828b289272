#!/usr/bin/env bash
# Go SDK: vet and unit tests, then the example app against a real daemon with auth on, pushing
# with a writer key and checked via /render with a reader key; the same push without the key
# must be refused (401).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
[[ -x $kiln ]] || { echo "kiln binary not found at $kiln (build it with cargo build -p kiln)"; exit 1; }

(cd "$here" && go vet ./... && go test -count=1 ./...)

work=$(mktemp -d)
trap 'kill $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln_auth "$kiln" "$work/data"
(cd "$root/examples/go-app" && go build -o "$work/go-app" .)
"$work/go-app" -server "$kiln_url" -duration 8s -upload-rate 2s -tag env=e2e -auth-token "$kiln_write_key"
KILN_READ_KEY=$kiln_read_key python3 "$here/e2e_check.py" "$kiln_url"
before=$(kiln_unauthenticated)
KILN_AUTH_TOKEN= "$work/go-app" -server "$kiln_url" -duration 3s -upload-rate 1s -tag env=nokey -auth-token "" 2>/dev/null
after=$(kiln_unauthenticated)
((after > before)) || { echo "sdk/go: the push without a key was not refused ($before → $after)"; exit 1; }
echo "sdk/go: pushes without a key refused with 401 ($((after - before)))"

# TLS: a daemon serving HTTPS with a throwaway CA and requiring client certificates (mutual
# TLS). The push with CAFile and the client certificate is stored; the push trusting another CA
# is refused by the SDK's certificate check, logged, and stores nothing.
kill "$kiln_pid" && wait "$kiln_pid" 2>/dev/null || true
certs=$work/certs
make_test_certs "$certs"
cp "$certs/ca.pem" "$certs/client-ca.pem"
start_kiln_tls_auth "$kiln" "$work/tls-data" "$certs"
client=(-client-cert "$certs/client.pem" -client-key "$certs/client.key")
read_tls=(--cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key")
"$work/go-app" -server "$kiln_url" -duration 4s -upload-rate 1s -tag env=tls -auth-token "$kiln_write_key" \
  -ca-file "$certs/ca.pem" "${client[@]}" 2>"$work/tls.log"
ticks=$(kiln_ticks 'go-app.cpu{env="tls"}' "${read_tls[@]}")
((ticks > 0)) || { echo "sdk/go: nothing stored from the push over TLS with CAFile"; cat "$work/tls.log"; exit 1; }
"$work/go-app" -server "$kiln_url" -duration 2s -upload-rate 1s -tag env=wrongca -auth-token "$kiln_write_key" \
  -ca-file "$certs/other-ca.pem" "${client[@]}" 2>"$work/wrongca.log"
grep -q "certificate signed by unknown authority" "$work/wrongca.log" ||
  { echo "sdk/go: the push trusting another CA did not report a certificate error"; cat "$work/wrongca.log"; exit 1; }
wrong=$(kiln_ticks 'go-app.cpu{env="wrongca"}' "${read_tls[@]}")
((wrong == 0)) || { echo "sdk/go: a push trusting another CA was stored ($wrong ticks)"; exit 1; }
echo "sdk/go: TLS with CAFile and a client certificate stored ($ticks ticks); another CA refused by the SDK"
