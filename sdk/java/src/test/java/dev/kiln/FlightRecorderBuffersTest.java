package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.lang.management.ManagementFactory;
import java.util.Map;
import java.util.logging.Logger;
import javax.management.ObjectName;
import jdk.jfr.FlightRecorder;
import org.junit.jupiter.api.Test;

/**
 * Started from code (no instrumentation), Flight Recorder's allocation sampler still gets small
 * buffers, through the diagnostic command. The {@code -javaagent} route (jdk.jfr.internal opened
 * to the agent) is checked end to end by ci-test.sh. Each test class runs in a JVM of its own
 * (pom.xml), so Flight Recorder is not yet initialised here.
 */
class FlightRecorderBuffersTest {
    @Test
    void allocationsAloneStartFlightRecorderWithSmallBuffers() throws Exception {
        assertFalse(FlightRecorder.isInitialized(), "another test started Flight Recorder in this JVM");
        JfrEngine e = JfrEngine.startAllocations(Config.fromAgentArgs("app=a", Map.of()), null, Logger.getLogger("test"));
        try {
            String now = (String) ManagementFactory.getPlatformMBeanServer().invoke(
                    new ObjectName("com.sun.management:type=DiagnosticCommand"), "jfrConfigure",
                    new Object[] {new String[0]}, new String[] {String[].class.getName()});
            assertTrue(now.contains("Memory size: 1.0 MB"), now);
            assertTrue(now.contains("Global buffer count: 2"), now);
            assertTrue(now.contains("Thread buffer size: 4.0 kB"), now);
        } finally {
            e.rotate(false);
        }
    }
}
