package dev.kiln;

import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;

/** Sends recordings from a bounded queue on one daemon thread, retrying with backoff. */
final class Uploader {
    private static final Logger LOG = Logger.getLogger("dev.kiln");

    record Upload(byte[] jfr, Instant from, Instant until) {}

    private final Config config;
    private final HttpClient client;
    private final ArrayDeque<Upload> queue = new ArrayDeque<>();
    private final Thread thread;
    final AtomicLong sent = new AtomicLong();
    final AtomicLong dropped = new AtomicLong();
    private volatile boolean closing;
    private volatile long deadlineNanos = Long.MAX_VALUE;
    Duration minBackoff = Duration.ofMillis(500);
    Duration maxBackoff = Duration.ofSeconds(30);

    Uploader(Config config) {
        this.config = config;
        this.client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        this.thread = new Thread(this::run, "kiln-uploader");
        this.thread.setDaemon(true);
        this.thread.start();
    }

    /** Queues a recording, dropping the oldest when the queue is full. */
    void enqueue(Upload u) {
        synchronized (queue) {
            if (queue.size() >= config.maxQueued) {
                queue.pollFirst();
                long n = dropped.incrementAndGet();
                LOG.warning("kiln: upload queue full; dropped the oldest recording (" + n + " dropped so far)");
            }
            queue.addLast(u);
            queue.notifyAll();
        }
    }

    int pending() {
        synchronized (queue) {
            return queue.size();
        }
    }

    /** Sends what is queued, giving up after {@code timeout}. */
    void close(Duration timeout) throws InterruptedException {
        deadlineNanos = System.nanoTime() + timeout.toNanos();
        closing = true;
        synchronized (queue) {
            queue.notifyAll();
        }
        thread.join(timeout.toMillis() + 1000);
        LOG.info("kiln: stopped; " + sent.get() + " recordings sent, " + dropped.get() + " dropped");
    }

    private void run() {
        Duration backoff = minBackoff;
        while (true) {
            Upload u;
            synchronized (queue) {
                while (queue.isEmpty() && !closing) {
                    try {
                        queue.wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                u = queue.peekFirst();
                if (u == null) return;
            }
            String failure;
            try {
                int status = send(u);
                if (status / 100 == 2) {
                    sent.incrementAndGet();
                    failure = null;
                } else if (status == 429 || status >= 500) {
                    failure = "status " + status;
                } else {
                    LOG.warning("kiln: server refused a recording with status " + status + "; dropping it");
                    failure = null;
                }
            } catch (IOException e) {
                failure = e.toString();
            } catch (InterruptedException e) {
                return;
            }
            if (failure == null || System.nanoTime() > deadlineNanos) {
                if (failure != null) LOG.warning("kiln: giving up on a recording at shutdown: " + failure);
                synchronized (queue) {
                    if (queue.peekFirst() == u) queue.pollFirst();
                }
                backoff = minBackoff;
                continue;
            }
            LOG.log(Level.WARNING, "kiln: upload failed (" + failure + "); retrying in " + backoff.toMillis() + " ms");
            try {
                Thread.sleep(backoff.toMillis());
            } catch (InterruptedException e) {
                return;
            }
            backoff = backoff.multipliedBy(2).compareTo(maxBackoff) > 0 ? maxBackoff : backoff.multipliedBy(2);
        }
    }

    private static String enc(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8);
    }

    int send(Upload u) throws IOException, InterruptedException {
        String url = config.serverAddress + "/ingest?name=" + enc(config.seriesName())
                + "&format=jfr&spyName=javaspy"
                + "&sampleRate=" + Math.max(1, 1000 / Math.max(1, config.samplingInterval.toMillis()))
                + "&from=" + u.from().getEpochSecond() + "&until=" + u.until().getEpochSecond();
        HttpRequest.Builder req = HttpRequest.newBuilder(URI.create(url))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/octet-stream")
                .POST(HttpRequest.BodyPublishers.ofByteArray(u.jfr()));
        if (config.authToken != null) req.header("Authorization", "Bearer " + config.authToken);
        return client.send(req.build(), HttpResponse.BodyHandlers.discarding()).statusCode();
    }
}
