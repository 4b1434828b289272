package dev.kiln;

import java.nio.file.Files;
import java.nio.file.Path;

import one.profiler.AsyncProfiler;

/**
 * async-profiler, bundled in the agent jar: CPU samples from itimer signals (the official Java
 * agent's default), allocation samples every {@link Config#allocInterval} bytes (JVMTI's sampled
 * allocations on JDK 11+) and lock waits over {@link Config#lockThreshold}, written as JFR by the
 * native library. No JDK Flight Recorder, so none of its start-up cost in the host JVM.
 */
final class AsyncProfilerEngine implements Engine {
    private final AsyncProfiler profiler;
    private final Config config;
    /** Chooses each interval's allocation sampling interval; null unless {@code allocInterval=auto}. */
    private final AllocSampling allocSampling;
    private Path file;

    private AsyncProfilerEngine(AsyncProfiler profiler, Config config) {
        this.profiler = profiler;
        this.config = config;
        this.allocSampling = config.allocInterval == Config.ALLOC_INTERVAL_AUTO ? AllocSampling.forThisJvm() : null;
    }

    /**
     * The profiler's start options (without the output file); {@code allocInterval} is the bytes
     * per allocation sample for this interval, 0 for none.
     */
    static String options(Config config, long allocInterval) {
        StringBuilder o = new StringBuilder("event=itimer,interval=").append(config.samplingInterval.toNanos());
        if (allocInterval > 0) o.append(",alloc=").append(allocInterval);
        // A bare number is nanoseconds to async-profiler.
        if (!config.lockThreshold.isZero()) o.append(",lock=").append(config.lockThreshold.toNanos());
        return o.append(",jfr").toString();
    }

    /** Loads the library (extracted from the jar by async-profiler) and starts profiling. */
    static AsyncProfilerEngine start(Config config) throws Exception {
        AsyncProfilerEngine e = new AsyncProfilerEngine(AsyncProfiler.getInstance(), config);
        e.startInterval();
        return e;
    }

    @Override
    public String name() {
        return "async-profiler " + profiler.getVersion();
    }

    private void startInterval() throws Exception {
        Path next = Files.createTempFile("kiln-", ".jfr");
        try {
            long alloc = allocSampling != null ? allocSampling.next() : config.allocInterval;
            profiler.execute("start," + options(config, alloc) + ",file=" + next);
        } catch (Exception | Error e) {
            Files.deleteIfExists(next);
            throw e;
        }
        file = next;
    }

    @Override
    public byte[] rotate(boolean next) throws Exception {
        Path done = file;
        file = null;
        if (done == null) return null;
        try {
            profiler.execute("stop"); // writes the interval's JFR file
            return Files.readAllBytes(done);
        } finally {
            Files.deleteIfExists(done);
            if (next) startInterval();
        }
    }
}
