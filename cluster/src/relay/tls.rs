//! The relay's TLS: each node makes a self-signed certificate at start-up and publishes its
//! SHA-256 in the registry; a dialing node accepts exactly that certificate from it (pinning
//! instead of a CA, which a cluster on private addresses would not have). The secret-keyed Hello
//! then authenticates the dialer to the origin inside that channel.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::wire::ALPN;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the relay certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("relay TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("relay QUIC configuration: {0}")]
    Quic(String),
}

pub struct Identity {
    pub server: quinn::ServerConfig,
    pub fingerprint: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(Sha256::digest(cert))
}

pub fn identity() -> Result<Identity, TlsError> {
    let generated = rcgen::generate_simple_self_signed(vec!["junction-relay".to_owned()])?;
    let cert = generated.cert.der().clone();
    let fingerprint = fingerprint(&cert);
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).map_err(|e| TlsError::Quic(e.into()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport());
    Ok(Identity { server, fingerprint })
}

/// Keep-alives so a dead peer is noticed within seconds, and room for many track streams.
pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(1)));
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(std::time::Duration::from_secs(5)).ok());
    transport.max_concurrent_uni_streams(4096u32.into());
    transport.max_concurrent_bidi_streams(4u32.into());
    Arc::new(transport)
}

/// A client configuration that accepts only the certificate with this SHA-256.
pub fn client(expected_sha256: &str) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Pinned {
        expected: expected_sha256.to_ascii_lowercase(),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport());
    Ok(client)
}

#[derive(Debug)]
struct Pinned {
    expected: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("relay certificate is not the one the node registered".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("the relay speaks TLS 1.3 only".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
