package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.time.Duration;
import java.util.Map;
import org.junit.jupiter.api.Test;

class ConfigTest {
    @Test
    void parsesAgentArgumentsWithSortedTags() {
        Config c = Config.fromAgentArgs("server=http://127.0.0.1:4040/,app=shop,tags=z:1;a:2,uploadInterval=3,authToken=t", Map.of());
        assertEquals("http://127.0.0.1:4040", c.serverAddress);
        assertEquals("shop{a=2,z=1}", c.seriesName());
        assertEquals(Duration.ofSeconds(3), c.uploadInterval);
        assertEquals("t", c.authToken);
        assertEquals("auto", c.engine);
        assertEquals("jfr", Config.fromAgentArgs("app=a,engine=jfr", Map.of()).engine);
    }

    @Test
    void fallsBackToTheEnvironment() {
        Config c = Config.fromAgentArgs("", Map.of("KILN_APPLICATION_NAME", "envapp", "KILN_SERVER_ADDRESS", "http://h:1", "KILN_TAGS", "env:prod"));
        assertEquals("envapp{env=prod}", c.seriesName());
        assertEquals("http://h:1", c.serverAddress);
    }

    @Test
    void refusesBadInput() {
        assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app", Map.of()));
        assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app=a b", Map.of()));
        assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app=a,tags=k", Map.of()));
        assertThrows(IllegalArgumentException.class, () -> Config.builder().applicationName("a").serverAddress("ftp://x").build());
        assertThrows(IllegalArgumentException.class, () -> Config.builder().applicationName("a").tag("k", "a,b").build());
        assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app=a,engine=perf", Map.of()));
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
                () -> Config.fromAgentArgs("app=a,caFile=/nonexistent/ca.pem", Map.of()));
        assertTrue(missing.getMessage().contains("/nonexistent/ca.pem"), missing.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Config.fromAgentArgs("app=a,clientCertFile=/x.pem", Map.of()));
    }

    @Test
    void cpuStartDelayDefaultsToSixSecondsAndZeroStartsAtOnce() {
        assertEquals(Duration.ofSeconds(6), Config.fromAgentArgs("app=a", Map.of()).cpuStartDelay);
        assertEquals(Duration.ZERO, Config.fromAgentArgs("app=a,cpuStartDelay=0", Map.of()).cpuStartDelay);
        assertEquals(Duration.ofMillis(1500), Config.fromAgentArgs("app=a", Map.of("KILN_CPU_START_DELAY", "1500ms")).cpuStartDelay);
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> Config.fromAgentArgs("app=a,cpuStartDelay=soon", Map.of()));
        assertTrue(bad.getMessage().contains("cpuStartDelay"), bad.getMessage());
        assertThrows(IllegalArgumentException.class, () -> Config.builder().applicationName("a").cpuStartDelay(Duration.ofSeconds(-1)).build());
    }

    @Test
    void withoutTlsFilesTheJvmDefaultsStay() {
        assertNull(Config.fromAgentArgs("app=a", Map.of()).sslSocketFactory);
    }
}
