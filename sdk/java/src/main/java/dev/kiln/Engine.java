package dev.kiln;

import java.util.logging.Logger;

/**
 * Where each interval's profile comes from: a JFR file with CPU samples, allocation samples and
 * lock waits. {@link #rotate} ends the current interval and returns its data.
 */
interface Engine {
    /** Ends the interval; returns its JFR data (null if there is none) and starts the next one if {@code next}. */
    byte[] rotate(boolean next) throws Exception;

    String name();

    /** The part of starting that waits until the program is under way; see {@link AsyncProfilerEngine}. */
    default void startDeferred() {}

    /** Whether allocations are sampled by Flight Recorder (by rate) rather than by bytes. */
    boolean jfrAllocations();

    /**
     * async-profiler (bundled native library: CPU by itimer signals, allocations and locks, its
     * own JFR writer) unless {@code engine=jfr}; the JDK's Flight Recorder when asked for or when
     * the native library cannot be loaded or started here, with one log line saying why.
     */
    static Engine start(Config config, Logger log, boolean defer) {
        if (!"jfr".equals(config.engine)) {
            try {
                return AsyncProfilerEngine.start(config, log, defer);
            } catch (Throwable e) { // a missing or unloadable library must never stop the host
                log.warning("kiln: async-profiler unavailable (" + e + "); using JDK Flight Recorder");
            }
        }
        return JfrEngine.start(config);
    }
}
