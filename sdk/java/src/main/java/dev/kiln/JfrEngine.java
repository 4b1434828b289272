package dev.kiln;

import java.io.InputStream;
import java.lang.instrument.Instrumentation;
import java.lang.management.ManagementFactory;
import java.lang.reflect.Method;
import java.util.Map;
import java.util.Set;
import java.util.logging.Logger;

import javax.management.ObjectName;

import jdk.jfr.FlightRecorder;
import jdk.jfr.Recording;
import jdk.jfr.RecordingState;

/**
 * JDK Flight Recorder: a new recording per interval, read back from JFR's own files. Either the
 * whole engine (CPU, allocations and locks) or, beside async-profiler, allocations alone.
 */
final class JfrEngine implements Engine {
    /** JFR's throttled allocation sampler (JDK 16+): samples by rate, not by bytes. */
    static final String ALLOCATION_SAMPLE = "jdk.ObjectAllocationSample";
    static final String ALLOCATION_RATE = "150/s";

    private final Config config;
    /** Until {@link #recordEverything}; read by the recorder thread only after that call's rotation. */
    private volatile boolean allocationsOnly;
    private Recording recording;

    private JfrEngine(Config config, boolean allocationsOnly) {
        this.config = config;
        this.allocationsOnly = allocationsOnly;
    }

    static JfrEngine start(Config config) {
        JfrEngine e = new JfrEngine(config, false);
        e.recording = e.newRecording();
        return e;
    }

    /**
     * Allocation samples only, for async-profiler's intervals. Unless the program runs Flight
     * Recorder already, its buffers are first made small (1 MiB in all, 4 KiB per thread): about
     * 150 events a second need little, and the defaults add some 10 MB to the process.
     * {@code inst} is the agent's instrumentation, null when started from code.
     */
    static JfrEngine startAllocations(Config config, Instrumentation inst, Logger log) {
        if (!FlightRecorder.isInitialized()) shrinkBuffers(inst, log);
        JfrEngine e = new JfrEngine(config, true);
        e.recording = e.newRecording();
        return e;
    }

    /**
     * Whether this JVM has Flight Recorder with the throttled allocation sampler (JDK 16+),
     * found without starting Flight Recorder.
     */
    static boolean hasAllocationSampler() {
        try {
            return Runtime.version().feature() >= 16 && FlightRecorder.isAvailable();
        } catch (RuntimeException | LinkageError e) { // no jdk.jfr module
            return false;
        }
    }

    /** What {@code JFR.configure} is given, in the order it sets them. */
    private static final String[][] SMALL_BUFFERS = {
        {"globalbuffercount", "setGlobalBufferCount", "2"},
        {"globalbuffersize", "setGlobalBufferSize", "524288"},
        {"thread_buffer_size", "setThreadBufferSize", "4096"},
        {"memorysize", "setMemorySize", "1048576"},
    };

    private static void shrinkBuffers(Instrumentation inst, Logger log) {
        if (inst != null && shrinkThroughOptions(inst, log)) return;
        String[] args = new String[SMALL_BUFFERS.length];
        for (int i = 0; i < args.length; i++) args[i] = SMALL_BUFFERS[i][0] + "=" + SMALL_BUFFERS[i][2];
        try {
            ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), "jfrConfigure",
                    new Object[] {args},
                    new String[] {String[].class.getName()});
        } catch (Exception | LinkageError e) { // the defaults then: more memory, same samples
            log.fine("kiln: Flight Recorder keeps its default buffers: " + e);
        }
    }

    /**
     * Sets the buffer sizes where {@code JFR.configure} sets them, in {@code jdk.jfr.internal}
     * (opened to the agent through its instrumentation): going through the platform MBean server
     * instead loads JMX and costs the process some 2.4 MB more. False if this JDK has no such
     * methods (the diagnostic command then).
     */
    private static boolean shrinkThroughOptions(Instrumentation inst, Logger log) {
        try {
            Module jfr = FlightRecorder.class.getModule();
            inst.redefineModule(jfr, Set.of(), Map.of("jdk.jfr.internal", Set.of(JfrEngine.class.getModule())),
                    Map.of(), Set.of(), Map.of());
            Class<?> options = Class.forName("jdk.jfr.internal.Options", true, FlightRecorder.class.getClassLoader());
            Method[] setters = new Method[SMALL_BUFFERS.length];
            for (int i = 0; i < setters.length; i++) setters[i] = options.getMethod(SMALL_BUFFERS[i][1], long.class);
            for (int i = 0; i < setters.length; i++) setters[i].invoke(null, Long.parseLong(SMALL_BUFFERS[i][2]));
            return true;
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            log.fine("kiln: Flight Recorder's options not reachable directly: " + e);
            return false;
        }
    }

    /**
     * From the next interval on, CPU samples and lock waits too: for when async-profiler was to
     * take those but could not be started.
     */
    void recordEverything() {
        allocationsOnly = false;
    }

    @Override
    public String name() {
        return allocationsOnly ? "JDK Flight Recorder (allocations)" : "JDK Flight Recorder";
    }

    @Override
    public boolean jfrAllocations() {
        return true;
    }

    /** The running recording's event settings ({@code event#setting} → value). */
    java.util.Map<String, String> settings() {
        return recording.getSettings();
    }

    private Recording newRecording() {
        Recording r = new Recording();
        r.setName(allocationsOnly ? "kiln-allocations" : "kiln");
        if (!allocationsOnly) r.enable("jdk.ExecutionSample").withPeriod(config.samplingInterval);
        // JFR bounds allocation samples by rate, not by bytes: allocInterval only turns them off.
        if (config.allocInterval != 0) r.enable(ALLOCATION_SAMPLE).with("throttle", ALLOCATION_RATE);
        if (!allocationsOnly && !config.lockThreshold.isZero()) {
            r.enable("jdk.JavaMonitorEnter").withThreshold(config.lockThreshold).withStackTrace();
            r.enable("jdk.ThreadPark").withThreshold(config.lockThreshold).withStackTrace();
        }
        // On disk: the data of a stopped in-memory recording cannot be read back.
        r.setToDisk(true);
        r.start();
        return r;
    }

    @Override
    public byte[] rotate(boolean next) throws Exception {
        Recording done = recording;
        recording = next ? newRecording() : null;
        if (done == null) return null;
        try {
            // At exit the JDK's own shutdown hook may have stopped it already.
            if (done.getState() == RecordingState.RUNNING) done.stop();
            // Read the recording's chunks where JFR wrote them rather than dumping a copy first.
            try (InputStream in = done.getStream(null, null)) {
                return in == null ? null : in.readAllBytes();
            }
        } finally {
            done.close();
        }
    }
}
