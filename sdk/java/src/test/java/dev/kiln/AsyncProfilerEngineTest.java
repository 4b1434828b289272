package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.logging.Logger;
import org.junit.jupiter.api.Test;

/** async-profiler with Flight Recorder's allocation samples: one upload of both recordings. */
class AsyncProfilerEngineTest {
    private static final byte[] CHUNK_MAGIC = "FLR\0".getBytes(StandardCharsets.US_ASCII);
    static volatile Object sink;

    /** Offsets where a JFR chunk starts. */
    private static List<Integer> chunks(byte[] jfr) {
        List<Integer> at = new ArrayList<>();
        outer:
        for (int i = 0; i + CHUNK_MAGIC.length <= jfr.length; i++) {
            for (int j = 0; j < CHUNK_MAGIC.length; j++) if (jfr[i + j] != CHUNK_MAGIC[j]) continue outer;
            at.add(i);
        }
        return at;
    }

    private static byte[] oneInterval(String args) throws Exception {
        Engine e = AsyncProfilerEngine.start(Config.fromAgentArgs("app=a," + args, Map.of()), Logger.getLogger("test"));
        try {
            long end = System.nanoTime() + 300_000_000L;
            while (System.nanoTime() < end) sink = new byte[16 << 10];
            assertEquals(args.isEmpty(), e.jfrAllocations(), args);
            return e.rotate(false);
        } finally {
            e.rotate(false); // nothing left: returns null
        }
    }

    @Test
    void flightRecorderChunksFollowAsyncProfilersByDefault() throws Exception {
        byte[] both = oneInterval("");
        List<Integer> at = chunks(both);
        assertEquals(0, at.get(0));
        assertTrue(at.size() >= 2, "expected async-profiler's chunk and Flight Recorder's after it, chunks at " + at);
        String text = new String(both, StandardCharsets.ISO_8859_1);
        assertTrue(text.contains(JfrEngine.ALLOCATION_SAMPLE), "no allocation sample event type in the upload");
    }

    @Test
    void anAllocationIntervalKeepsAsyncProfilersOwnSampler() throws Exception {
        byte[] one = oneInterval("allocInterval=256k");
        assertEquals(List.of(0), chunks(one), "one chunk: async-profiler's alone");
        assertTrue(new String(one, StandardCharsets.ISO_8859_1).contains("jdk.ObjectAllocationInNewTLAB"));
    }

    private static void allocateFor(long millis) {
        long end = System.nanoTime() + millis * 1_000_000L;
        while (System.nanoTime() < end) sink = new byte[16 << 10];
    }

    @Test
    void aDeferredStartUploadsAllocationsAloneUntilAsyncProfilerStarts() throws Exception {
        AsyncProfilerEngine e = AsyncProfilerEngine.start(Config.fromAgentArgs("app=a", Map.of()), Logger.getLogger("test"), true);
        try {
            assertFalse(e.profilerStarted(), "async-profiler started before startDeferred");
            allocateFor(300);
            byte[] before = e.rotate(true);
            assertNotNull(before, "no allocation samples before async-profiler started");
            assertTrue(new String(before, StandardCharsets.ISO_8859_1).contains(JfrEngine.ALLOCATION_SAMPLE));
            int flightRecorderChunks = chunks(before).size();

            e.startDeferred();
            assertTrue(e.profilerStarted());
            allocateFor(300);
            List<Integer> after = chunks(e.rotate(true));
            assertTrue(after.size() > flightRecorderChunks,
                    "no async-profiler chunk before Flight Recorder's once started: chunks at " + after);
        } finally {
            e.rotate(false);
        }
    }

    @Test
    void anAsyncProfilerThatFailsToStartLeavesCpuToFlightRecorder() throws Exception {
        AsyncProfilerEngine e = AsyncProfilerEngine.start(Config.fromAgentArgs("app=a", Map.of()), Logger.getLogger("test"), true);
        try {
            assertEquals("false", e.flightRecorder().settings().getOrDefault("jdk.ExecutionSample#enabled", "false"));
            e.startDeferred(() -> {
                throw new UnsatisfiedLinkError("no library for this test");
            });
            assertFalse(e.profilerStarted());
            assertNotNull(e.rotate(true));
            Map<String, String> next = e.flightRecorder().settings();
            assertEquals("true", next.get("jdk.ExecutionSample#enabled"), next.toString());
            assertEquals("true", next.get("jdk.JavaMonitorEnter#enabled"), next.toString());
        } finally {
            e.rotate(false);
        }
    }
}
