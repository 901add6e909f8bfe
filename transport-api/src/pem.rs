//! Reading a listener's TLS identity from PEM files (a certificate chain, leaf first, and its
//! private key), for the transports that take one (MoQ, SIP over TLS). rustls' own PEM reader
//! does the parsing; this adds the errors that name the file.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {message}")]
    NoKey { path: PathBuf, message: String },
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read { path: path.into(), source })
}

/// The certificates in a PEM file, in order; at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read(path)?).filter_map(Result::ok).collect();
    if chain.is_empty() {
        return Err(PemError::NoCertificate { path: path.into() });
    }
    Ok(chain)
}

/// The (first) private key in a PEM file: PKCS#8, PKCS#1 or SEC1.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(&read(path)?)
        .map_err(|err| PemError::NoKey { path: path.into(), message: err.to_string() })
}
