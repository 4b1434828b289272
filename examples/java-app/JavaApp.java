import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;

/**
 * A small service with a CPU hot path ({@code hashLoop}) and an allocation hot path
 * ({@code allocLoop}). Run it with the Kiln agent:
 *
 * <pre>
 * (cd sdk/java && mvn -q package)
 * java -javaagent:sdk/java/target/kiln-agent.jar=server=http://127.0.0.1:4040,app=java-app,tags=env:demo \
 *      examples/java-app/JavaApp.java 30
 * </pre>
 */
public class JavaApp {
    static byte[] sink;
    static final List<byte[]> keep = new ArrayList<>();

    static void hashLoop(long millis) throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        byte[] b = new byte[4096];
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) b[0] = md.digest(b)[0];
        sink = b;
    }

    static void allocLoop(long millis) {
        long end = System.currentTimeMillis() + millis;
        while (System.currentTimeMillis() < end) {
            keep.add(new byte[16 << 10]);
            if (keep.size() > 256) keep.clear();
        }
    }

    public static void main(String[] args) throws Exception {
        long seconds = args.length > 0 ? Long.parseLong(args[0]) : 30;
        long end = System.currentTimeMillis() + seconds * 1000;
        while (System.currentTimeMillis() < end) {
            hashLoop(70);
            allocLoop(30);
        }
    }
}
