//! SIP over TLS (RFC 3261 §26.2, RFC 5630): the listener's certificate and key from PEM files,
//! and the client side for calls placed over TLS — the system's roots plus `sip.tls_ca`,
//! verifying the far end's name (or address). The handshakes are tokio-rustls'; connections
//! then carry SIP exactly as TCP ones do (see [`super::tcp`]).

use std::path::Path;
use std::sync::Arc;

use junction_transport_api::pem::{self, PemError};
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The listener's side: `cert` (the chain, leaf first) and `key`, PEM.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let (chain, key) = (pem::certificates(cert)?, pem::private_key(key)?);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The client side: the system's trusted roots (those that load) and the PEM certificates in
/// `extra_ca`.
pub(crate) fn connector(extra_ca: Option<&Path>) -> Result<TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        roots.add_parsable_certificates(pem::certificates(path)?);
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
