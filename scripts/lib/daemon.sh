# Sourced by test and benchmark scripts: starts a daemon for them.
#
#   start_kiln BINARY DATA_DIR  → sets $kiln_url and $kiln_pid once /healthz answers (fails otherwise)

start_kiln() {
  local bin=$1 data=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$data" --self-profiling false --log-level warn &
  kiln_pid=$!
  kiln_url="http://127.0.0.1:$port"
  for _ in $(seq 200); do
    curl -sf "$kiln_url/healthz" >/dev/null && return 0
    sleep 0.1
  done
  echo "kiln did not become healthy at $kiln_url" >&2
  return 1
}
