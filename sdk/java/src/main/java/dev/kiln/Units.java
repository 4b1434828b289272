package dev.kiln;

import java.time.Duration;

/** Sizes and durations as written in agent arguments ({@code 512k}, {@code 4m}, {@code 10ms}, {@code 0}). */
final class Units {
    private Units() {}

    /** Bytes with an optional {@code k}, {@code m} or {@code g} suffix (powers of 1024). */
    static long parseBytes(String key, String v) {
        String s = v.trim().toLowerCase();
        long unit = 1;
        char last = s.isEmpty() ? ' ' : s.charAt(s.length() - 1);
        if (last == 'k' || last == 'm' || last == 'g') {
            unit = last == 'k' ? 1L << 10 : last == 'm' ? 1L << 20 : 1L << 30;
            s = s.substring(0, s.length() - 1);
        }
        try {
            long n = Long.parseLong(s);
            if (n < 0 || n > Long.MAX_VALUE / unit) throw new NumberFormatException();
            return n * unit;
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be a byte count such as 512k, 4m or 0, got '" + v + "'");
        }
    }

    /** A duration in {@code us}, {@code ms} (the default unit) or {@code s}. */
    static Duration parseDuration(String key, String v) {
        String s = v.trim().toLowerCase();
        long nanosPer = 1_000_000;
        if (s.endsWith("us")) {
            nanosPer = 1_000;
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("ms")) {
            s = s.substring(0, s.length() - 2);
        } else if (s.endsWith("s")) {
            nanosPer = 1_000_000_000;
            s = s.substring(0, s.length() - 1);
        }
        try {
            long n = Long.parseLong(s);
            if (n < 0 || n > Long.MAX_VALUE / nanosPer) throw new NumberFormatException();
            return Duration.ofNanos(n * nanosPer);
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(key + " must be a duration such as 10ms, 1s or 0, got '" + v + "'");
        }
    }
}
