package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** allocInterval, lockThreshold and samplingInterval: parsing, defaults, and what the profiler is started with. */
class ProfilerSettingsTest {
    @Test
    void defaultsAreCpuAt10msAllocationsEvery512KiBAndLocksOver10ms() {
        Config c = Config.fromAgentArgs("app=a", Map.of());
        assertEquals(Duration.ofMillis(10), c.samplingInterval);
        assertEquals(512 << 10, c.allocInterval);
        assertEquals(Config.ALLOC_INTERVAL_AUTO, Config.fromAgentArgs("app=a,allocInterval=AUTO", Map.of()).allocInterval);
        assertEquals(Duration.ofMillis(10), c.lockThreshold);
        assertEquals("event=itimer,interval=10000000,alloc=2097152,lock=10000000,jfr", AsyncProfilerEngine.options(c, 2L << 20));
    }

    @Test
    void parsesSizesAndDurationsWithUnits() {
        Config c = Config.fromAgentArgs("app=a,allocInterval=512k,lockThreshold=1s,samplingInterval=20", Map.of());
        assertEquals(512L << 10, c.allocInterval);
        assertEquals(Duration.ofSeconds(1), c.lockThreshold);
        assertEquals(Duration.ofMillis(20), c.samplingInterval);
        assertEquals("event=itimer,interval=20000000,alloc=524288,lock=1000000000,jfr", AsyncProfilerEngine.options(c, c.allocInterval));
        assertEquals(4L << 20, Config.fromAgentArgs("app=a,allocInterval=4M", Map.of()).allocInterval);
        assertEquals(1L << 30, Config.fromAgentArgs("app=a,allocInterval=1g", Map.of()).allocInterval);
        assertEquals(1000, Config.fromAgentArgs("app=a,allocInterval=1000", Map.of()).allocInterval);
        assertEquals(Duration.ofNanos(500_000), Config.fromAgentArgs("app=a,lockThreshold=500us", Map.of()).lockThreshold);
        assertEquals(Duration.ofMillis(5), Config.fromAgentArgs("app=a,lockThreshold=5ms", Map.of()).lockThreshold);
    }

    @Test
    void zeroTurnsAllocationsOrLocksOff() {
        Config cpuOnly = Config.fromAgentArgs("app=a,allocInterval=0,lockThreshold=0", Map.of());
        assertEquals("event=itimer,interval=10000000,jfr", AsyncProfilerEngine.options(cpuOnly, cpuOnly.allocInterval));
        Config noLocks = Config.fromAgentArgs("app=a,allocInterval=2m,lockThreshold=0", Map.of());
        assertEquals("event=itimer,interval=10000000,alloc=2097152,jfr", AsyncProfilerEngine.options(noLocks, noLocks.allocInterval));
    }

    @Test
    void comesFromTheEnvironmentAndAgentArgumentsWin() {
        Map<String, String> env = Map.of("KILN_ALLOC_INTERVAL", "8m", "KILN_LOCK_THRESHOLD", "50ms", "KILN_SAMPLING_INTERVAL", "100ms");
        Config c = Config.fromAgentArgs("app=a", env);
        assertEquals(8L << 20, c.allocInterval);
        assertEquals(Duration.ofMillis(50), c.lockThreshold);
        assertEquals(Duration.ofMillis(100), c.samplingInterval);
        assertEquals(1L << 20, Config.fromAgentArgs("app=a,allocInterval=1m", env).allocInterval);
    }

    @Test
    void refusesBadValuesNamingTheKey() {
        for (String bad : new String[] {"allocInterval=lots", "allocInterval=-1", "allocInterval=-2", "allocInterval=2t", "allocInterval=99999999999999999g",
                "lockThreshold=soon", "lockThreshold=-5ms", "samplingInterval=0", "samplingInterval=500us"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app=a," + bad, Map.of()), bad);
            String key = bad.substring(0, bad.indexOf('='));
            assertTrue(e.getMessage().contains(key) || e.getMessage().contains("sampling interval"), e.getMessage());
        }
        assertThrows(IllegalArgumentException.class, () -> Config.builder().applicationName("a").allocInterval(-2).build());
        assertThrows(IllegalArgumentException.class, () -> Config.builder().applicationName("a").lockThreshold(Duration.ofMillis(-1)).build());
    }

    @Test
    void allocationsComeFromFlightRecorderUnlessAnAsyncProfilerIntervalIsAskedFor() {
        assertTrue(Config.fromAgentArgs("app=a", Map.of()).jfrAllocations(true));
        assertFalse(Config.fromAgentArgs("app=a", Map.of()).jfrAllocations(false), "a JVM without the sampler");
        assertFalse(Config.fromAgentArgs("app=a,allocInterval=1m", Map.of()).jfrAllocations(true));
        assertFalse(Config.fromAgentArgs("app=a,allocInterval=auto", Map.of()).jfrAllocations(true));
        assertFalse(Config.fromAgentArgs("app=a", Map.of("KILN_ALLOC_INTERVAL", "2m")).jfrAllocations(true));
        assertTrue(Config.fromAgentArgs("app=a,allocInterval=1m,allocSampler=jfr", Map.of()).jfrAllocations(true));
        assertTrue(Config.fromAgentArgs("app=a", Map.of("KILN_ALLOC_SAMPLER", "jfr", "KILN_ALLOC_INTERVAL", "2m")).jfrAllocations(true));
        assertFalse(Config.fromAgentArgs("app=a,allocSampler=async-profiler", Map.of()).jfrAllocations(true));
        assertFalse(Config.fromAgentArgs("app=a,allocInterval=0,allocSampler=jfr", Map.of()).jfrAllocations(true), "0 is off");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> Config.fromAgentArgs("app=a,allocSampler=tlab", Map.of()));
        assertTrue(e.getMessage().contains("allocSampler"), e.getMessage());
    }

    @Test
    void startUpLogSaysWhatIsSampled() {
        assertEquals("cpu 10ms, alloc 524288 B, lock 10ms", KilnAgent.settings(Config.fromAgentArgs("app=a", Map.of()), false));
        assertEquals("cpu 10ms, alloc auto, lock 10ms", KilnAgent.settings(Config.fromAgentArgs("app=a,allocInterval=auto", Map.of()), false));
        assertEquals("cpu 10ms, alloc 150/s, lock 10ms", KilnAgent.settings(Config.fromAgentArgs("app=a", Map.of()), true));
        assertEquals("cpu 20ms, alloc off, lock off",
                KilnAgent.settings(Config.fromAgentArgs("app=a,samplingInterval=20,allocInterval=0,lockThreshold=0", Map.of()), true));
        assertEquals("cpu 10ms, alloc 524288 B, lock 5ms", KilnAgent.settings(Config.fromAgentArgs("app=a,allocInterval=512k,lockThreshold=5ms", Map.of()), false));
    }
}
