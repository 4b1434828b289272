package dev.kiln;

import java.lang.management.ManagementFactory;
import java.util.function.LongSupplier;

/**
 * The allocation sampling interval for each upload interval when {@code allocInterval=auto}: the
 * last interval's allocation rate divided by {@link #TARGET_PER_SECOND}, so that a service
 * allocating gigabytes a second pays for as many samples as one allocating megabytes, never
 * sampling more often than every {@link #MIN_INTERVAL} bytes. Each sample costs the allocating
 * thread a JVMTI callback and a stack walk, so a fixed byte interval makes the agent's cost grow
 * with the allocation rate; a rate target bounds it (JDK Flight Recorder throttles its allocation
 * samples the same way). Each recording's samples carry the interval they were taken at, so
 * estimated bytes stay comparable across intervals.
 */
final class AllocSampling {
    /** async-profiler's and the official agent's interval: the finest one used. */
    static final long MIN_INTERVAL = 512L << 10;
    static final long MAX_INTERVAL = 1L << 30;
    /** Until a rate is known (the first upload interval). */
    static final long FIRST_INTERVAL = 2L << 20;
    static final long TARGET_PER_SECOND = 50;

    private final LongSupplier allocatedBytes;
    private final LongSupplier nanoTime;
    private long lastBytes = -1;
    private long lastNanos;
    private long current = FIRST_INTERVAL;

    /** {@code allocatedBytes} returns the JVM's bytes allocated so far, or a negative number if unknown. */
    AllocSampling(LongSupplier allocatedBytes, LongSupplier nanoTime) {
        this.allocatedBytes = allocatedBytes;
        this.nanoTime = nanoTime;
    }

    static AllocSampling forThisJvm() {
        return new AllocSampling(jvmAllocatedBytes(), System::nanoTime);
    }

    /** The interval for the upload interval starting now, from the rate since the last call. */
    long next() {
        long bytes = allocatedBytes.getAsLong();
        long now = nanoTime.getAsLong();
        // A negative or shrinking total (threads that ended take their counts along) says nothing.
        if (bytes >= 0 && lastBytes >= 0 && bytes >= lastBytes && now > lastNanos) {
            double perSecond = (bytes - lastBytes) * 1e9 / (now - lastNanos);
            current = Math.max(MIN_INTERVAL, Math.min(MAX_INTERVAL, (long) (perSecond / TARGET_PER_SECOND)));
        }
        lastBytes = bytes;
        lastNanos = now;
        return current;
    }

    /** Bytes allocated by all live threads (HotSpot's per-thread counters), or -1 where not kept. */
    private static LongSupplier jvmAllocatedBytes() {
        try {
            if (ManagementFactory.getThreadMXBean() instanceof com.sun.management.ThreadMXBean t
                    && t.isThreadAllocatedMemorySupported() && t.isThreadAllocatedMemoryEnabled()) {
                return t::getTotalThreadAllocatedBytes;
            }
        } catch (RuntimeException | LinkageError e) { // no jdk.management module: fixed interval
        }
        return () -> -1;
    }
}
