package dev.kiln;

import java.io.InputStream;

import jdk.jfr.Recording;
import jdk.jfr.RecordingState;

/** JDK Flight Recorder: a new recording per interval, read back from JFR's own files. */
final class JfrEngine implements Engine {
    private final Config config;
    private Recording recording;

    private JfrEngine(Config config) {
        this.config = config;
    }

    static JfrEngine start(Config config) {
        JfrEngine e = new JfrEngine(config);
        e.recording = e.newRecording();
        return e;
    }

    @Override
    public String name() {
        return "JDK Flight Recorder";
    }

    /** The running recording's event settings ({@code event#setting} → value). */
    java.util.Map<String, String> settings() {
        return recording.getSettings();
    }

    private Recording newRecording() {
        Recording r = new Recording();
        r.setName("kiln");
        r.enable("jdk.ExecutionSample").withPeriod(config.samplingInterval);
        // JFR bounds allocation samples by rate, not by bytes: allocInterval only turns them off.
        if (config.allocInterval != 0) r.enable("jdk.ObjectAllocationSample").with("throttle", "150/s");
        if (!config.lockThreshold.isZero()) {
            r.enable("jdk.JavaMonitorEnter").withThreshold(config.lockThreshold).withStackTrace();
            r.enable("jdk.ThreadPark").withThreshold(config.lockThreshold).withStackTrace();
        }
        // On disk: the data of a stopped in-memory recording cannot be read back.
        r.setToDisk(true);
        r.start();
        return r;
    }

    @Override
    public byte[] rotate(boolean next) throws Exception {
        Recording done = recording;
        recording = next ? newRecording() : null;
        if (done == null) return null;
        try {
            // At exit the JDK's own shutdown hook may have stopped it already.
            if (done.getState() == RecordingState.RUNNING) done.stop();
            // Read the recording's chunks where JFR wrote them rather than dumping a copy first.
            try (InputStream in = done.getStream(null, null)) {
                return in == null ? null : in.readAllBytes();
            }
        } finally {
            done.close();
        }
    }
}
