//! Counts of input a decoder could not use but skipped instead of refusing the whole body
//! (unknown event types, stacks whose frames are missing, unmappable thread states…).
//!
//! Decoders record here; the daemon exports the counts as
//! `kiln_decode_skipped_total{format,reason}`. The counts are process-wide: a built-in decoder
//! shares them with the daemon; a decoder loaded as a native plugin has its own copy.

use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<(&'static str, &'static str), u64>> = Mutex::new(BTreeMap::new());

/// Adds `n` to the count of `(format, reason)`.
pub fn record(format: &'static str, reason: &'static str, n: u64) {
    if n == 0 {
        return;
    }
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry((format, reason)).or_default() += n;
}

/// Every `(format, reason)` counted so far with its total.
pub fn snapshot() -> Vec<(&'static str, &'static str, u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    counts.iter().map(|(&(f, r), &n)| (f, r, n)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_add_up() {
        super::record("test-format", "why", 2);
        super::record("test-format", "why", 3);
        super::record("test-format", "never", 0);
        let s = super::snapshot();
        assert!(s.contains(&("test-format", "why", 5)));
        assert!(!s.iter().any(|e| e.1 == "never"));
    }
}
