package dev.kiln;

import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.Instrumentation;
import java.time.Duration;
import java.time.Instant;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.logging.Logger;

import jdk.jfr.Recording;
import jdk.jfr.RecordingState;

/**
 * Profiles the JVM with JDK Flight Recorder and pushes each interval's recording to Kiln's
 * {@code /ingest?format=jfr}. Use as {@code -javaagent:kiln-agent.jar=server=…,app=…} or call
 * {@link #start(Config)} / {@link #stop()}.
 */
public final class KilnAgent {
    private static final Logger LOG = Logger.getLogger("dev.kiln");
    private static KilnAgent running;

    private final Config config;
    private final Uploader uploader;
    private final ScheduledExecutorService timer;
    private Recording recording;
    private Instant from;

    private KilnAgent(Config config) {
        this.config = config;
        this.uploader = new Uploader(config);
        this.timer = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "kiln-recorder");
            t.setDaemon(true);
            return t;
        });
    }

    public static void premain(String args, Instrumentation inst) {
        start(Config.fromAgentArgs(args, System.getenv()));
    }

    public static void agentmain(String args, Instrumentation inst) {
        premain(args, inst);
    }

    /** Starts profiling; a second call while running is ignored. */
    public static synchronized void start(Config config) {
        if (running != null) return;
        KilnAgent agent = new KilnAgent(config);
        agent.recording = agent.newRecording();
        agent.from = Instant.now();
        long every = config.uploadInterval.toMillis();
        agent.timer.scheduleAtFixedRate(agent::rotate, every, every, TimeUnit.MILLISECONDS);
        Runtime.getRuntime().addShutdownHook(new Thread(KilnAgent::stop, "kiln-shutdown"));
        running = agent;
        LOG.info("kiln: profiling " + config.applicationName + ", pushing to " + config.serverAddress + " every " + config.uploadInterval);
    }

    /** Takes the last recording and sends what is queued (for up to 5 s). */
    public static synchronized void stop() {
        KilnAgent agent = running;
        if (agent == null) return;
        running = null;
        agent.timer.shutdown();
        try {
            agent.timer.awaitTermination(5, TimeUnit.SECONDS);
            agent.rotateTo(null);
            agent.uploader.close(Duration.ofSeconds(5));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private Recording newRecording() {
        Recording r = new Recording();
        r.setName("kiln");
        r.enable("jdk.ExecutionSample").withPeriod(config.samplingInterval);
        r.enable("jdk.ObjectAllocationSample").with("throttle", "150/s");
        r.enable("jdk.JavaMonitorEnter").withThreshold(Duration.ofMillis(10)).withStackTrace();
        r.enable("jdk.ThreadPark").withThreshold(Duration.ofMillis(10)).withStackTrace();
        // On disk: the data of a stopped in-memory recording cannot be read back.
        r.setToDisk(true);
        r.start();
        return r;
    }

    private void rotate() {
        try {
            rotateTo(newRecording());
        } catch (RuntimeException e) {
            LOG.warning("kiln: rotating the recording failed: " + e);
        }
    }

    /** Stops the current recording, queues its data, and continues with {@code next}. */
    private synchronized void rotateTo(Recording next) {
        Recording done = recording;
        Instant until = Instant.now();
        Instant start = from;
        recording = next;
        from = until;
        if (done == null) return;
        try {
            // At exit the JDK's own shutdown hook may have stopped it already.
            if (done.getState() == RecordingState.RUNNING) done.stop();
            // Read the recording's chunks where JFR wrote them rather than dumping a copy first.
            try (InputStream in = done.getStream(null, null)) {
                if (in != null) uploader.enqueue(new Uploader.Upload(in.readAllBytes(), start, until));
            }
        } catch (IOException | IllegalStateException e) {
            LOG.warning("kiln: reading the recording failed: " + e);
        } finally {
            done.close();
        }
    }

    /** Recordings dropped because the queue was full. */
    public static long dropped() {
        KilnAgent a = running;
        return a == null ? 0 : a.uploader.dropped.get();
    }
}
