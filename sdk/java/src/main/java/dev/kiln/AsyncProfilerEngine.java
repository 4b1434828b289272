package dev.kiln;

import java.nio.file.Files;
import java.nio.file.Path;

import one.profiler.AsyncProfiler;

/**
 * async-profiler, bundled in the agent jar: CPU samples from itimer signals (the official Java
 * agent's default), allocation samples every 512 KiB and lock waits over 10 ms, written as JFR by
 * the native library. No JDK Flight Recorder, so none of its start-up cost in the host JVM.
 */
final class AsyncProfilerEngine implements Engine {
    private final AsyncProfiler profiler;
    private final String options;
    private Path file;

    private AsyncProfilerEngine(AsyncProfiler profiler, Config config) {
        this.profiler = profiler;
        this.options = "event=itimer,interval=" + config.samplingInterval.toNanos() + ",alloc=512k,lock=10ms,jfr";
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
            profiler.execute("start," + options + ",file=" + next);
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
