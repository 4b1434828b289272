# Sourced by the SDK overhead scripts (sdk/go/bench-overhead.sh, sdk/rust/bench-overhead.sh)
# when they run the official Pyroscope agent beside Kiln's SDK on the example workload.
#
#   same_functions EXAMPLE COPY NAME...  → fails (naming the function) unless each top-level
#                                          function NAME, with the line above it (its inline
#                                          attribute), reads the same in both files: the official
#                                          variant must run the example's own hot paths
#   cpu_ticks_stored URL APP              → numTicks of APP.cpu over the last 10 minutes
#                                          (daemon without auth): samples, or nanoseconds of
#                                          CPU time for an agent that sends those (pprof-rs)
#   check_stored URL APP...               → prints each APP's stored CPU ticks; fails if one
#                                          stored nothing (its pushes were refused or lost)

# The source of a top-level function (Go `func NAME(` or Rust `fn NAME(`) up to its closing
# brace in column 0, with the line before it.
function_source() {
  awk -v name="$2" '
    $0 ~ "^(func|fn) " name "\\(" { print prev; inside = 1 }
    inside { print }
    inside && /^}/ { inside = 0 }
    { prev = $0 }' "$1"
}

same_functions() {
  local example=$1 copy=$2 name
  shift 2
  for name in "$@"; do
    if [[ -z $(function_source "$example" "$name") ]] ||
      [[ $(function_source "$example" "$name") != "$(function_source "$copy" "$name")" ]]; then
      echo "$name in $copy is not the same as in $example: copy it over before comparing" >&2
      return 1
    fi
  done
}

cpu_ticks_stored() {
  curl -sfG --data-urlencode "query=$2.cpu{}" --data-urlencode from=now-10m \
    --data-urlencode until=now+1m "$1/render" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["flamebearer"]["numTicks"])'
}

check_stored() {
  local url=$1 app ticks failed=0
  shift
  for app in "$@"; do
    ticks=$(cpu_ticks_stored "$url" "$app") || ticks=0
    echo "stored by the daemon: $app.cpu $ticks (numTicks)" >&2
    ((ticks > 0)) || failed=1
  done
  return $failed
}
