//! ClickHouse's HTTP interface: a statement in the body, or an insert whose statement is in the
//! URL and whose rows (RowBinary) are the body. Blocking; callers run it on the blocking pool.

use std::time::Duration;

use base64::Engine;

use crate::config::ClickHouseConfig;
use crate::error::ClickHouseError;

/// Large `IN (…)` lists of series and stack ids are sent literally; the server's default parse
/// limit (256 KiB) is too small for them.
const MAX_QUERY_SIZE: &str = "104857600";

pub struct Client {
    agent: ureq::Agent,
    url: String,
    user: String,
    authorization: String,
}

impl Client {
    pub fn new(config: &ClickHouseConfig) -> Result<Self, String> {
        use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
        let mut tls = TlsConfig::builder();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("ca_file`: reading {}: {e}", path.display()))?;
            let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!(
                    "ca_file`: {} holds no PEM certificate",
                    path.display()
                ));
            }
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout))
            // A server that is down answers nothing: fail fast so queries get a 503 quickly.
            .timeout_connect(Some(Duration::from_secs(2)))
            .tls_config(tls.build())
            .build()
            .new_agent();
        let credentials = format!("{}:{}", config.user, config.password);
        Ok(Self {
            agent,
            url: config.url.trim_end_matches('/').to_string() + "/",
            user: config.user.clone(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        })
    }

    /// Runs a statement that answers nothing (DDL, ALTER).
    pub fn execute(&self, sql: &str) -> Result<(), ClickHouseError> {
        self.post(None, sql.as_bytes()).map(drop)
    }

    /// Runs a `SELECT … FORMAT RowBinary` and returns the rows' bytes.
    pub fn query(&self, sql: &str) -> Result<Vec<u8>, ClickHouseError> {
        self.post(None, sql.as_bytes())
    }

    /// Inserts RowBinary `rows` into `table` (`database.table`, and a column list if the rows
    /// do not give every column).
    pub fn insert(&self, table: &str, rows: &[u8]) -> Result<(), ClickHouseError> {
        let statement = format!("INSERT INTO {table} FORMAT RowBinary");
        self.post(Some(&statement), rows).map(drop)
    }

    fn post(&self, statement: Option<&str>, body: &[u8]) -> Result<Vec<u8>, ClickHouseError> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Authorization", &self.authorization)
            .query("max_query_size", MAX_QUERY_SIZE);
        if let Some(s) = statement {
            req = req.query("query", s);
        }
        let mut resp = req.send(body).map_err(|e| ClickHouseError::Unreachable {
            url: self.url.trim_end_matches('/').to_string(),
            why: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| ClickHouseError::Unreachable {
                url: self.url.trim_end_matches('/').to_string(),
                why: format!("reading the answer: {e}"),
            })?;
        if status == 200 {
            return Ok(bytes);
        }
        let message = String::from_utf8_lossy(&bytes).trim().to_string();
        let code = server_code(&message);
        // 192 unknown user, 193 wrong password, 516 authentication failed (newer servers).
        if status == 401 || status == 403 || matches!(code, Some(192 | 193 | 516)) {
            return Err(ClickHouseError::Credentials {
                user: self.user.clone(),
                message,
            });
        }
        Err(ClickHouseError::Server {
            code: code.unwrap_or(0),
            message: if message.is_empty() {
                format!("HTTP status {status}")
            } else {
                message
            },
        })
    }
}

/// The `Code: N` ClickHouse puts at the start of an error.
fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A string literal: quoted, with `\` and `'` escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `a,b,c` of numbers, for `IN (…)`.
pub fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut out = String::new();
    for (i, x) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&x.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codes_and_quotes_literals() {
        assert_eq!(
            server_code("Code: 193, e.displayText() = DB::Exception: Wrong password"),
            Some(193)
        );
        assert_eq!(server_code("nothing"), None);
        assert_eq!(quote(r"a'b\c"), r"'a\'b\\c'");
        assert_eq!(list([1u64, 2, 3]), "1,2,3");
    }
}
