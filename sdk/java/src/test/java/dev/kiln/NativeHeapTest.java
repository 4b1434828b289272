package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import java.util.logging.Logger;
import org.junit.jupiter.api.Test;

/**
 * Without the agent's instrumentation (started from code) the native heap is left alone; the
 * {@code -javaagent} route, which trims it, is checked end to end by ci-test.sh.
 */
class NativeHeapTest {
    @Test
    void withoutInstrumentationNothingIsTrimmed() {
        assertTrue(NativeHeap.open(null, Logger.getLogger("test")).isEmpty());
    }
}
