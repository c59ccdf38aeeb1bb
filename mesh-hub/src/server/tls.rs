//! TLS from a certificate chain and a private key in PEM files (rustls with the `ring`
//! provider: nothing to build but Rust and C from crates.io).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::error::HubError;

/// What the hub serves TLS with: made from PEM files by [`TlsConfig::from_pem_files`].
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig")
    }
}

impl TlsConfig {
    /// Reads a certificate chain (the server's certificate first, then its intermediates) and
    /// its private key (PKCS#8, PKCS#1 or SEC1), both PEM. Serves TLS 1.2 and 1.3, HTTP/1.1.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, HubError> {
        let bad = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
            HubError::Tls(format!("{what} {}: {e}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad("certificate", cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("certificate", cert, &e))?;
        if chain.is_empty() {
            return Err(bad("certificate", cert, &"no certificate in the file"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad("key", key, &e))?;
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| HubError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| HubError::Tls(format!("certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}
