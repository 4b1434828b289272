#!/usr/bin/env bash
# Rust SDK: unit tests, then the example app against a real daemon (examples/rust-app/tests/e2e.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
export KILN_BIN=${KILN_BIN:-$PWD/target/debug/kiln}
[[ -x $KILN_BIN ]] || { echo "kiln binary not found at $KILN_BIN (build it with cargo build -p kiln)"; exit 1; }
cargo test -p kiln-sdk -p rust-app

# TLS: a daemon serving HTTPS with a throwaway CA and requiring client certificates (mutual
# TLS). The push with ca_file and client_cert is stored; the push trusting another CA is refused
# by the SDK's certificate check, logged, and stores nothing.
cargo build -q -p rust-app
app=${CARGO_TARGET_DIR:-$PWD/target}/debug/rust-app
work=$(mktemp -d)
trap 'kill $kiln_pid 2>/dev/null; wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. scripts/lib/daemon.sh
make_test_certs "$work/certs"
cp "$work/certs/ca.pem" "$work/certs/client-ca.pem"
start_kiln_tls_auth "$KILN_BIN" "$work/data" "$work/certs"
client=(--client-cert "$work/certs/client.pem" --client-key "$work/certs/client.key")
read_tls=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client.pem" --key "$work/certs/client.key")
RUST_LOG=warn "$app" --server "$kiln_url" --duration 4 --upload-interval 1 --tag env=tls \
  --auth-token "$kiln_write_key" --ca-file "$work/certs/ca.pem" "${client[@]}" 2>"$work/tls.log"
ticks=$(kiln_ticks 'rust-app.cpu{env="tls"}' "${read_tls[@]}")
((ticks > 0)) || { echo "sdk/rust: nothing stored from the push over TLS with ca_file"; cat "$work/tls.log"; exit 1; }
RUST_LOG=warn "$app" --server "$kiln_url" --duration 2 --upload-interval 1 --tag env=wrongca \
  --auth-token "$kiln_write_key" --ca-file "$work/certs/other-ca.pem" "${client[@]}" 2>"$work/wrongca.log"
grep -q "UnknownIssuer" "$work/wrongca.log" ||
  { echo "sdk/rust: the push trusting another CA did not report a certificate error"; cat "$work/wrongca.log"; exit 1; }
wrong=$(kiln_ticks 'rust-app.cpu{env="wrongca"}' "${read_tls[@]}")
((wrong == 0)) || { echo "sdk/rust: a push trusting another CA was stored ($wrong ticks)"; exit 1; }
echo "sdk/rust: TLS with ca_file and client_cert stored ($ticks ticks); another CA refused by the SDK"
