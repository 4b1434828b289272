#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20), seeded with the fixtures in testdata/.
# cargo-fuzz wants a nightly compiler for its instrumentation flags; RUSTC_BOOTSTRAP lets the
# stable toolchain accept them, and `-s none` drops the sanitizer runtime nightly would bring.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
seed() { # target files…
  local dir="corpus/$1"; shift
  mkdir -p "$dir"
  for f in "$@"; do cp "$f" "$dir/"; done
}
seed pprof ../testdata/go-cpu.pb.gz ../testdata/go-heap.pb.gz ../testdata/go-goroutine.pb.gz
seed collapsed ../testdata/collapsed.txt
seed otlp
seed speedscope
seed trie_tree
seed jfr ../testdata/java-jdk.jfr
printf '{"shared":{"frames":[{"name":"a"},{"name":"b"}]},"profiles":[{"type":"sampled","samples":[[0,1]],"weights":[1]},{"type":"evented","unit":"milliseconds","events":[{"type":"O","at":0,"frame":0},{"type":"C","at":2,"frame":0}]}]}' > corpus/speedscope/seed.json
printf '\x00\x00\x01\x03foo\x00\x01\x03bar\x05\x00' > corpus/trie_tree/seed.bin
targets=(pprof collapsed otlp speedscope trie_tree jfr)
cargo fuzz build -s none -O
failed=0
for t in "${targets[@]}"; do
  echo "--- fuzz $t for ${seconds}s"
  if ! cargo fuzz run -s none -O "$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 2>&1 | tail -n 4; then
    failed=$((failed + 1))
    echo "fuzz target $t found a crash (see fuzz/artifacts/$t)"
  fi
done
echo "fuzz: $(( ${#targets[@]} - failed )) passed, $failed failed"
((failed == 0))
