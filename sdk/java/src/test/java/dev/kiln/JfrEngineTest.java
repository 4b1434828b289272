package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.util.Map;
import org.junit.jupiter.api.Test;

/** The JFR fallback follows allocInterval=0 and lockThreshold like async-profiler does. */
class JfrEngineTest {
    private static Map<String, String> settingsFor(String args) throws Exception {
        JfrEngine e = JfrEngine.start(Config.fromAgentArgs("app=a," + args, Map.of()));
        try {
            return e.settings();
        } finally {
            e.rotate(false);
        }
    }

    @Test
    void recordsCpuAllocationsAndLocksByDefault() throws Exception {
        Map<String, String> s = settingsFor("samplingInterval=20ms,lockThreshold=50ms");
        assertEquals("true", s.get("jdk.ExecutionSample#enabled"), s.toString());
        assertEquals("20000000 ns", s.get("jdk.ExecutionSample#period"));
        assertEquals("true", s.get("jdk.ObjectAllocationSample#enabled"));
        assertEquals("150/s", s.get("jdk.ObjectAllocationSample#throttle"));
        assertEquals("50000000 ns", s.get("jdk.JavaMonitorEnter#threshold"));
        assertEquals("50000000 ns", s.get("jdk.ThreadPark#threshold"));
    }

    @Test
    void zeroTurnsAllocationsAndLocksOff() throws Exception {
        Map<String, String> s = settingsFor("allocInterval=0,lockThreshold=0");
        assertEquals("true", s.get("jdk.ExecutionSample#enabled"));
        assertNull(s.get("jdk.ObjectAllocationSample#enabled"), s.toString());
        assertNull(s.get("jdk.JavaMonitorEnter#enabled"));
        assertNull(s.get("jdk.ThreadPark#enabled"));
    }
}
