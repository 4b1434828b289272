#!/usr/bin/env bash
# CPU and memory overhead of the Java agent: the same fixed amount of work (bench/OverheadApp.java,
# the example app's hash and allocation hot paths) without an agent, with the Kiln agent at its
# defaults (async-profiler, allocations from Flight Recorder's sampler), with async-profiler's own
# allocation sampler (allocSampler=async-profiler) and with its JDK Flight Recorder fallback
# (engine=jfr), and, when it
# can be had from Maven, with the official io.pyroscope:agent at its
# defaults and with the same profile types as Kiln's (CPU, allocations, locks), all pushing to a
# real daemon. Table and noise floor from scripts/lib/overhead.py: whole-run CPU (start-up
# included: JIT of the agent's and the profiler's own code) and CPU of ROUNDS rounds done after
# WARMUP seconds (the steady state of a long-running service).
#
#   sdk/java/bench-overhead.sh            ROUNDS (default 300, ~20 s of CPU), WARMUP (default 20 s),
#                                         REPEAT (default 3), JAVA_OPTS (default: a fixed, pre-touched
#                                         512 MB heap, so that max RSS tells the agent's own memory
#                                         apart from how far the JVM chose to grow its heap),
#                                         KILN_BIN (default target/debug/kiln),
#                                         PYROSCOPE_AGENT_VERSION (default 2.9.2; "none" skips it),
#                                         KILN_AGENT_ARGS (more agent arguments for the defaults row,
#                                         e.g. allocInterval=4m),
#                                         PAIRED=1 (each variant runs beside a run without an
#                                         agent, the two on CPUs of their own: see
#                                         scripts/lib/overhead.py --paired; the JVMs keep the
#                                         ergonomics of the whole machine),
#                                         PERF=1 (instead of CPU time, the share of `perf record`
#                                         samples in the workload's compiled Java code, after
#                                         WARMUP (default 12) seconds, for 20 s; see
#                                         scripts/lib/perf_share.py; needs perf),
#                                         BREAKDOWN=1 (adds rows for each profile type on its own:
#                                         CPU only, CPU + allocations at 2m and at 512k, CPU + locks;
#                                         and the official agent with alloc=2m; skips the JFR row)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kiln=${KILN_BIN:-$root/target/debug/kiln}
rounds=${ROUNDS:-300}
official=${PYROSCOPE_AGENT_VERSION:-2.9.2}
(cd "$here" && mvn -q -B package -DskipTests)
work=$(mktemp -d)
# Let the daemon finish its shutdown flush before its data directory goes.
trap 'kill $kiln_pid 2>/dev/null; wait $kiln_pid 2>/dev/null; rm -rf "$work"' EXIT
. "$root/scripts/lib/daemon.sh"
start_kiln "$kiln" "$work/data"
javac -d "$work/classes" "$here/bench/OverheadApp.java"
if [[ ${PERF:-0} == 1 ]]; then
  app="-cp $work/classes OverheadApp 100000000 0" # stopped once sampled
else
  app="-cp $work/classes OverheadApp $rounds ${WARMUP:-20}"
fi
opts=${JAVA_OPTS--Xms512m -Xmx512m -XX:+AlwaysPreTouch}
paired=()
if [[ ${PAIRED:-0} == 1 ]]; then
  paired=(--paired)
  # Pinned to one CPU a JVM would pick the serial collector and fewer compiler threads.
  opts="$opts -XX:ActiveProcessorCount=$(nproc)"
fi

agent="-javaagent:$here/target/kiln-agent.jar=server=$kiln_url"
extra=${KILN_AGENT_ARGS:+,$KILN_AGENT_ARGS}
names=(--name "no agent" --name "kiln agent (defaults$extra)")
commands=("java $opts $app" "java $opts $agent,app=java-bench$extra $app")
if [[ ${BREAKDOWN:-0} == 1 ]]; then
  # Which profile type costs what: each one alone, and allocations at the official agent's 512k.
  for row in "cpu only:allocInterval=0,lockThreshold=0" "cpu+alloc 2m:lockThreshold=0" \
    "cpu+alloc 512k:allocInterval=512k,lockThreshold=0" "cpu+lock 10ms:allocInterval=0"; do
    names+=(--name "kiln agent (${row%%:*})")
    commands+=("java $opts $agent,app=java-bench-${#names[@]},${row#*:} $app")
  done
else
  # The defaults take allocations from Flight Recorder's sampler; this row keeps async-profiler's
  # (JVMTI, every 512 KiB), what the defaults were before.
  names+=(--name "kiln agent (allocSampler=async-profiler)" --name "kiln agent (engine=jfr)")
  commands+=("java $opts $agent,app=java-bench-ap,allocSampler=async-profiler $app"
    "java $opts $agent,app=java-bench-jfr,engine=jfr $app")
fi
if [[ $official != none ]]; then
  jar=$HOME/.m2/repository/io/pyroscope/agent/$official/agent-$official.jar
  [[ -f $jar ]] || mvn -q -B dependency:get -Dartifact="io.pyroscope:agent:$official" -Dtransitive=false || true
  if [[ -f $jar ]]; then
    env="env PYROSCOPE_SERVER_ADDRESS=$kiln_url PYROSCOPE_LOG_LEVEL=error"
    names+=(--name "official $official (defaults: cpu)" --name "official $official (cpu+alloc+lock)")
    commands+=("$env PYROSCOPE_APPLICATION_NAME=java-official java $opts -javaagent:$jar $app"
      "$env PYROSCOPE_APPLICATION_NAME=java-official-all PYROSCOPE_PROFILER_ALLOC=512k PYROSCOPE_PROFILER_LOCK=10ms java $opts -javaagent:$jar $app")
    if [[ ${BREAKDOWN:-0} == 1 ]]; then
      names+=(--name "official $official (cpu+alloc 2m+lock)")
      commands+=("$env PYROSCOPE_APPLICATION_NAME=java-official-2m PYROSCOPE_PROFILER_ALLOC=2m PYROSCOPE_PROFILER_LOCK=10ms java $opts -javaagent:$jar $app")
    fi
  else
    echo "io.pyroscope:agent:$official could not be had; comparing without it" >&2
  fi
fi
if [[ ${PERF:-0} == 1 ]]; then
  python3 "$root/scripts/lib/perf_share.py" --repeat "${REPEAT:-2}" --warmup "${WARMUP:-12}" "${names[@]}" "${commands[@]}"
  exit
fi
python3 "$root/scripts/lib/overhead.py" "${paired[@]}" --repeat "${REPEAT:-3}" "${names[@]}" "${commands[@]}"
