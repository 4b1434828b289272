package dev.kiln;

import static org.junit.jupiter.api.Assertions.*;

import com.sun.net.httpserver.HttpServer;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.time.Instant;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

class UploaderTest {
    record Seen(String query, String auth, byte[] body) {}

    private HttpServer server;
    private final List<Seen> seen = new CopyOnWriteArrayList<>();

    /** A fake daemon answering 503 to the first {@code failures} requests. */
    private String start(int failures) throws Exception {
        AtomicInteger calls = new AtomicInteger();
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/ingest", ex -> {
            byte[] body = ex.getRequestBody().readAllBytes();
            int status = calls.incrementAndGet() <= failures ? 503 : 200;
            if (status == 200) seen.add(new Seen(ex.getRequestURI().getRawQuery(), ex.getRequestHeaders().getFirst("Authorization"), body));
            ex.sendResponseHeaders(status, -1);
            ex.close();
        });
        server.start();
        return "http://127.0.0.1:" + server.getAddress().getPort();
    }

    @AfterEach
    void stop() {
        if (server != null) server.stop(0);
    }

    private static Uploader.Upload upload(String body) {
        return new Uploader.Upload(body.getBytes(), Instant.ofEpochSecond(1_700_000_000), Instant.ofEpochSecond(1_700_000_010));
    }

    @Test
    void sendsQueryAuthAndBodyRetryingServerErrors() throws Exception {
        String url = start(2);
        Config c = Config.builder().applicationName("app").serverAddress(url).authToken("tok").tag("env", "t").build();
        Uploader u = new Uploader(c);
        u.minBackoff = Duration.ofMillis(10);
        u.enqueue(upload("FLR\0data"));
        u.close(Duration.ofSeconds(10));
        assertEquals(1, seen.size());
        Seen s = seen.get(0);
        assertTrue(s.query().contains("name=app%7Benv%3Dt%7D"), s.query());
        assertTrue(s.query().contains("format=jfr") && s.query().contains("spyName=javaspy"), s.query());
        assertTrue(s.query().contains("from=1700000000") && s.query().contains("until=1700000010"), s.query());
        assertEquals("Bearer tok", s.auth());
        assertEquals("FLR\0data", new String(s.body()));
        assertEquals(1, u.sent.get());
    }

    @Test
    void dropsTheOldestWhenFull() throws Exception {
        Config c = Config.builder().applicationName("app").serverAddress("http://127.0.0.1:9").maxQueued(2).build();
        Uploader u = new Uploader(c);
        u.minBackoff = Duration.ofSeconds(5);
        for (int i = 0; i < 6; i++) u.enqueue(upload("r" + i));
        assertTrue(u.pending() <= 2);
        assertTrue(u.dropped.get() >= 3, "dropped " + u.dropped.get());
    }

    @Test
    void agentRecordsAndPushesRealJfrWithAsyncProfiler() throws Exception {
        recordsAndPushes("async-profiler");
    }

    @Test
    void agentRecordsAndPushesRealJfrWithFlightRecorder() throws Exception {
        recordsAndPushes("jfr");
    }

    private void recordsAndPushes(String engine) throws Exception {
        String url = start(0);
        KilnAgent.start(Config.builder().applicationName("self").serverAddress(url).engine(engine).uploadInterval(Duration.ofMillis(700)).build());
        long end = System.currentTimeMillis() + 1500;
        long x = 0;
        while (System.currentTimeMillis() < end) x += Long.toString(x).hashCode();
        KilnAgent.stop();
        assertFalse(seen.isEmpty(), "no recording arrived");
        byte[] b = seen.get(0).body();
        assertEquals("FLR\0", new String(b, 0, 4), "a JFR recording starts with its magic");
    }
}
