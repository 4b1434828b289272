package dev.kiln;

import java.io.FileInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import java.util.logging.Logger;

import one.profiler.AsyncProfiler;

/**
 * async-profiler, bundled in the agent jar: CPU samples from itimer signals (the official Java
 * agent's default) and lock waits over {@link Config#lockThreshold}, written as JFR by the native
 * library. Allocations come from JDK Flight Recorder's throttled sampler where the JVM has it
 * (JDK 16+; see {@link Config#jfrAllocations}), else from async-profiler every
 * {@link Config#allocInterval} bytes (JVMTI's sampled allocations on JDK 11+, whose bookkeeping
 * on the JVM's slow allocation path costs allocation-heavy code a few percent at any interval).
 * Each interval's upload is async-profiler's JFR chunk followed by Flight Recorder's chunks.
 *
 * <p>With Flight Recorder, async-profiler may be loaded a little later ({@link #startDeferred}):
 * Flight Recorder's start-up has the JIT compile some 600 methods of its own and of its bytecode
 * library, and the C2 compiler's memory for those, given back only once the burst is over and the
 * native heap is trimmed, would otherwise stack on top of async-profiler's tables (some 12 MB
 * more peak RSS on JDK 17).
 */
final class AsyncProfilerEngine implements Engine {
    /** Null until loaded: deferred by {@link #start(Config, Logger, boolean)}, or it failed to. */
    private AsyncProfiler profiler;
    private final Config config;
    /** Chooses each interval's allocation sampling interval; null unless {@code allocInterval=auto}. */
    private final AllocSampling allocSampling;
    /** Flight Recorder's allocation samples; null when async-profiler samples allocations. */
    private final JfrEngine allocations;
    private final Logger log;
    private Path file;

    private AsyncProfilerEngine(Config config, JfrEngine allocations, Logger log) {
        this.config = config;
        this.allocations = allocations;
        this.log = log;
        this.allocSampling = allocations == null && config.allocInterval == Config.ALLOC_INTERVAL_AUTO
                ? AllocSampling.forThisJvm() : null;
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
    static AsyncProfilerEngine start(Config config, Logger log) throws Exception {
        return start(config, log, false);
    }

    /**
     * As {@link #start(Config, Logger)}, but when Flight Recorder samples allocations and
     * {@code deferProfiler}, async-profiler is loaded and started only by {@link #startDeferred}.
     */
    static AsyncProfilerEngine start(Config config, Logger log, boolean deferProfiler) throws Exception {
        JfrEngine allocations = null;
        if (config.jfrAllocations(JfrEngine.hasAllocationSampler())) {
            try {
                allocations = JfrEngine.startAllocations(config, KilnAgent.instrumentation(), log);
            } catch (RuntimeException | Error e) { // e.g. JFR disabled at run time: async-profiler's sampler
                log.warning("kiln: Flight Recorder's allocation sampler unavailable (" + e + "); async-profiler samples allocations");
            }
        } else if ("jfr".equals(config.allocSampler) && config.allocInterval != 0) {
            log.warning("kiln: allocSampler=jfr needs JDK 16+ with Flight Recorder; async-profiler samples allocations");
        }
        AsyncProfilerEngine e = new AsyncProfilerEngine(config, allocations, log);
        if (deferProfiler && allocations != null) return e;
        try {
            e.profiler = AsyncProfiler.getInstance();
            e.startInterval();
        } catch (Exception | Error failed) {
            if (allocations != null) allocations.rotate(false);
            throw failed;
        }
        return e;
    }

    /**
     * Loads and starts async-profiler if {@link #start(Config, Logger, boolean)} deferred it. If it
     * cannot be, Flight Recorder takes CPU samples and lock waits as well from the next interval
     * on (one log line); the program goes on either way.
     */
    @Override
    public void startDeferred() {
        startDeferred(AsyncProfiler::getInstance);
    }

    /** {@link #startDeferred()} with the library loaded by {@code load}. */
    synchronized void startDeferred(Callable<AsyncProfiler> load) {
        if (profiler != null || allocations == null) return;
        try {
            profiler = load.call();
            startInterval();
            log.fine("kiln: started async-profiler " + profiler.getVersion());
        } catch (Exception | Error e) { // a missing or unloadable library must never stop the host
            profiler = null;
            log.warning("kiln: async-profiler unavailable (" + e + "); Flight Recorder samples CPU and locks too");
            allocations.recordEverything();
        }
    }

    boolean profilerStarted() {
        return profiler != null;
    }

    /** Flight Recorder's recording beside async-profiler, or null. */
    JfrEngine flightRecorder() {
        return allocations;
    }

    @Override
    public String name() {
        String profiled = profiler != null ? "async-profiler " + profiler.getVersion()
                : allocations != null ? "async-profiler after " + config.cpuStartDelay : "async-profiler";
        return profiled + (allocations != null ? " + " + allocations.name() : "");
    }

    @Override
    public boolean jfrAllocations() {
        return allocations != null;
    }

    private void startInterval() throws Exception {
        Path next = Files.createTempFile("kiln-", ".jfr");
        try {
            long alloc = allocations != null ? 0 : allocSampling != null ? allocSampling.next() : config.allocInterval;
            profiler.execute("start," + options(config, alloc) + ",file=" + next);
        } catch (Exception | Error e) {
            Files.deleteIfExists(next);
            throw e;
        }
        file = next;
    }

    @Override
    public synchronized byte[] rotate(boolean next) throws Exception {
        Path done = file;
        file = null;
        if (done == null) {
            if (profiler != null || allocations == null) return null; // stopped already
            byte[] alone = allocations.rotate(next); // async-profiler not started (yet)
            return alone == null || alone.length == 0 ? null : alone;
        }
        byte[] samples;
        try {
            profiler.execute("stop"); // writes the interval's JFR file
            // A FileInputStream, not Files.readAllBytes: NIO would read through a direct buffer
            // the size of the file and keep it for this thread for good.
            try (FileInputStream in = new FileInputStream(done.toFile())) {
                samples = in.readAllBytes();
            }
        } catch (Exception e) {
            if (allocations == null) throw e;
            // Flight Recorder's interval still ends here, so that the next upload holds only
            // its own allocation samples; this one goes without CPU samples.
            log.warning("kiln: reading async-profiler's recording failed: " + e);
            samples = new byte[0];
        } finally {
            Files.deleteIfExists(done);
            if (next) startInterval();
        }
        byte[] upload = withAllocations(samples, next);
        return upload.length == 0 ? null : upload;
    }

    /** The interval's JFR with Flight Recorder's allocation chunks after it: one upload. */
    private byte[] withAllocations(byte[] samples, boolean next) {
        if (allocations == null) return samples;
        byte[] allocated;
        try {
            allocated = allocations.rotate(next);
        } catch (Exception e) { // CPU samples still go; this interval's allocations are lost
            log.warning("kiln: reading the allocation samples failed: " + e);
            return samples;
        }
        if (allocated == null || allocated.length == 0) return samples;
        byte[] both = new byte[samples.length + allocated.length];
        System.arraycopy(samples, 0, both, 0, samples.length);
        System.arraycopy(allocated, 0, both, samples.length, allocated.length);
        return both;
    }
}
