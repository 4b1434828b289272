import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;

/**
 * The workload of examples/java-app/JavaApp.java (a SHA-256 hot path and a 16 KiB allocation
 * hot path, about 70/30 of the time) as a fixed amount of work instead of a fixed time, so that
 * whatever CPU a profiler adds shows in the process's CPU time even when the machine is busy.
 * Usage: java OverheadApp ROUNDS
 */
public class OverheadApp {
    static byte[] sink;
    static final List<byte[]> keep = new ArrayList<>();

    static void hashLoop(int digests) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] b = new byte[4096];
        for (int i = 0; i < digests; i++) b[0] = md.digest(b)[0];
        sink = b;
    }

    static void allocLoop(int arrays) {
        for (int i = 0; i < arrays; i++) {
            keep.add(new byte[16 << 10]);
            if (keep.size() > 256) keep.clear();
        }
    }

    public static void main(String[] args) throws Exception {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 200;
        for (int r = 0; r < rounds; r++) {
            hashLoop(14000);
            allocLoop(8000);
        }
    }
}
