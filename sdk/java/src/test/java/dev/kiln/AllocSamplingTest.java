package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** allocInterval=auto: bytes per sample from the last interval's allocation rate. */
class AllocSamplingTest {
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicLong nanos = new AtomicLong(1_000);
    private final AllocSampling sampling = new AllocSampling(bytes::get, nanos::get);

    private long after(long seconds, long allocated) {
        nanos.addAndGet(seconds * 1_000_000_000L);
        bytes.addAndGet(allocated);
        return sampling.next();
    }

    @Test
    void followsTheAllocationRateAtFiftySamplesASecond() {
        assertEquals(AllocSampling.FIRST_INTERVAL, sampling.next(), "no rate known yet");
        // 1.5 GB/s for 10 s: 30 MB per sample.
        assertEquals(1_500_000_000L / 50, after(10, 15_000_000_000L));
        // 100 MB/s: 2 MB per sample.
        assertEquals(100_000_000L / 50, after(10, 1_000_000_000L));
    }

    @Test
    void neverFinerThan512KiBNorCoarserThan1GiB() {
        sampling.next();
        assertEquals(512L << 10, after(10, 1_000), "an idle JVM");
        assertEquals(1L << 30, after(1, Long.MAX_VALUE / 4), "an absurd rate");
    }

    @Test
    void keepsTheLastIntervalWhenTheCounterSaysNothing() {
        sampling.next();
        long previous = after(10, 2_000_000_000L);
        bytes.set(-1);
        assertEquals(previous, after(10, 0), "counter unavailable");
        bytes.set(5_000_000_000L);
        sampling.next(); // a known total again
        bytes.set(1_000_000_000L);
        assertEquals(previous, after(10, 0), "a total that shrank (threads ended)");
    }

    @Test
    void readsThisJvmsCounter() {
        AllocSampling real = AllocSampling.forThisJvm();
        assertEquals(AllocSampling.FIRST_INTERVAL, real.next());
        byte[][] keep = new byte[64][];
        for (int i = 0; i < 64; i++) keep[i] = new byte[1 << 20];
        long next = real.next();
        assertTrue(next >= AllocSampling.MIN_INTERVAL && next <= AllocSampling.MAX_INTERVAL, "interval " + next);
        // HotSpot keeps per-thread allocation counters: a rate was read, so the first interval's value is gone.
        assertNotEquals(AllocSampling.FIRST_INTERVAL, next, "the JVM's allocation counter was not read");
        assertEquals(64, keep.length);
    }
}
