//! A token bucket of bytes: `rate` per second, holding at most `burst`.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: u64, now: Instant) -> Self {
        Self {
            tokens: burst as f64,
            last: now,
        }
    }

    /// Takes `bytes`, or says how long until it could. A request larger than the whole burst
    /// is let through when the bucket is full and leaves it in debt, so a body bigger than
    /// the burst is slowed down, never refused for ever.
    pub fn take(
        &mut self,
        bytes: u64,
        rate: u64,
        burst: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(burst as f64);
        let needed = bytes.min(burst) as f64;
        if self.tokens >= needed {
            self.tokens -= bytes as f64;
            return Ok(());
        }
        let missing = needed - self.tokens;
        Err(Duration::from_secs_f64(missing / rate.max(1) as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(600, 100, 1000, t0).is_ok());
        let wait = b.take(600, 100, 1000, t0).unwrap_err();
        assert_eq!(wait.as_secs(), 2);
        assert!(b.take(600, 100, 1000, t0 + Duration::from_secs(2)).is_ok());
        // Idle for long: never more than the burst.
        let later = t0 + Duration::from_secs(3600);
        assert!(b.take(1000, 100, 1000, later).is_ok());
        assert!(b.take(1, 100, 1000, later).is_err());
    }

    #[test]
    fn a_body_larger_than_the_burst_passes_a_full_bucket_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(5000, 1000, 1000, t0).is_ok());
        let wait = b.take(10, 1000, 1000, t0).unwrap_err();
        assert!(wait >= Duration::from_secs(4), "{wait:?}");
    }
}
