#!/usr/bin/env bash
# Memory of the daemon on large real profiles (the measurement behind the memory issue): a
# release daemon on a fresh data dir gets the large Go CPU profile (testdata/large-cpu.pb.gz,
# 2.4 MB of pprof) N times, each in its own 10 s window one minute apart, then a multi-chunk JFR
# (three chunks of testdata/java-jdk.jfr) N/10 times; RSS is read right after the last push,
# 10 s later, after 60 s idle, and the peak (VmHWM).
#
#   scripts/bench-memory.sh [N]        (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}
cargo build --release -p kiln >/dev/null
. scripts/lib/daemon.sh
data=$(mktemp -d)
jfr=$(mktemp)
trap 'kill $kiln_pid 2>/dev/null; rm -rf "$data" "$jfr"' EXIT
cat testdata/java-jdk.jfr testdata/java-jdk.jfr testdata/java-jdk.jfr >"$jfr"
start_kiln ./target/release/kiln "$data"
rss() { awk -v k="$1:" '$1 == k { printf "%d MB", $2 / 1024 }' "/proc/$kiln_pid/status"; }
now=$(date +%s)
started=$(date +%s.%N)
for i in $(seq "$n"); do
  from=$((now - 86400 + i * 60))
  curl -sf -o /dev/null --data-binary @testdata/large-cpu.pb.gz \
    "$kiln_url/ingest?name=large&format=pprof&from=$from&until=$((from + 10))"
done
for i in $(seq $((n / 10 > 0 ? n / 10 : 1))); do
  curl -sf -o /dev/null --data-binary @"$jfr" "$kiln_url/ingest?name=jfr&format=jfr"
done
took=$(echo "$(date +%s.%N) - $started" | bc)
echo "pushes: $n large pprof + $((n / 10 > 0 ? n / 10 : 1)) multi-chunk JFR in ${took}s"
echo "RSS right after the last push: $(rss VmRSS)"
sleep 10
echo "RSS 10 s later: $(rss VmRSS)"
sleep 50
echo "RSS after 60 s idle: $(rss VmRSS)"
echo "peak RSS (VmHWM): $(rss VmHWM)"
t=$(date +%s%N)
curl -sf -o /dev/null "$kiln_url/render?query=large.cpu&from=now-25h&until=now"
echo "24 h render of large.cpu: $(( ($(date +%s%N) - t) / 1000000 )) ms"
kill -TERM "$kiln_pid"; wait "$kiln_pid" || true
echo "data dir: $(du -sh "$data" | cut -f1)"
