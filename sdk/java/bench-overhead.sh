#!/usr/bin/env bash
# CPU and memory overhead of the Java agent on the example workload: the same run without and
# with -javaagent pushing to a real daemon; user+sys CPU and max RSS of each JVM.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
(cd "$here" && mvn -q -B package -DskipTests)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$kiln" server --config /dev/null --listen "127.0.0.1:$port" --storage-path "$work/data" --self-profiling false --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
# Compile once so both runs measure the workload, not the source launcher.
javac -d "$work/classes" "$root/examples/java-app/JavaApp.java"
app="-cp $work/classes JavaApp ${DURATION:-20}"
python3 "$root/scripts/lib/overhead.py" "java $app" "java -javaagent:$here/target/kiln-agent.jar=server=http://127.0.0.1:$port,app=java-bench $app"
