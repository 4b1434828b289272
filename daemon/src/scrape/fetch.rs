//! One HTTP GET of a profile: bounded in time, redirects and body size.

use std::time::Duration;

use anyhow::Context;

use super::config::ScrapeConfig;

/// Why a scrape failed, as `/api/targets` shows it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("HTTP status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("response body exceeds {0} bytes (server.max_body_bytes)")]
    TooLarge(u64),
    #[error("{0}")]
    Http(String),
}

/// The HTTP side of a job: its agent (TLS, redirects) and `Authorization` header.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    authorization: Option<String>,
    max_body_bytes: u64,
}

impl Client {
    /// Reads the job's CA, client certificate and secrets; errors name the file.
    pub fn new(
        job: &ScrapeConfig,
        max_redirects: u32,
        max_body_bytes: u64,
    ) -> anyhow::Result<Self> {
        use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};
        let read = |p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))
        };
        let certs = |pem: &[u8]| -> Vec<Certificate<'static>> {
            ureq::tls::parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        };
        let t = &job.tls_config;
        let mut tls = TlsConfig::builder().disable_verification(t.insecure_skip_verify);
        if let Some(path) = &t.ca_file {
            let found = certs(&read(path)?);
            anyhow::ensure!(
                !found.is_empty(),
                "{}: no PEM certificate in the file",
                path.display()
            );
            tls = tls.root_certs(RootCerts::new_with_certs(&found));
        }
        if let (Some(cert), Some(key)) = (&t.cert_file, &t.key_file) {
            let chain = certs(&read(cert)?);
            anyhow::ensure!(
                !chain.is_empty(),
                "{}: no PEM certificate in the file",
                cert.display()
            );
            let key = PrivateKey::from_pem(&read(key)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let secret = |p: &std::path::Path| -> anyhow::Result<String> {
            Ok(String::from_utf8(read(p)?)
                .with_context(|| format!("{}: not UTF-8", p.display()))?
                .trim()
                .to_string())
        };
        let authorization = if let Some(b) = &job.basic_auth {
            use base64::Engine;
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => secret(f)?,
                (None, None) => String::new(),
            };
            let pair = format!("{}:{password}", b.username);
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            ))
        } else if let Some(t) = &job.bearer_token {
            Some(format!("Bearer {t}"))
        } else if let Some(f) = &job.bearer_token_file {
            Some(format!("Bearer {}", secret(f)?))
        } else {
            None
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(max_redirects)
            .user_agent("kiln-scrape")
            // A scrape sends a bare GET and reads a body through the buffer, and a CPU scrape
            // stays open for its profile's seconds: with ureq's 128 KiB buffers each way, 200
            // targets held 51 MB in buffers alone.
            .output_buffer_size(4 << 10)
            .input_buffer_size(16 << 10)
            .max_response_header_size(16 << 10)
            .tls_config(tls.build())
            .build()
            .new_agent();
        Ok(Self {
            agent,
            authorization,
            max_body_bytes,
        })
    }

    /// GETs `url` within `timeout`, reading at most `max_body_bytes`. Blocks: run it off the
    /// async workers.
    pub fn get(&self, url: &str, timeout: Duration) -> Result<Vec<u8>, FetchError> {
        let mut req = self
            .agent
            .get(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        if let Some(a) = &self.authorization {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().map_err(|e| classify(e, timeout))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(self.max_body_bytes);
        if status != 200 {
            // A little of the body says why; more is not read.
            let text = body
                .limit(512)
                .read_to_string()
                .unwrap_or_default()
                .trim()
                .chars()
                .take(200)
                .collect();
            return Err(FetchError::Status { status, body: text });
        }
        body.read_to_vec().map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => FetchError::TooLarge(self.max_body_bytes),
            e => classify(e, timeout),
        })
    }
}

fn classify(e: ureq::Error, timeout: Duration) -> FetchError {
    match e {
        ureq::Error::Timeout(_) => FetchError::Timeout(timeout),
        ureq::Error::TooManyRedirects => FetchError::Http("too many redirects".into()),
        e => FetchError::Http(e.to_string()),
    }
}
