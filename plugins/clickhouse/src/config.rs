//! `[storage.clickhouse]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the ClickHouse server is and how writes are batched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// The HTTP interface, `http://host:8123` (or `https://…`).
    pub url: String,
    /// Database of Kiln's tables; created if missing.
    pub database: String,
    pub user: String,
    pub password: String,
    /// TLS to the server (the URL must then be `https://`).
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate; the system roots when empty.
    pub ca_file: Option<PathBuf>,
    /// Rows buffered before a write sends them without waiting for the flush. A row here is a
    /// stack's value in a bucket (about 16 B sent, 20–30 B while buffered). Fewer, larger
    /// inserts make fewer parts for ClickHouse to create and merge: 1 M instead of 200 K took
    /// one daemon from ~200 to ~250–320 profiles/s, and 4 M instead of 1 M from ~1,200–1,500
    /// (refusing some) to ~1,700–1,850 (none refused) at 16 connections. A Go CPU push is
    /// ~2,500 rows, so at that rate the daemon's flush, once a second, sends first.
    pub batch_rows: usize,
    /// Longest time a buffered row waits before a write sends it (the daemon's flush sends
    /// every `server.flush_interval` too).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// While ClickHouse cannot be reached, or an insert is still under way, writes keep
    /// buffering up to this many rows (~200 MB at the default), then wait for a send or fail
    /// (the daemon's write-ahead log keeps the pushes and retries them in order). Twice
    /// `batch_rows`, so that a second's rows fit beside an insert in flight.
    pub max_buffered_rows: usize,
    /// Longest a query or insert may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The frames and stacks of a service with no data left (deleted, or past retention) are
    /// deleted by the retention pass once they were inserted at least this long ago. Each
    /// daemon inserts a service's frames and stacks again when its own insert of them is older
    /// than a third of this, so none counts on a row the pass may delete.
    #[serde(with = "humantime_serde")]
    pub dictionary_collect_after: Duration,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            database: "kiln".into(),
            user: "default".into(),
            password: String::new(),
            tls: false,
            ca_file: None,
            batch_rows: 4_000_000,
            flush_interval: Duration::from_secs(1),
            max_buffered_rows: 8_000_000,
            timeout: Duration::from_secs(30),
            dictionary_collect_after: Duration::from_secs(30 * 60),
        }
    }
}

impl ClickHouseConfig {
    /// Checks what can be checked without the server; the error starts with the key and a
    /// backquote (`` url`: … ``), to follow "key `".
    pub fn validate(&self) -> Result<(), String> {
        let https = self.url.starts_with("https://");
        if !https && !self.url.starts_with("http://") {
            return Err(format!(
                "url`: `{}` is not an http:// or https:// URL",
                self.url
            ));
        }
        if self.tls != https {
            return Err(format!(
                "tls`: `tls = {}` but the url is `{}`; use https:// exactly when tls = true",
                self.tls, self.url
            ));
        }
        if self.database.is_empty()
            || !self
                .database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(format!(
                "database`: `{}` must be letters, digits and `_`",
                self.database
            ));
        }
        if self.batch_rows == 0 {
            return Err("batch_rows`: must be at least 1".into());
        }
        if self.max_buffered_rows < self.batch_rows {
            return Err("max_buffered_rows`: must be at least batch_rows".into());
        }
        if self.flush_interval.is_zero() || self.timeout.is_zero() {
            return Err("flush_interval` and `timeout: must be greater than zero".into());
        }
        if self.dictionary_collect_after < Duration::from_secs(3) {
            return Err("dictionary_collect_after`: must be at least 3s".into());
        }
        Ok(())
    }

    /// How long a daemon skips frames and stacks it has inserted: a third of
    /// [`Self::dictionary_collect_after`], which leaves the rest for clocks and delays.
    pub fn known_max_age(&self) -> Duration {
        self.dictionary_collect_after / 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_key() {
        let ok = ClickHouseConfig::default();
        assert!(ok.validate().is_ok());
        let e = ClickHouseConfig {
            tls: true,
            ..ok.clone()
        };
        assert!(e.validate().unwrap_err().starts_with("tls`:"));
        let e = ClickHouseConfig {
            database: "kiln; DROP".into(),
            ..ok.clone()
        };
        assert!(e.validate().unwrap_err().starts_with("database`:"));
        let e = ClickHouseConfig {
            dictionary_collect_after: Duration::from_secs(1),
            ..ok.clone()
        };
        assert!(e
            .validate()
            .unwrap_err()
            .starts_with("dictionary_collect_after`:"));
        assert_eq!(ok.known_max_age(), Duration::from_secs(600));
        let e = ClickHouseConfig {
            url: "127.0.0.1:8123".into(),
            ..ok
        };
        assert!(e.validate().unwrap_err().starts_with("url`:"));
    }
}
