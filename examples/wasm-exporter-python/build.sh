#!/usr/bin/env bash
# Builds the `top-functions-py` sink into target/top-functions-py.wasm (a WebAssembly component
# targeting the `sink` world of wit/0.1.0/plugin.wit: built against the 0.1.0 contract, which the
# daemon still loads, so CI keeps that promise tested). Also writes the Python bindings of that world to
# build/bindings, for editors and type checkers; neither directory is committed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$here/../../wit/0.1.0"
wanted="0.25."
out="$here/target/top-functions-py.wasm"

if ! command -v componentize-py >/dev/null 2>&1; then
    echo "build.sh: componentize-py is not installed; install it with:" >&2
    echo "    python3 -m pip install componentize-py==0.25.1" >&2
    exit 1
fi
version="$(componentize-py --version | awk '{print $2}')"
if [[ "$version" != "$wanted"* ]]; then
    # Other versions name the generated modules differently (app.py imports `wit_world`).
    echo "build.sh: componentize-py ${wanted}x is needed, found ${version:-an unknown version};" >&2
    echo "    python3 -m pip install componentize-py==0.25.1" >&2
    exit 1
fi

rm -rf "$here/build/bindings"
mkdir -p "$here/build" "$here/target"
componentize-py -d "$wit" -w sink bindings "$here/build/bindings"
# Only src/ goes into the component: the app module, topn, and the standard library.
componentize-py -d "$wit" -w sink componentize -p "$here/src" app -o "$out"
echo "built $out ($(du -h "$out" | cut -f1))"
