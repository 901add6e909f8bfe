//! An OpenSSL DTLS 1.2 backend for the load tool's str0m peers, with an RSA certificate
//! (`--dtls-cert rsa`): for servers whose DTLS only signs with RSA (atm0s-media-server's str0m 0.6
//! on OpenSSL makes a 2048-bit RSA certificate), which str0m's default DTLS (dimpl) neither
//! offers suites for nor accepts client certificates of.
//!
//! Written here, on the `openssl` crate, because the maintained adapter (`str0m-openssl` 0.7, for
//! str0m 0.25) is not on the registry this workspace builds from (it has 0.6, for str0m 0.24's
//! traits). It is a sans-I/O `DtlsInstance`: datagrams in and out of an in-memory transport, the
//! handshake driven from `handle_packet` and `handle_timeout` (OpenSSL's own retransmission timer
//! fires when the handshake is driven after it expired), and once connected it hands str0m the
//! peer's certificate and the DTLS-SRTP keying material. SRTP, SHA and STUN stay on str0m's
//! aws-lc-rs provider; only the DTLS handshake changes.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslStream, SslVerifyMode};
use openssl::x509::{X509, X509NameBuilder};
use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial, ProtocolVersion, SrtpProfile,
};

/// ECDHE with AES-GCM, RSA or ECDSA signed (OpenSSL cipher-string syntax).
const CIPHERS: &str = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:\
                       ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384";
/// The SRTP protection profiles offered, preferred first (RFC 7714 GCM, then RFC 5764's).
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";
/// DTLS records stay under a path MTU that any UDP path carries.
const MTU: u32 = 1150;
/// How often a handshake in progress is driven, so OpenSSL can retransmit a lost flight.
const HANDSHAKE_TICK: Duration = Duration::from_millis(200);
/// Datagrams held for the handshake at most (a peer that floods us loses the excess, as UDP would).
const MAX_QUEUED: usize = 64;

/// str0m's crypto provider with the DTLS handshake on OpenSSL, and a fresh RSA certificate.
pub fn rsa_provider() -> anyhow::Result<(CryptoProvider, DtlsCert)> {
    let mut provider = str0m::crypto::from_feature_flags();
    provider.dtls_provider = &OpensslDtls;
    let cert = rsa_certificate()?;
    Ok((provider, cert))
}

/// A self-signed 2048-bit RSA certificate, SHA-256 signed, as DER certificate and key.
fn rsa_certificate() -> anyhow::Result<DtlsCert> {
    let key = PKey::from_rsa(Rsa::generate(2048)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", "junction-bench")?;
    let name = name.build();
    let mut serial = BigNum::new()?;
    serial.rand(64, MsbOption::MAYBE_ZERO, false)?;
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    builder.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
    builder.set_not_after(Asn1Time::days_from_now(30)?.as_ref())?;
    builder.set_pubkey(&key)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok(DtlsCert { certificate: builder.build().to_der()?, private_key: key.private_key_to_der()? })
}

#[derive(Debug)]
struct OpensslDtls;

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        rsa_certificate().ok()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        _mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if matches!(dtls_version, DtlsVersion::Dtls13) {
            return Err(CryptoError::Other("the OpenSSL backend speaks DTLS 1.2 only".to_owned()));
        }
        let ssl = session(cert).map_err(|e| CryptoError::Other(format!("OpenSSL DTLS: {e}")))?;
        Ok(Box::new(OpensslInstance { ssl: Some(ssl), now: Some(now), ..OpensslInstance::default() }))
    }
}

/// One DTLS session presenting `cert`, its role not yet chosen.
fn session(cert: &DtlsCert) -> Result<Ssl, openssl::error::ErrorStack> {
    let context = context(cert)?;
    let mut ssl = Ssl::new(&context)?;
    ssl.set_mtu(MTU)?;
    Ok(ssl)
}

fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::dtls())?;
    builder.set_cipher_list(CIPHERS)?;
    builder.set_tlsext_use_srtp(SRTP_PROFILES)?;
    // Both ends present a certificate; str0m checks the peer's against the SDP fingerprint.
    builder.set_verify_callback(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT, |_, _| true);
    builder.set_certificate(X509::from_der(&cert.certificate)?.as_ref())?;
    builder.set_private_key(PKey::private_key_from_der(&cert.private_key)?.as_ref())?;
    builder.set_options(SslOptions::NO_DTLSV1 | SslOptions::NO_QUERY_MTU | SslOptions::SINGLE_ECDH_USE);
    Ok(builder.build())
}

/// What the handshake produced, handed to str0m one `poll_output` at a time.
enum Event {
    PeerCert(Vec<u8>),
    Keying(KeyingMaterial, SrtpProfile),
    Connected,
    Data(Vec<u8>),
    CloseNotify,
}

/// The in-memory datagram transport OpenSSL reads and writes.
#[derive(Debug, Default)]
struct Wire {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else { return Err(io::ErrorKind::WouldBlock.into()) };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct OpensslInstance {
    /// The session until `set_active` says which side it is.
    ssl: Option<Ssl>,
    stream: Option<SslStream<Wire>>,
    connected: bool,
    failed: bool,
    closing: bool,
    events: VecDeque<Event>,
    now: Option<Instant>,
}

impl std::fmt::Debug for OpensslInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpensslInstance")
            .field("active", &self.is_active())
            .field("connected", &self.connected)
            .finish()
    }
}

impl OpensslInstance {
    /// Runs the handshake as far as the datagrams so far allow; on completion queues the peer's
    /// certificate, the SRTP keys and `Connected`.
    fn drive_handshake(&mut self) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        if self.connected || self.failed {
            return Ok(());
        }
        match stream.do_handshake() {
            Ok(()) => {}
            Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => return Ok(()),
            Err(e) => {
                self.failed = true;
                eprintln!("bench: the OpenSSL DTLS handshake failed: {e}");
                return Err(DtlsImplError::ConnectionClosed);
            }
        }
        let ssl = stream.ssl();
        let certificate = ssl.peer_certificate().and_then(|c| c.to_der().ok());
        let (profile, length) = match ssl.selected_srtp_profile().map(|p| p.id()) {
            Some(SrtpProfileId::SRTP_AEAD_AES_128_GCM) => (SrtpProfile::AEAD_AES_128_GCM, 2 * (16 + 12)),
            Some(SrtpProfileId::SRTP_AES128_CM_SHA1_80) => (SrtpProfile::AES128_CM_SHA1_80, 2 * (16 + 14)),
            _ => {
                self.failed = true;
                eprintln!("bench: the OpenSSL DTLS handshake agreed on no SRTP profile we offered");
                return Err(DtlsImplError::ConnectionClosed);
            }
        };
        let mut keys = vec![0; length];
        let exported = ssl.export_keying_material(&mut keys, "EXTRACTOR-dtls_srtp", None);
        let (Some(certificate), Ok(())) = (certificate, exported) else {
            self.failed = true;
            eprintln!("bench: the OpenSSL DTLS handshake left no peer certificate or keys");
            return Err(DtlsImplError::ConnectionClosed);
        };
        self.connected = true;
        self.events.push_back(Event::PeerCert(certificate));
        self.events.push_back(Event::Keying(KeyingMaterial::new(&keys), profile));
        self.events.push_back(Event::Connected);
        self.read_application_data();
        Ok(())
    }

    /// Decrypts whatever application data the datagrams so far carry.
    fn read_application_data(&mut self) {
        let Some(stream) = self.stream.as_mut() else { return };
        let mut buf = vec![0; 2048];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(n) => self.events.push_back(Event::Data(buf[..n].to_vec())),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    self.events.push_back(Event::CloseNotify);
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

impl DtlsInstance for OpensslInstance {
    fn set_active(&mut self, active: bool) {
        let Some(mut ssl) = self.ssl.take() else { return };
        if active {
            ssl.set_connect_state();
        } else {
            ssl.set_accept_state();
        }
        match SslStream::new(ssl, Wire::default()) {
            Ok(stream) => self.stream = Some(stream),
            Err(e) => {
                self.failed = true;
                eprintln!("bench: cannot start an OpenSSL DTLS session: {e}");
            }
        }
        // The client speaks first: str0m starts it with an empty packet (`handle_packet`).
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else { return Ok(()) };
        let wire = stream.get_mut();
        // str0m hands an empty packet to start the client's handshake: to OpenSSL, a read of
        // nothing is the end of the stream, so it only drives the handshake.
        if !packet.is_empty() && wire.incoming.len() < MAX_QUEUED {
            wire.incoming.push_back(packet.to_vec());
        }
        if self.connected {
            self.read_application_data();
            Ok(())
        } else {
            self.drive_handshake()
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let now = self.now.unwrap_or_else(Instant::now);
        if let Some(stream) = self.stream.as_mut()
            && let Some(datagram) = stream.get_mut().outgoing.pop_front()
        {
            if datagram.len() > buf.len() {
                let needed = datagram.len();
                stream.get_mut().outgoing.push_front(datagram);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            return DtlsOutput::Packet(&buf[..datagram.len()]);
        }
        let copy = |buf: &'a mut [u8], bytes: &[u8]| {
            let n = bytes.len().min(buf.len());
            buf[..n].copy_from_slice(&bytes[..n]);
            &buf[..n]
        };
        match self.events.pop_front() {
            Some(Event::PeerCert(der)) => DtlsOutput::PeerCert(copy(buf, &der)),
            Some(Event::Keying(keys, profile)) => DtlsOutput::KeyingMaterial(keys, profile),
            Some(Event::Connected) => DtlsOutput::Connected,
            Some(Event::Data(data)) => DtlsOutput::ApplicationData(copy(buf, &data)),
            Some(Event::CloseNotify) => DtlsOutput::CloseNotify,
            None if self.stream.is_some() && !self.connected && !self.failed => {
                DtlsOutput::Timeout(now + HANDSHAKE_TICK)
            }
            None => DtlsOutput::Timeout(now + Duration::from_secs(3600)),
        }
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.now = Some(now);
        // Drives the handshake: the client's first flight, and OpenSSL's retransmission of a flight
        // whose timer (1 s, doubling) ran out.
        self.drive_handshake()
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        match self.stream.as_mut() {
            Some(stream) if self.connected => Ok(stream.ssl_write(data).map_or(0, |n| n)),
            _ => Ok(0),
        }
    }

    fn is_active(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| !s.ssl().is_server())
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.connected.then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.closing && self.stream.as_ref().is_some_and(|s| !s.get_ref().outgoing.is_empty())
    }

    fn is_closed(&self) -> bool {
        self.closing && !self.is_closing()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.closing = true;
        if let Some(stream) = self.stream.as_mut() {
            // close_notify goes out with the next poll; a peer that never answers is not waited for.
            let _ = stream.shutdown();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one end polled during a handshake.
    #[derive(Default)]
    struct Seen {
        connected: bool,
        peer_certificate: Vec<u8>,
        keys: Option<Vec<u8>>,
        failed: bool,
    }

    /// Shuttles datagrams between two instances (the client first) every `tick` for `ticks`
    /// rounds, or until both are connected or one fails.
    fn shuttle(ends: &mut [Box<dyn DtlsInstance>; 2], tick: Duration, ticks: u32) -> [Seen; 2] {
        let mut seen: [Seen; 2] = Default::default();
        let mut now = Instant::now();
        let mut buf = vec![0; 2048];
        for _ in 0..ticks {
            now += tick;
            for from in 0..2 {
                let to = 1 - from;
                if ends[from].handle_timeout(now).is_err() {
                    seen[from].failed = true;
                }
                loop {
                    match ends[from].poll_output(&mut buf) {
                        DtlsOutput::Packet(p) => {
                            let p = p.to_vec();
                            if ends[to].handle_packet(&p).is_err() {
                                seen[to].failed = true;
                            }
                        }
                        DtlsOutput::Connected => seen[from].connected = true,
                        DtlsOutput::PeerCert(der) => seen[from].peer_certificate = der.to_vec(),
                        DtlsOutput::KeyingMaterial(keys, _) => seen[from].keys = Some(keys.to_vec()),
                        DtlsOutput::Timeout(_) => break,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            if seen.iter().all(|s| s.connected) || seen.iter().any(|s| s.failed) {
                break;
            }
        }
        seen
    }

    fn instance(provider: &CryptoProvider, cert: &DtlsCert, active: bool) -> Box<dyn DtlsInstance> {
        let mut dtls = provider.dtls_provider.new_dtls(cert, Instant::now(), DtlsVersion::Dtls12, None).unwrap();
        dtls.set_active(active);
        dtls
    }

    #[test]
    fn two_openssl_peers_with_rsa_certificates_agree_on_srtp_keys() {
        let (provider, client_cert) = rsa_provider().expect("a provider");
        let server_cert = provider.dtls_provider.generate_certificate().expect("a certificate");
        let mut ends = [instance(&provider, &client_cert, true), instance(&provider, &server_cert, false)];
        let [client, server] = shuttle(&mut ends, Duration::from_millis(10), 50);
        assert!(client.connected && server.connected, "both ends connect");
        // Each end sees the other's certificate (str0m checks it against the SDP fingerprint).
        assert_eq!(client.peer_certificate, server_cert.certificate);
        assert_eq!(server.peer_certificate, client_cert.certificate);
        let keys = client.keys.expect("client keys");
        assert_eq!(keys.len(), 56, "AEAD_AES_128_GCM: two 16-byte keys and two 12-byte salts");
        assert_eq!(Some(keys), server.keys, "both ends export the same keying material");
        assert_eq!(ends[0].protocol_version(), Some(ProtocolVersion::DTLS1_2));
        assert!(ends[0].is_active() && !ends[1].is_active());
    }

    #[test]
    fn str0ms_default_dtls_cannot_connect_to_an_rsa_server() {
        // Why this backend exists: dimpl, str0m's default, offers ECDSA suites only, so an
        // RSA-signing server (this backend, or atm0s's OpenSSL) finds no suite in common.
        let (openssl, rsa_cert) = rsa_provider().expect("a provider");
        let dimpl = str0m::crypto::from_feature_flags();
        let ecdsa_cert = dimpl.dtls_provider.generate_certificate().expect("a dimpl certificate");
        let mut ends = [instance(&dimpl, &ecdsa_cert, true), instance(&openssl, &rsa_cert, false)];
        let [client, server] = shuttle(&mut ends, Duration::from_millis(300), 20);
        assert!(!client.connected && !server.connected, "no suite in common: no connection");
        assert!(server.failed, "the RSA server refuses the ECDSA-only hello");
    }
}
