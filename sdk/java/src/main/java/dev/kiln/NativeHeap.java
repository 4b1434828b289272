package dev.kiln;

import java.lang.instrument.Instrumentation;
import java.lang.reflect.Method;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.logging.Logger;

/**
 * Gives the C library's free memory back to the system (HotSpot's {@code System.trim_native_heap}
 * diagnostic command, JDK 17.0.9+ on glibc). Starting Flight Recorder has the JIT compile a few
 * thousand methods of {@code jdk.jfr} and its bytecode library; the compilers' arenas are freed
 * afterwards but glibc keeps the pages, some 10 MB that the process would otherwise hold for good.
 * The command is run through the JDK's own native entry point rather than the platform MBean
 * server, which would load JMX for one call. Where any of it is missing (no instrumentation,
 * another JDK or C library) nothing is trimmed.
 */
final class NativeHeap {
    private static final String COMMAND = "System.trim_native_heap";
    private final Object diagnosticCommands;
    private final Method execute;

    private NativeHeap(Object diagnosticCommands, Method execute) {
        this.diagnosticCommands = diagnosticCommands;
        this.execute = execute;
    }

    /** The trimmer, or empty where this JVM has no way to trim (with one fine log line). */
    static Optional<NativeHeap> open(Instrumentation inst, Logger log) {
        if (inst == null) return Optional.empty();
        try {
            Module management = ModuleLayer.boot().findModule("jdk.management").orElse(null);
            if (management == null) return Optional.empty();
            String pkg = "com.sun.management.internal";
            inst.redefineModule(management, Set.of(), Map.of(), Map.of(pkg, Set.of(NativeHeap.class.getModule())),
                    Set.of(), Map.of());
            ClassLoader loader = management.getClassLoader();
            // Its class initializer loads the native library the command's entry point lives in.
            Class.forName(pkg + ".PlatformMBeanProviderImpl", true, loader);
            Class<?> impl = Class.forName(pkg + ".DiagnosticCommandImpl", true, loader);
            Method get = impl.getDeclaredMethod("getDiagnosticCommandMBean");
            get.setAccessible(true);
            Object commands = get.invoke(null);
            Method execute = impl.getDeclaredMethod("executeDiagnosticCommand", String.class);
            execute.setAccessible(true);
            if (commands == null) return Optional.empty();
            NativeHeap heap = new NativeHeap(commands, execute);
            // Throws on a JDK without the command; where the C library cannot trim it says so.
            String report = heap.trim();
            if (report.startsWith("Trim native heap")) return Optional.of(heap);
            log.fine("kiln: the native heap is not trimmed on this JVM: " + report);
            return Optional.empty();
        } catch (ReflectiveOperationException | RuntimeException | LinkageError e) {
            log.fine("kiln: the native heap is not trimmed on this JVM: " + e);
            return Optional.empty();
        }
    }

    /** Returns the command's report, e.g. {@code Trim native heap: RSS+Swap: 613M->603M (-9776K)}. */
    String trim() throws ReflectiveOperationException {
        return String.valueOf(execute.invoke(diagnosticCommands, COMMAND)).trim();
    }
}
