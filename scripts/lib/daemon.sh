# Sourced by test and benchmark scripts: starts a daemon for them.
#
#   start_kiln BINARY DATA_DIR  → sets $kiln_url and $kiln_pid once /healthz answers (fails otherwise);
#                                 its config is $KILN_CONFIG if set (else none: the defaults)
#   start_pyroscope BINARY DIR  → starts a Grafana Pyroscope v1 single binary (all its state under
#                                 DIR, loopback only, its log in DIR.log); sets $pyro_url and
#                                 $pyro_pid once /ready answers (fails otherwise)

start_kiln() {
  local bin=$1 data=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" server --config "${KILN_CONFIG:-/dev/null}" --listen "127.0.0.1:$port" --storage-path "$data" --self-profiling false --log-level warn &
  kiln_pid=$!
  kiln_url="http://127.0.0.1:$port"
  for _ in $(seq 1000); do
    curl -sf "$kiln_url/healthz" >/dev/null && return 0
    sleep 0.02
  done
  echo "kiln did not become healthy at $kiln_url" >&2
  return 1
}

# Limits are raised so that the benchmark's load is not refused by policy: the per-tenant
# ingestion rate (default 4 MB/s), the series limit, and the refusal of profiles older than 1 h
# (the load backfills a day). Readiness does not wait the ingester's default 15 s settling time.
# Self-profiling, usage reporting and tracing are off. As in its default single-binary setup, no
# object storage is configured: blocks stay in the ingester's data path, which serves all queries
# (with `-storage.backend=filesystem` the same blocks are also uploaded to the bucket, and after a
# restart v1.21.1 counted blocks present in both twice in a merge).
start_pyroscope() {
  local bin=$1 dir=$2 http grpc gossip
  http=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  grpc=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  gossip=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$dir"
  "$bin" -target=all -log.level=warn \
    -server.http-listen-address=127.0.0.1 -server.http-listen-port="$http" \
    -server.grpc-listen-address=127.0.0.1 -server.grpc-listen-port="$grpc" \
    -memberlist.bind-addr=127.0.0.1 -memberlist.bind-port="$gossip" \
    -memberlist.advertise-addr=127.0.0.1 -memberlist.advertise-port="$gossip" \
    -ingester.lifecycler.addr=127.0.0.1 -distributor.ring.instance-addr=127.0.0.1 \
    -compactor.ring.instance-addr=127.0.0.1 -store-gateway.sharding-ring.instance-addr=127.0.0.1 \
    -query-scheduler.ring.instance-addr=127.0.0.1 -query-frontend.instance-addr=127.0.0.1 \
    -overrides-exporter.ring.instance-addr=127.0.0.1 \
    -pyroscopedb.data-path="$dir/data" \
    -compactor.data-dir="$dir/compactor" -blocks-storage.bucket-store.sync-dir="$dir/sync" \
    -embedded-grafana.data-path="$dir/grafana" \
    -self-profiling.disable-push=true -usage-stats.enabled=false -tracing.enabled=false \
    -distributor.ingestion-rate-limit-mb=100000 -distributor.ingestion-burst-size-mb=100000 \
    -validation.reject-older-than=0 -ingester.max-global-series-per-tenant=0 \
    -ingester.min-ready-duration=0s \
    >>"$dir.log" 2>&1 &
  pyro_pid=$!
  pyro_url="http://127.0.0.1:$http"
  for _ in $(seq 3000); do
    curl -sf "$pyro_url/ready" >/dev/null && return 0
    kill -0 "$pyro_pid" 2>/dev/null || break
    sleep 0.02
  done
  echo "pyroscope did not become ready at $pyro_url; last lines of $dir.log:" >&2
  tail -20 "$dir.log" >&2
  return 1
}

#   start_kiln_auth BINARY DATA_DIR → as start_kiln, with auth on; first makes a writer and a
#                                     reader API key (tenant anonymous) in DATA_DIR, in
#                                     $kiln_write_key and $kiln_read_key
#   kiln_unauthenticated            → how many requests that daemon refused for want of a
#                                     credential (kiln_auth_refused_total{cause="unauthenticated"})
start_kiln_auth() {
  local bin=$1 data=$2
  kiln_write_key=$("$bin" admin apikey create --config /dev/null --storage-path "$data" --name writer --role writer 2>/dev/null) &&
    kiln_read_key=$("$bin" admin apikey create --config /dev/null --storage-path "$data" --name reader --role reader 2>/dev/null) &&
    KILN_AUTH_ENABLED=true KILN_ADMIN_PASSWORD="unused-$RANDOM$RANDOM$RANDOM" start_kiln "$bin" "$data"
}

kiln_unauthenticated() {
  curl -sf -H "Authorization: Bearer $kiln_read_key" "$kiln_url/metrics" |
    awk '/^kiln_auth_refused_total\{/ && /cause="unauthenticated"/ { n += $NF } END { print n + 0 }'
}

#   make_test_certs DIR             → a throwaway CA (ca.pem), a server certificate for 127.0.0.1
#                                     and localhost signed by it (server.pem, server.key), a client
#                                     certificate for mutual TLS (client.pem, client.key) and an
#                                     unrelated CA (other-ca.pem) that must not be trusted
#   start_kiln_tls_auth BINARY DATA_DIR CERT_DIR
#                                   → as start_kiln_auth, serving HTTPS with CERT_DIR's server
#                                     certificate and, when CERT_DIR/client-ca.pem exists, mutual
#                                     TLS; $kiln_url is https://127.0.0.1:PORT
make_test_certs() {
  local dir=$1 ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  mkdir -p "$dir"
  for ca in ca other-ca; do
    openssl req -x509 "${ec[@]}" -keyout "$dir/$ca.key" -out "$dir/$ca.pem" -days 2 -subj "/CN=kiln test $ca" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  done
  local leaf usage
  for leaf in server client; do
    usage=serverAuth
    [[ $leaf == client ]] && usage=clientAuth
    openssl req "${ec[@]}" -keyout "$dir/$leaf.key" -out "$dir/$leaf.csr" -subj "/CN=kiln test $leaf" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n' "$usage" >"$dir/$leaf.ext"
    openssl x509 -req -in "$dir/$leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
      -out "$dir/$leaf.pem" -days 2 -extfile "$dir/$leaf.ext" 2>/dev/null
  done
}

start_kiln_tls_auth() {
  local bin=$1 data=$2 certs=$3 port mtls=()
  [[ -f $certs/client-ca.pem ]] && mtls=(--tls-client-ca-file "$certs/client-ca.pem")
  kiln_write_key=$("$bin" admin apikey create --config /dev/null --storage-path "$data" --name writer --role writer 2>/dev/null) &&
    kiln_read_key=$("$bin" admin apikey create --config /dev/null --storage-path "$data" --name reader --role reader 2>/dev/null) || return 1
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  KILN_AUTH_ENABLED=true KILN_ADMIN_PASSWORD="unused-$RANDOM$RANDOM$RANDOM" "$bin" server --config /dev/null \
    --listen "127.0.0.1:$port" --storage-path "$data" --self-profiling false --log-level warn \
    --tls-cert-file "$certs/server.pem" --tls-key-file "$certs/server.key" "${mtls[@]}" &
  kiln_pid=$!
  kiln_url="https://127.0.0.1:$port"
  local client=()
  [[ ${#mtls[@]} -gt 0 ]] && client=(--cert "$certs/client.pem" --key "$certs/client.key")
  for _ in $(seq 1000); do
    curl -sf --cacert "$certs/ca.pem" "${client[@]}" "$kiln_url/healthz" >/dev/null && return 0
    sleep 0.02
  done
  echo "kiln did not become healthy at $kiln_url" >&2
  return 1
}

#   kiln_ticks QUERY [CURL_ARGS...] → numTicks of /render for QUERY over the last 10 minutes,
#                                     read with $kiln_read_key (CURL_ARGS e.g. --cacert FILE)
kiln_ticks() {
  local q=$1
  shift
  curl -sfG "$@" -H "Authorization: Bearer $kiln_read_key" --data-urlencode "query=$q" \
    --data-urlencode from=now-10m --data-urlencode until=now+1m "$kiln_url/render" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["flamebearer"]["numTicks"])'
}
