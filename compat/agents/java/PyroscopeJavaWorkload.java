import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;

/** A workload profiled by the official Pyroscope Java agent (io.pyroscope:agent), pointed at Kiln. */
public class PyroscopeJavaWorkload {
    static byte[] sink;
    static final List<byte[]> keep = new ArrayList<>();

    static void burn(long millis) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] b = new byte[4096];
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) b[0] = md.digest(b)[0];
        sink = b;
    }

    static void allocate(long millis) {
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) {
            keep.add(new byte[16 << 10]);
            if (keep.size() > 256) keep.clear();
        }
    }

    public static void main(String[] args) throws Exception {
        long end = System.currentTimeMillis() + Long.parseLong(args[0]) * 1000;
        while (System.currentTimeMillis() < end) {
            burn(70);
            allocate(30);
        }
    }
}
