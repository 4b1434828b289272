//! TLS settings of pushes: a private CA and a client certificate, read from PEM files.

use std::path::{Path, PathBuf};

use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig};

use crate::Error;

/// The PEM files an agent was given; all optional.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    /// ureq's TLS settings for these files; `None` (ureq's defaults, the system's or bundled
    /// roots) when none is set. A file that does not read or holds no usable PEM is an error.
    pub fn load(&self) -> Result<Option<TlsConfig>, Error> {
        if self.ca_file.is_none() && self.client_cert.is_none() {
            return Ok(None);
        }
        let mut tls = TlsConfig::builder();
        if let Some(path) = &self.ca_file {
            let certs = certificates(path)?;
            tls = tls.root_certs(RootCerts::new_with_certs(&certs));
        }
        if let Some((cert_path, key_path)) = &self.client_cert {
            let certs = certificates(cert_path)?;
            let key = PrivateKey::from_pem(&read(key_path)?).map_err(|e| {
                Error::Config(format!("{}: no PEM private key: {e}", key_path.display()))
            })?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&certs, key)));
        }
        Ok(Some(tls.build()))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Every certificate of a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>, Error> {
    let pem = read(path)?;
    let mut certs = Vec::new();
    for item in parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(Error::Config(format!("{}: {e}", path.display()))),
        }
    }
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{}: no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_keeps_the_defaults() {
        assert!(TlsFiles::default().load().unwrap().is_none());
    }

    #[test]
    fn unreadable_or_empty_files_are_configuration_errors() {
        let missing = TlsFiles {
            ca_file: Some("/nonexistent/ca.pem".into()),
            client_cert: None,
        };
        assert!(
            matches!(missing.load(), Err(Error::Config(m)) if m.contains("/nonexistent/ca.pem"))
        );
        let dir = std::env::temp_dir().join(format!("kiln-sdk-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        let empty = TlsFiles {
            ca_file: Some(not_pem),
            client_cert: None,
        };
        assert!(matches!(empty.load(), Err(Error::Config(m)) if m.contains("no PEM certificate")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
