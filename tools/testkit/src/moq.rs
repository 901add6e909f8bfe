//! The TLS side of a Media-over-QUIC client: a rustls client configuration that trusts the given
//! roots (the server's development CA, in tests), speaks TLS 1.3 only, as QUIC requires, and
//! offers one ALPN (`moqt-18` for raw QUIC, `h3` for WebTransport).

use std::sync::Arc;

/// A TLS 1.3 client configuration trusting `roots` and offering `alpn`, on aws-lc-rs.
pub fn client_tls(roots: rustls::RootCertStore, alpn: &[u8]) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("aws-lc-rs speaks TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls
}
