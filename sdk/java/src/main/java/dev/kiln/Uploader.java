package dev.kiln;

import java.io.IOException;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayDeque;
import java.util.concurrent.atomic.AtomicLong;
import java.util.logging.Level;
import java.util.logging.Logger;
import javax.net.ssl.HttpsURLConnection;

/**
 * Sends recordings from a bounded queue on one daemon thread, retrying with backoff. Uses
 * {@link HttpURLConnection}: one request every interval does not need java.net.http's client,
 * whose first requests cost the host JVM more JIT compilation than the whole send path here.
 */
final class Uploader {
    private static final Logger LOG = Logger.getLogger("dev.kiln");

    record Upload(byte[] jfr, Instant from, Instant until) {}

    private final Config config;
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
        HttpURLConnection c = (HttpURLConnection) URI.create(url).toURL().openConnection();
        if (config.sslSocketFactory != null && c instanceof HttpsURLConnection https) {
            https.setSSLSocketFactory(config.sslSocketFactory);
        }
        try {
            c.setConnectTimeout(5_000);
            c.setReadTimeout(30_000);
            c.setRequestMethod("POST");
            c.setDoOutput(true);
            c.setFixedLengthStreamingMode(u.jfr().length);
            c.setRequestProperty("Content-Type", "application/octet-stream");
            if (config.authToken != null) c.setRequestProperty("Authorization", "Bearer " + config.authToken);
            try (OutputStream out = c.getOutputStream()) {
                out.write(u.jfr());
            }
            int status = c.getResponseCode();
            if (Thread.interrupted()) throw new InterruptedException();
            return status;
        } finally {
            c.disconnect(); // one request per interval: no point keeping the connection
        }
    }
}
