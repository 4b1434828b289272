# Sourced by benchmark scripts: ports, clocks, process figures, timed HTTP calls.
#
#   free_port                 → a free loopback TCP port on stdout
#   now_ms                    → wall clock in milliseconds
#   wait_http URL [SECONDS]   → returns 0 as soon as URL answers 2xx (polls every 20 ms), 1 at timeout
#   cpu_ticks PID             → utime + stime of PID in clock ticks (/proc/PID/stat)
#   vmhwm_kb PID              → peak resident set size of PID in kB (VmHWM)
#   stop_timed PID [SECONDS]  → SIGTERM, wait for exit (SIGKILL after SECONDS, default 60); sets
#                               $stop_ms. PID must be a child of this shell: call it directly, not
#                               in $( ).
#   timed_get URL OUT         → GET URL into OUT; prints seconds (curl's time_total); fails on non-2xx
#   median                    → median of the numbers on stdin

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now_ms() {
  date +%s%3N
}

wait_http() {
  local url=$1 secs=${2:-60} deadline
  deadline=$(($(now_ms) + secs * 1000))
  while (($(now_ms) < deadline)); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    sleep 0.02
  done
  return 1
}

cpu_ticks() {
  # Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
  sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

vmhwm_kb() {
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}

stop_timed() {
  local pid=$1 secs=${2:-60} t0
  t0=$(now_ms)
  kill -TERM "$pid" 2>/dev/null || { stop_ms=0; return 0; }
  # This shell reaps its children as they exit, so kill -0 fails once the process is gone.
  while kill -0 "$pid" 2>/dev/null; do
    if (($(now_ms) - t0 > secs * 1000)); then
      echo "pid $pid outlived SIGTERM by ${secs}s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.01
  done
  wait "$pid" 2>/dev/null || true
  stop_ms=$(($(now_ms) - t0))
}

timed_get() {
  local url=$1 out=$2 code secs
  read -r code secs < <(curl -s --max-time 120 -o "$out" -w '%{http_code} %{time_total}\n' "$url")
  if [[ $code != 2* ]]; then
    echo "GET $url: HTTP $code: $(head -c 300 "$out")" >&2
    return 1
  fi
  echo "$secs"
}

median() {
  sort -g | awk '{v[NR]=$1} END {if (NR) print (NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2)}'
}
