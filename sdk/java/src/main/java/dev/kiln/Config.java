package dev.kiln;

import java.time.Duration;
import java.util.Collections;
import java.util.Map;
import java.util.TreeMap;

/** What the agent profiles and where it sends it. Build with {@link #builder()} or {@link #fromAgentArgs}. */
public final class Config {
    /**
     * {@code allocInterval=auto}: the bytes per allocation sample follow the allocation rate,
     * about 50 samples a second and never finer than 512 KiB ({@link AllocSampling}). Not the
     * default: on JDK 17 the JVM's sampler over-counts bytes more the coarser the interval.
     */
    public static final long ALLOC_INTERVAL_AUTO = -1;

    /** One allocation sample per 512 KiB, as the official agent: byte totals stay accurate. */
    public static final long DEFAULT_ALLOC_INTERVAL = 512 << 10;

    final String applicationName;
    final String serverAddress;
    final String authToken;
    final Map<String, String> tags;
    final Duration uploadInterval;
    final Duration samplingInterval;
    /** async-profiler: one allocation sample per this many bytes allocated; 0 turns allocation profiling off; {@link #ALLOC_INTERVAL_AUTO}. */
    final long allocInterval;
    /** Lock waits (and, with JFR, parks) shorter than this are not recorded; zero turns lock profiling off. */
    final Duration lockThreshold;
    final int maxQueued;
    /** {@code auto} (async-profiler, else JFR), {@code async-profiler} or {@code jfr}. */
    final String engine;
    /**
     * Who samples allocations beside async-profiler's CPU samples: {@code auto} (JDK Flight
     * Recorder's throttled {@code jdk.ObjectAllocationSample} where the JVM has it, unless an
     * {@code allocInterval} was given; else async-profiler), {@code jfr} or {@code async-profiler}.
     */
    final String allocSampler;
    /**
     * With Flight Recorder's allocation sampler, how long after the agent async-profiler starts
     * (CPU and lock samples): long enough for the JIT and the JVM's arena pool to let go of what
     * starting Flight Recorder took, so that it is given back before async-profiler's tables are
     * built (see {@link AsyncProfilerEngine}). Zero starts both at once.
     */
    final Duration cpuStartDelay;
    /** Whether {@code allocInterval} was set rather than left at its default. */
    final boolean allocIntervalGiven;
    /** TLS settings from caFile / clientCertFile / clientKeyFile; null: the JVM's defaults. */
    final javax.net.ssl.SSLSocketFactory sslSocketFactory;

    private Config(Builder b) {
        this.applicationName = b.applicationName;
        this.serverAddress = b.serverAddress.replaceAll("/+$", "");
        this.authToken = b.authToken;
        this.tags = Collections.unmodifiableMap(new TreeMap<>(b.tags));
        this.uploadInterval = b.uploadInterval;
        this.samplingInterval = b.samplingInterval;
        this.allocInterval = b.allocInterval;
        this.lockThreshold = b.lockThreshold;
        this.maxQueued = b.maxQueued;
        this.engine = b.engine;
        this.allocSampler = b.allocSampler;
        this.allocIntervalGiven = b.allocIntervalGiven;
        this.cpuStartDelay = b.cpuStartDelay;
        this.sslSocketFactory = TlsFiles.socketFactory(b.caFile, b.clientCertFile, b.clientKeyFile);
    }

    public static Builder builder() {
        return new Builder();
    }

    /**
     * Parses {@code -javaagent:kiln-agent.jar=server=URL,app=NAME,tags=k1:v1;k2:v2,uploadInterval=SECONDS,authToken=T,engine=auto|async-profiler|jfr,samplingInterval=10ms,allocInterval=auto|BYTES|0,allocSampler=auto|jfr|async-profiler,lockThreshold=10ms,cpuStartDelay=6s,caFile=PEM,clientCertFile=PEM,clientKeyFile=PEM},
     * falling back to the environment ({@code KILN_SERVER_ADDRESS}, {@code KILN_APPLICATION_NAME},
     * {@code KILN_TAGS}, {@code KILN_UPLOAD_INTERVAL}, {@code KILN_AUTH_TOKEN}, {@code KILN_ENGINE},
     * {@code KILN_SAMPLING_INTERVAL}, {@code KILN_ALLOC_INTERVAL}, {@code KILN_ALLOC_SAMPLER}, {@code KILN_LOCK_THRESHOLD}, {@code KILN_CPU_START_DELAY},
     * {@code KILN_CA_FILE}, {@code KILN_CLIENT_CERT_FILE}, {@code KILN_CLIENT_KEY_FILE}) and system
     * properties ({@code kiln.server}, {@code kiln.app}, …, {@code kiln.engine}, {@code kiln.allocInterval}).
     */
    public static Config fromAgentArgs(String args, Map<String, String> env) {
        Map<String, String> kv = new TreeMap<>();
        if (args != null && !args.isBlank()) {
            for (String pair : args.split(",")) {
                int eq = pair.indexOf('=');
                if (eq <= 0) throw new IllegalArgumentException("agent argument '" + pair + "' is not key=value");
                kv.put(pair.substring(0, eq).trim(), pair.substring(eq + 1).trim());
            }
        }
        Builder b = builder();
        String server = pick(kv.get("server"), System.getProperty("kiln.server"), env.get("KILN_SERVER_ADDRESS"));
        String app = pick(kv.get("app"), System.getProperty("kiln.app"), env.get("KILN_APPLICATION_NAME"));
        if (server != null) b.serverAddress(server);
        if (app != null) b.applicationName(app);
        String token = pick(kv.get("authToken"), System.getProperty("kiln.authToken"), env.get("KILN_AUTH_TOKEN"));
        if (token != null) b.authToken(token);
        String tags = pick(kv.get("tags"), System.getProperty("kiln.tags"), env.get("KILN_TAGS"));
        if (tags != null && !tags.isBlank()) {
            for (String t : tags.split(";")) {
                int c = t.indexOf(':');
                if (c <= 0) throw new IllegalArgumentException("tag '" + t + "' is not key:value");
                b.tag(t.substring(0, c).trim(), t.substring(c + 1).trim());
            }
        }
        String every = pick(kv.get("uploadInterval"), System.getProperty("kiln.uploadInterval"), env.get("KILN_UPLOAD_INTERVAL"));
        if (every != null) b.uploadInterval(Duration.ofSeconds(Long.parseLong(every)));
        String engine = pick(kv.get("engine"), System.getProperty("kiln.engine"), env.get("KILN_ENGINE"));
        if (engine != null) b.engine(engine);
        String sampling = pick(kv.get("samplingInterval"), System.getProperty("kiln.samplingInterval"), env.get("KILN_SAMPLING_INTERVAL"));
        if (sampling != null) b.samplingInterval(Units.parseDuration("samplingInterval", sampling));
        String alloc = pick(kv.get("allocInterval"), System.getProperty("kiln.allocInterval"), env.get("KILN_ALLOC_INTERVAL"));
        if (alloc != null) {
            b.allocInterval(alloc.trim().equalsIgnoreCase("auto") ? ALLOC_INTERVAL_AUTO : Units.parseBytes("allocInterval", alloc));
        }
        String sampler = pick(kv.get("allocSampler"), System.getProperty("kiln.allocSampler"), env.get("KILN_ALLOC_SAMPLER"));
        if (sampler != null) b.allocSampler(sampler.trim());
        String lock = pick(kv.get("lockThreshold"), System.getProperty("kiln.lockThreshold"), env.get("KILN_LOCK_THRESHOLD"));
        if (lock != null) b.lockThreshold(Units.parseDuration("lockThreshold", lock));
        String delay = pick(kv.get("cpuStartDelay"), System.getProperty("kiln.cpuStartDelay"), env.get("KILN_CPU_START_DELAY"));
        if (delay != null) b.cpuStartDelay(Units.parseDuration("cpuStartDelay", delay));
        b.caFile(pick(kv.get("caFile"), System.getProperty("kiln.caFile"), env.get("KILN_CA_FILE")));
        b.clientCertFile(pick(kv.get("clientCertFile"), System.getProperty("kiln.clientCertFile"), env.get("KILN_CLIENT_CERT_FILE")));
        b.clientKeyFile(pick(kv.get("clientKeyFile"), System.getProperty("kiln.clientKeyFile"), env.get("KILN_CLIENT_KEY_FILE")));
        return b.build();
    }

    private static String pick(String... candidates) {
        for (String c : candidates) if (c != null && !c.isBlank()) return c;
        return null;
    }

    /**
     * Whether allocations come from JDK Flight Recorder's throttled sampler beside async-profiler
     * (whose own allocation sampling goes through JVMTI, which costs allocation-heavy code a few
     * percent whatever the interval), given whether this JVM has that sampler.
     */
    boolean jfrAllocations(boolean jfrSamplerAvailable) {
        if (allocInterval == 0 || !jfrSamplerAvailable) return false;
        return switch (allocSampler) {
            case "jfr" -> true;
            case "async-profiler" -> false;
            default -> !allocIntervalGiven;
        };
    }

    /** {@code app{k=v,...}} with sorted keys, as the {@code name} parameter. */
    String seriesName() {
        StringBuilder sb = new StringBuilder(applicationName).append('{');
        boolean first = true;
        for (Map.Entry<String, String> e : tags.entrySet()) {
            if (!first) sb.append(',');
            sb.append(e.getKey()).append('=').append(e.getValue());
            first = false;
        }
        return sb.append('}').toString();
    }

    public static final class Builder {
        private String applicationName;
        private String serverAddress = "http://127.0.0.1:4040";
        private String authToken;
        private final Map<String, String> tags = new TreeMap<>();
        private Duration uploadInterval = Duration.ofSeconds(10);
        private Duration samplingInterval = Duration.ofMillis(10);
        private long allocInterval = DEFAULT_ALLOC_INTERVAL;
        private Duration lockThreshold = Duration.ofMillis(10);
        private int maxQueued = 32;
        private String engine = "auto";
        private String allocSampler = "auto";
        private boolean allocIntervalGiven;
        private Duration cpuStartDelay = Duration.ofSeconds(6);
        private String caFile;
        private String clientCertFile;
        private String clientKeyFile;

        public Builder applicationName(String v) { this.applicationName = v; return this; }
        public Builder serverAddress(String v) { this.serverAddress = v; return this; }
        public Builder authToken(String v) { this.authToken = v; return this; }
        public Builder tag(String k, String v) { this.tags.put(k, v); return this; }
        public Builder tags(Map<String, String> m) { this.tags.putAll(m); return this; }
        public Builder uploadInterval(Duration v) { this.uploadInterval = v; return this; }
        public Builder samplingInterval(Duration v) { this.samplingInterval = v; return this; }
        /**
         * Bytes allocated per allocation sample (async-profiler's sampler; giving one chooses it
         * under {@code allocSampler=auto}); 0 turns allocation profiling off; 512 KiB by default;
         * {@link #ALLOC_INTERVAL_AUTO} follows the allocation rate.
         */
        public Builder allocInterval(long v) { this.allocInterval = v; this.allocIntervalGiven = true; return this; }
        /** {@code auto}, {@code jfr} or {@code async-profiler}: see {@link Config#allocSampler}. */
        public Builder allocSampler(String v) { this.allocSampler = v; return this; }
        /** Shortest lock wait recorded; {@link Duration#ZERO} turns lock profiling off. */
        public Builder lockThreshold(Duration v) { this.lockThreshold = v; return this; }
        /** See {@link Config#cpuStartDelay}; {@link Duration#ZERO} starts CPU sampling with the agent. */
        public Builder cpuStartDelay(Duration v) { this.cpuStartDelay = v; return this; }
        public Builder maxQueued(int v) { this.maxQueued = Math.max(1, v); return this; }
        public Builder engine(String v) { this.engine = v; return this; }
        /** A PEM file of CA certificates trusted for an https server instead of the JVM's. */
        public Builder caFile(String v) { this.caFile = v; return this; }
        /** A PEM client certificate (chain) for a daemon with mutual TLS; with {@link #clientKeyFile}. */
        public Builder clientCertFile(String v) { this.clientCertFile = v; return this; }
        /** The unencrypted PKCS#8 PEM key of {@link #clientCertFile}. */
        public Builder clientKeyFile(String v) { this.clientKeyFile = v; return this; }

        public Config build() {
            if (applicationName == null || !applicationName.matches("[A-Za-z0-9_./-]+")) {
                throw new IllegalArgumentException("application name must match [A-Za-z0-9_./-]+, got " + applicationName);
            }
            if (!serverAddress.startsWith("http://") && !serverAddress.startsWith("https://")) {
                throw new IllegalArgumentException("server address must be an http(s) URL, got " + serverAddress);
            }
            for (Map.Entry<String, String> e : tags.entrySet()) {
                if (!e.getKey().matches("[A-Za-z0-9_.]+") || e.getValue().contains(",") || e.getValue().contains("}")) {
                    throw new IllegalArgumentException("tag " + e.getKey() + "=" + e.getValue() + " cannot be carried in a series name");
                }
            }
            if (!engine.equals("auto") && !engine.equals("async-profiler") && !engine.equals("jfr")) {
                throw new IllegalArgumentException("engine must be auto, async-profiler or jfr, got " + engine);
            }
            if (!allocSampler.equals("auto") && !allocSampler.equals("async-profiler") && !allocSampler.equals("jfr")) {
                throw new IllegalArgumentException("allocSampler must be auto, async-profiler or jfr, got " + allocSampler);
            }
            if (uploadInterval.isZero() || uploadInterval.isNegative()) {
                throw new IllegalArgumentException("upload interval must be positive");
            }
            if (samplingInterval.toMillis() < 1) {
                throw new IllegalArgumentException("sampling interval must be at least 1ms, got " + samplingInterval.toNanos() + "ns");
            }
            if (allocInterval < 0 && allocInterval != ALLOC_INTERVAL_AUTO) {
                throw new IllegalArgumentException("allocation interval must be auto, 0 (off) or positive");
            }
            if (lockThreshold.isNegative()) throw new IllegalArgumentException("lock threshold must be 0 (off) or positive");
            if (cpuStartDelay.isNegative()) throw new IllegalArgumentException("cpuStartDelay must be 0 or positive");
            return new Config(this);
        }
    }
}
