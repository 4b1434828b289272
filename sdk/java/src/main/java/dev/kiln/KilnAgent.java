package dev.kiln;

import java.lang.instrument.Instrumentation;
import java.time.Duration;
import java.time.Instant;
import java.util.Optional;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;

/**
 * Profiles the JVM (async-profiler when it loads here, else JDK Flight Recorder; see {@link Engine})
 * and pushes each interval's JFR to Kiln's {@code /ingest?format=jfr}. Use as
 * {@code -javaagent:kiln-agent.jar=server=…,app=…} or call {@link #start(Config)} / {@link #stop()}.
 */
public final class KilnAgent {
    private static final Logger LOG = Logger.getLogger("dev.kiln");
    /** The native heap is trimmed after this many first intervals too: reading a recording is JIT-compiled then. */
    private static final int TRIMMED_INTERVALS = 3;
    private static KilnAgent running;
    /** The JVM's instrumentation when loaded with {@code -javaagent}, else null. */
    private static volatile Instrumentation instrumentation;

    private final Config config;
    private final Uploader uploader;
    private final ScheduledThreadPoolExecutor timer;
    private final Engine engine;
    private final Optional<NativeHeap> nativeHeap;
    private int trimsLeft = TRIMMED_INTERVALS;
    private Instant from;

    private KilnAgent(Config config, Engine engine, Optional<NativeHeap> nativeHeap) {
        this.config = config;
        this.engine = engine;
        this.nativeHeap = nativeHeap;
        this.uploader = new Uploader(config);
        this.timer = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "kiln-recorder");
            t.setDaemon(true);
            return t;
        });
        // A program that ends within cpuStartDelay is not kept waiting for the deferred start.
        timer.setExecuteExistingDelayedTasksAfterShutdownPolicy(false);
    }

    public static void premain(String args, Instrumentation inst) {
        instrumentation = inst;
        start(Config.fromAgentArgs(args, System.getenv()));
    }

    public static void agentmain(String args, Instrumentation inst) {
        premain(args, inst);
    }

    /** Starts profiling; a second call while running is ignored. */
    public static synchronized void start(Config config) {
        if (running != null) return;
        Optional<NativeHeap> nativeHeap = NativeHeap.open(instrumentation, LOG);
        Engine engine;
        try {
            // Deferring only pays where the memory it waits for can be given back.
            engine = Engine.start(config, LOG, nativeHeap.isPresent() && !config.cpuStartDelay.isZero());
        } catch (RuntimeException | Error e) { // e.g. a JVM without Flight Recorder: run unprofiled
            LOG.warning("kiln: cannot profile this JVM: " + e);
            return;
        }
        KilnAgent agent = new KilnAgent(config, engine, nativeHeap);
        agent.from = Instant.now();
        long every = config.uploadInterval.toMillis();
        // The native heap is trimmed, then async-profiler started if it was deferred.
        agent.timer.schedule(agent::settle, config.cpuStartDelay.toMillis(), TimeUnit.MILLISECONDS);
        agent.timer.scheduleAtFixedRate(() -> agent.rotate(true), every, every, TimeUnit.MILLISECONDS);
        Runtime.getRuntime().addShutdownHook(new Thread(KilnAgent::stop, "kiln-shutdown"));
        running = agent;
        LOG.info("kiln: profiling " + config.applicationName + " with " + agent.engine.name()
                + " (" + settings(config, engine.jfrAllocations()) + "), pushing to " + config.serverAddress
                + " every " + config.uploadInterval);
    }

    /** What is sampled, for the start-up log line: {@code cpu 10ms, alloc auto, lock 10ms}. */
    static String settings(Config c, boolean jfrAllocations) {
        String alloc = c.allocInterval == 0 ? "off"
                : jfrAllocations ? JfrEngine.ALLOCATION_RATE // JFR throttles by rate whatever allocInterval says
                : c.allocInterval == Config.ALLOC_INTERVAL_AUTO ? "auto" : c.allocInterval + " B";
        String lock = c.lockThreshold.isZero() ? "off" : c.lockThreshold.toMillis() + "ms";
        return "cpu " + c.samplingInterval.toMillis() + "ms, alloc " + alloc + ", lock " + lock;
    }

    static Instrumentation instrumentation() {
        return instrumentation;
    }

    /** Takes the last recording and sends what is queued (for up to 5 s). */
    public static synchronized void stop() {
        KilnAgent agent = running;
        if (agent == null) return;
        running = null;
        agent.timer.shutdown();
        try {
            agent.timer.awaitTermination(5, TimeUnit.SECONDS);
            agent.rotate(false);
            agent.uploader.close(Duration.ofSeconds(5));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private synchronized void settle() {
        trimNativeHeap();
        engine.startDeferred();
    }

    private void trimNativeHeap() {
        nativeHeap.ifPresent(heap -> {
            try {
                LOG.fine("kiln: " + heap.trim());
            } catch (ReflectiveOperationException | RuntimeException e) {
                LOG.fine("kiln: trimming the native heap failed: " + e);
            }
        });
    }

    /** Ends the interval, queues its data, and starts the next one if {@code next}. */
    private synchronized void rotate(boolean next) {
        Instant until = Instant.now();
        Instant start = from;
        from = until;
        try {
            byte[] jfr = engine.rotate(next);
            if (jfr != null) uploader.enqueue(new Uploader.Upload(jfr, start, until));
        } catch (Exception e) {
            LOG.warning("kiln: reading the profile failed: " + e);
        }
        if (next && trimsLeft > 0) {
            trimsLeft--;
            trimNativeHeap();
        }
    }

    /** Recordings dropped because the queue was full. */
    public static long dropped() {
        KilnAgent a = running;
        return a == null ? 0 : a.uploader.dropped.get();
    }
}
