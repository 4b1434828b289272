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
python3 - "$work/classes" "$here/target/kiln-agent.jar" "http://127.0.0.1:$port" "${DURATION:-20}" <<'PY'
import resource, subprocess, sys
classes, jar, server, seconds = sys.argv[1:]
def run(*agent):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["java", *agent, "-cp", classes, "JavaApp", seconds], check=True, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, after.ru_maxrss / 1024
base_cpu, base_rss = run()
prof_cpu, prof_rss = run(f"-javaagent:{jar}=server={server},app=java-bench")
print(f"without agent: {base_cpu:.2f} s CPU, max RSS {base_rss:.0f} MB")
print(f"with agent:    {prof_cpu:.2f} s CPU, max RSS {prof_rss:.0f} MB")
print(f"overhead:      {100 * (prof_cpu - base_cpu) / base_cpu:+.2f} % CPU, {prof_rss - base_rss:+.0f} MB RSS")
PY
