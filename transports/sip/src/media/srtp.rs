//! SRTP with SDES keys (RFC 3711, RFC 4568) for one call: the `a=crypto` attribute (reading
//! the far end's, writing ours), fresh master keys, and the call's two SRTP contexts — ours
//! protects what we send, the far end's authenticates and decrypts what it sends. The cipher
//! work is webrtc-rs's `webrtc-srtp`; what is here is the key exchange's text and the guard
//! that keeps unauthenticated packets from growing the contexts' per-SSRC tables.
//!
//! Sans-I/O: datagrams in, datagrams out.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Master key plus master salt of the AES-CM-128 suites: 16 + 14 bytes.
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
const MASTER_LEN: usize = KEY_LEN + SALT_LEN;
/// SSRCs a call's far end may send from with the same key (a phone restarting its stream after
/// hold, a PBX switching legs). Beyond this the oldest is forgotten.
const MAX_SOURCES: usize = 8;
/// Distinct unknown SSRCs tried against the probe context before it is rebuilt, so a flood of
/// forged sources costs a bounded table.
const MAX_PROBES: usize = 16;

/// The crypto suites Junction speaks (RFC 4568 §6.2.1, and RFC 4568's _32 variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    pub fn as_str(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn parse(name: &str) -> Option<Suite> {
        [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32].into_iter().find(|s| s.as_str() == name)
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// A master key and salt, as one `inline:` value carries them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey([u8; MASTER_LEN]);

impl MasterKey {
    /// A fresh random key (the OS's generator, through `rand`).
    pub fn random() -> MasterKey {
        MasterKey(rand::random())
    }

    fn key(&self) -> &[u8] {
        self.0.get(..KEY_LEN).unwrap_or_default()
    }

    fn salt(&self) -> &[u8] {
        self.0.get(KEY_LEN..).unwrap_or_default()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// One `a=crypto` line: its tag, suite and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

impl Crypto {
    /// Ours, for an offer or an answer: a fresh key.
    pub fn fresh(tag: u32, suite: Suite) -> Crypto {
        Crypto { tag, suite, key: MasterKey::random() }
    }

    /// Reads the value of an `a=crypto` attribute. `None` for what Junction cannot use: an
    /// unknown suite, a key method other than `inline`, a wrong key length, an MKI (RFC 4568
    /// §6.1: only one key per direction here), or session parameters (UNENCRYPTED_SRTP and
    /// friends weaken the session and are refused, as the RFC lets an answerer do).
    pub fn parse(value: &str) -> Option<Crypto> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields.next()?.parse::<u32>().ok().filter(|t| *t < 1_000_000_000)?;
        let suite = Suite::parse(fields.next()?)?;
        let params = fields.next()?;
        if fields.next().is_some() {
            return None;
        }
        // Several keys may be listed (`;`-separated); Junction takes one key per direction.
        if params.contains(';') {
            return None;
        }
        let inline = params.strip_prefix("inline:")?;
        let mut parts = inline.split('|');
        let encoded = parts.next()?;
        for part in parts {
            // A lifetime (`2^31` or a number) is fine; an MKI (`1:4`) is not supported.
            if part.contains(':') {
                return None;
            }
        }
        let decoded = STANDARD.decode(encoded).ok()?;
        let key: [u8; MASTER_LEN] = decoded.try_into().ok()?;
        Some(Crypto { tag, suite, key: MasterKey(key) })
    }

    /// The attribute's value, as we write it.
    pub fn value(&self) -> String {
        format!("{} {} inline:{}", self.tag, self.suite.as_str(), STANDARD.encode(self.key.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("cannot set up SRTP: {0}")]
    Setup(String),
    #[error("SRTP: {0}")]
    Packet(String),
}

/// A call's SRTP keys: the suite, the far end's key (for what it sends) and ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub remote: MasterKey,
    pub local: MasterKey,
}

/// A call's SRTP state.
pub struct SrtpSession {
    keys: SrtpKeys,
    outbound: Context,
    inbound: Context,
    /// SSRCs that have authenticated with the far end's key, newest last.
    sources: Vec<u32>,
    /// Tries unknown SSRCs, so that forged ones never reach `inbound`'s table.
    probe: Context,
    probed: usize,
}

fn context(key: &MasterKey, suite: Suite) -> Result<Context, SrtpError> {
    Context::new(key.key(), key.salt(), suite.profile(), None, None).map_err(|e| SrtpError::Setup(e.to_string()))
}

impl SrtpSession {
    pub fn new(keys: &SrtpKeys) -> Result<SrtpSession, SrtpError> {
        Ok(SrtpSession {
            outbound: context(&keys.local, keys.suite)?,
            inbound: context(&keys.remote, keys.suite)?,
            probe: context(&keys.remote, keys.suite)?,
            keys: keys.clone(),
            sources: Vec::new(),
            probed: 0,
        })
    }

    /// Whether this session was made from `keys` (a renegotiation that changed them needs a
    /// new one).
    pub fn uses(&self, keys: &SrtpKeys) -> bool {
        self.keys == *keys
    }

    /// Encrypts and authenticates one RTP packet of ours.
    pub fn protect(&mut self, packet: &[u8]) -> Result<Bytes, SrtpError> {
        self.outbound.encrypt_rtp(packet).map_err(|e| SrtpError::Packet(e.to_string()))
    }

    /// Authenticates and decrypts one SRTP packet from the far end; `ssrc` is its header's
    /// (the caller has checked the header with [`super::validate`] first: the parser inside
    /// the SRTP crate is the `rtp` crate's).
    pub fn unprotect(&mut self, ssrc: u32, datagram: &[u8]) -> Result<Bytes, SrtpError> {
        let failed = |e: webrtc_srtp::Error| SrtpError::Packet(e.to_string());
        if self.sources.contains(&ssrc) {
            return self.inbound.decrypt_rtp(datagram).map_err(failed);
        }
        if self.probed >= MAX_PROBES {
            self.probe = context(&self.keys.remote, self.keys.suite)?;
            self.probed = 0;
        }
        self.probed += 1;
        self.probe.decrypt_rtp(datagram).map_err(failed)?;
        // Genuine: the far end's key made it. From now on it goes through `inbound`, which
        // keeps its rollover counter for the life of the call.
        if self.sources.len() >= MAX_SOURCES {
            self.sources.remove(0);
        }
        self.sources.push(ssrc);
        self.inbound.decrypt_rtp(datagram).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::{RtpOut, parse};

    /// RFC 4568 §5.1's example key.
    const RFC_EXAMPLE: &str = "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4";

    #[test]
    fn reads_and_writes_crypto_attributes() {
        assert_eq!(Crypto::parse(RFC_EXAMPLE), None, "an MKI is not supported");
        let plain = Crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
            .expect("a lifetime is fine");
        assert_eq!((plain.tag, plain.suite), (1, Suite::AesCm128HmacSha1_80));
        assert_eq!(Crypto::parse(&plain.value()), Some(plain.clone()), "ours parses back");
        let short = Crypto::parse("2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR").unwrap();
        assert_eq!((short.tag, short.suite), (2, Suite::AesCm128HmacSha1_32));
        for bad in [
            "",
            "1",
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_256_CM_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:not base64!",
            "1 AES_CM_128_HMAC_SHA1_80 PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP",
        ] {
            assert_eq!(Crypto::parse(bad), None, "{bad:?}");
        }
    }

    fn pair(suite: Suite) -> (SrtpSession, SrtpSession) {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        let ours = SrtpSession::new(&SrtpKeys { suite, remote: b.clone(), local: a.clone() }).unwrap();
        let theirs = SrtpSession::new(&SrtpKeys { suite, remote: a, local: b }).unwrap();
        (ours, theirs)
    }

    #[test]
    fn what_one_side_protects_the_other_reads_and_a_forger_cannot() {
        for suite in [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32] {
            let (mut ours, mut theirs) = pair(suite);
            let mut out = RtpOut::new();
            for n in 0..50u8 {
                let plain = out.packet(0, Bytes::from(vec![n; 160]), 160);
                let sealed = ours.protect(&plain).unwrap();
                let tag = if suite == Suite::AesCm128HmacSha1_80 { 10 } else { 4 };
                assert_eq!(sealed.len(), plain.len() + tag);
                assert_ne!(sealed.get(12..172), plain.get(12..172), "the payload is encrypted");
                let opened = theirs.unprotect(out.ssrc(), &sealed).unwrap();
                assert_eq!(parse(&opened).unwrap().payload, parse(&plain).unwrap().payload);
            }
            // A packet with a flipped bit, or sealed with another key, does not authenticate.
            let plain = out.packet(0, Bytes::from_static(&[7; 160]), 160);
            let mut sealed = ours.protect(&plain).unwrap().to_vec();
            sealed[40] ^= 1;
            assert!(theirs.unprotect(out.ssrc(), &sealed).is_err());
            let (mut stranger, _) = pair(suite);
            let forged = stranger.protect(&out.packet(0, Bytes::from_static(&[7; 160]), 160)).unwrap();
            assert!(theirs.unprotect(out.ssrc(), &forged).is_err());
        }
    }

    #[test]
    fn forged_sources_do_not_grow_the_session() {
        let (mut ours, mut theirs) = pair(Suite::AesCm128HmacSha1_80);
        let (mut stranger, _) = pair(Suite::AesCm128HmacSha1_80);
        for _ in 0..1000 {
            let mut forger = RtpOut::new();
            let forged = stranger.protect(&forger.packet(0, Bytes::from_static(&[1; 160]), 160)).unwrap();
            assert!(theirs.unprotect(forger.ssrc(), &forged).is_err());
        }
        assert!(theirs.sources.is_empty() && theirs.probed <= MAX_PROBES);
        let mut out = RtpOut::new();
        let sealed = ours.protect(&out.packet(0, Bytes::from_static(&[2; 160]), 160)).unwrap();
        assert!(theirs.unprotect(out.ssrc(), &sealed).is_ok(), "the genuine source still gets through");
        assert_eq!(theirs.sources, [out.ssrc()]);
    }
}
