//! The listener's TLS identity: a certificate chain and key loaded from PEM files, or, in
//! development, a freshly generated CA plus a leaf it signs. The leaf is an end entity
//! (CA:FALSE) — MoQ clients verifying against the CA refuse a self-signed certificate used as its
//! own end entity (`CaUsedAsEndEntity`) — and is valid for under two weeks with an ECDSA P-256
//! key, which is what browsers require of certificates pinned through WebTransport's
//! `serverCertificateHashes`.

use std::path::Path;
use std::sync::Arc;

use junction_transport_api::pem::{self, PemError};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// ALPN identifiers the listener offers: WebTransport over HTTP/3, then raw QUIC MoQT draft-18.
pub fn alpn_protocols() -> Vec<Vec<u8>> {
    let mut alpns = vec![moq_transport::session::transport::quinn::ALPN.as_bytes().to_vec()];
    alpns.extend(moq_transport::setup::SUPPORTED_ALPNS.iter().map(|alpn| alpn.as_bytes().to_vec()));
    alpns
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("the generated key does not load: {0}")]
    GeneratedKey(String),
    #[error("cannot generate the development certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A server certificate ready for the QUIC listener.
pub struct ServerIdentity {
    pub config: rustls::ServerConfig,
    /// SHA-256 of the leaf certificate (DER), lower-case hex: WebTransport's
    /// `serverCertificateHashes` value.
    pub fingerprint: String,
    /// The generated CA certificate (PEM), in development mode.
    pub dev_ca_pem: Option<String>,
}

impl ServerIdentity {
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
        let (chain, key) = (pem::certificates(cert)?, pem::private_key(key)?);
        let fingerprint = fingerprint(&chain[0]);
        Ok(ServerIdentity { config: server_config(chain, key)?, fingerprint, dev_ca_pem: None })
    }

    /// A CA and a leaf for `hosts` (DNS names or IP addresses), valid from an hour ago for 13
    /// days.
    pub fn generate(hosts: &[String]) -> Result<ServerIdentity, TlsError> {
        let generated = generate_chain(hosts)?;
        let fingerprint = fingerprint(&generated.chain[0]);
        Ok(ServerIdentity {
            config: server_config(generated.chain, generated.key)?,
            fingerprint,
            dev_ca_pem: Some(generated.ca_pem),
        })
    }
}

struct GeneratedChain {
    /// Leaf first, then the CA.
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca_pem: String,
}

fn generate_chain(hosts: &[String]) -> Result<GeneratedChain, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let not_before = now - time::Duration::hours(1);
    let not_after = now + time::Duration::days(13);

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "Junction development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(hosts.to_vec())?;
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.distinguished_name.push(DnType::CommonName, "Junction MoQ (development)");
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    let key = PrivateKeyDer::try_from(leaf_key.serialize_der())
        .map_err(|message| TlsError::GeneratedKey(message.to_owned()))?;
    Ok(GeneratedChain { chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()], key, ca_pem: ca_cert.pem() })
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn_protocols();
    config.max_early_data_size = 0;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{ServerName, UnixTime};

    #[test]
    fn generated_leaf_is_an_end_entity_signed_by_the_ca() {
        let generated = generate_chain(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let ca = CertificateDer::from_pem_slice(generated.ca_pem.as_bytes()).unwrap();
        assert_eq!(ca, generated.chain[1]);

        // A client trusting only the CA accepts the leaf for both names; webpki refuses a CA
        // certificate presented as the end entity, so this also proves the leaf is CA:FALSE.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        for name in ["localhost", "127.0.0.1"] {
            let name = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&generated.chain[0], &[], &name, &[], UnixTime::now()).unwrap();
        }
        let as_leaf =
            verifier.verify_server_cert(&ca, &[], &ServerName::try_from("localhost").unwrap(), &[], UnixTime::now());
        assert!(as_leaf.is_err(), "the CA must not verify as a server certificate");

        let identity = ServerIdentity::generate(&["localhost".into()]).unwrap();
        assert_eq!(identity.fingerprint.len(), 64);
        assert_eq!(identity.config.alpn_protocols, vec![b"h3".to_vec(), b"moqt-18".to_vec()]);
    }
}
