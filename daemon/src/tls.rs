//! HTTPS: the rustls server configuration built from `[tls]`, swapped on reload.
//!
//! Each accepted connection takes the configuration current at that moment, so a reload
//! (SIGHUP, `POST /-/reload`) serves the new certificate to new connections without closing
//! the listener or the connections already open. A certificate that does not load keeps the
//! previous one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why `[tls]` could not be turned into a server configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.{key} {path}: {source}")]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls.{key} {path}: no PEM certificate in the file")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("tls.client_ca_file {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("tls.cert_file {cert} / tls.key_file {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("[tls]: cert_file and key_file are both required")]
    Incomplete,
}

/// The TLS side of a running daemon.
pub struct Tls {
    settings: TlsConfig,
    current: ArcSwap<ServerConfig>,
}

impl Tls {
    /// Loads the certificate, key and client CAs `settings` name.
    pub fn load(settings: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            current: ArcSwap::from_pointee(server_config(settings)?),
            settings: settings.clone(),
        })
    }

    /// Re-reads the files; on error the previous configuration keeps serving.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.settings)?;
        self.current.store(Arc::new(fresh));
        tracing::info!(cert = %self.settings.cert_file.as_deref().unwrap_or(Path::new("")).display(), "TLS certificate reloaded");
        Ok(())
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    pub fn mutual(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        return Err(TlsError::Incomplete);
    };
    let chain = certificates("cert_file", cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Read {
        key: "key_file",
        path: key_file.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("client_ca_file", path)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: cert_file.clone(),
            key: key_file.clone(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
