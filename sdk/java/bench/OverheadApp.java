import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;

/**
 * The workload of examples/java-app/JavaApp.java (a SHA-256 hot path and a 16 KiB allocation
 * hot path, about 70/30 of the time) as a fixed amount of work instead of a fixed time, so that
 * whatever CPU a profiler adds shows in the process's CPU time even when the machine is busy.
 * Usage: java OverheadApp ROUNDS [WARMUP_SECONDS]
 *
 * <p>With a warm-up, it first runs rounds for that many seconds (JIT, a profiler's start-up and
 * its first uploads), then ROUNDS counted rounds, and prints the process CPU time of those
 * rounds as {@code steady-cpu-seconds: S}: the steady-state cost without the one-time start-up.
 * It also prints {@code startup-cpu-seconds: U}, the CPU time before the counted rounds less what
 * the warm-up rounds cost at the steady rate: JVM start-up, JIT, and a profiler's own start-up.
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

    /** User+system CPU seconds of this process so far (Linux; clock ticks of 10 ms). */
    static double processCpu() throws Exception {
        String stat = Files.readString(Path.of("/proc/self/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return (Long.parseLong(f[11]) + Long.parseLong(f[12])) / 100.0;
    }

    public static void main(String[] args) throws Exception {
        int rounds = args.length > 0 ? Integer.parseInt(args[0]) : 200;
        double warmup = args.length > 1 ? Double.parseDouble(args[1]) : 0;
        long warmEnd = System.nanoTime() + (long) (warmup * 1e9);
        int warmRounds = 0;
        for (; System.nanoTime() < warmEnd; warmRounds++) {
            hashLoop(14000);
            allocLoop(8000);
        }
        double cpu0 = warmup > 0 ? processCpu() : 0;
        for (int r = 0; r < rounds; r++) {
            hashLoop(14000);
            allocLoop(8000);
        }
        if (warmup > 0) {
            double steady = processCpu() - cpu0;
            System.out.printf("steady-cpu-seconds: %.2f%n", steady);
            System.out.printf("startup-cpu-seconds: %.2f%n", cpu0 - warmRounds * steady / Math.max(1, rounds));
        }
    }
}
