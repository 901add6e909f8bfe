//! Demultiplexing one UDP socket between many WebRTC sessions — the routing table alone, with
//! no I/O, so it can be tested datagram by datagram.
//!
//! A datagram belongs to a session when it is a STUN message whose USERNAME starts with that
//! session's local ICE ufrag (`<our ufrag>:<their ufrag>`, RFC 8445 §7.2.2) and whose
//! MESSAGE-INTEGRITY verifies with that session's ICE password, or when it comes from a remote
//! address that such a message came from before. ICE always starts with STUN, so a session
//! learns its peer's address(es) before DTLS, SRTP or SRTCP arrive from them.
//!
//! Only an authenticated check binds an address: a forged one (a guessed ufrag, a wrong or
//! missing integrity) is dropped before any session sees it and can neither create an entry nor
//! move one from its session. The table is bounded: each session keeps its most recently
//! verified addresses (older ones are forgotten first) and its two newest ufrags (an ICE restart
//! adds one), and the whole table has a cap past which new addresses are refused.

use std::collections::HashMap;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Identifies one session inside the mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// How big the table may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemuxLimits {
    /// Remote addresses one session keeps (its peer's candidates that passed a check).
    pub addresses_per_session: usize,
    /// Remote addresses all sessions together keep.
    pub max_addresses: usize,
}

/// ICE ufrags one session keeps: the current one and the one before an ICE restart.
const UFRAGS_PER_SESSION: usize = 2;

/// Where datagrams go: ICE ufrag -> session, remote address -> session.
#[derive(Debug)]
pub struct Demux {
    limits: DemuxLimits,
    by_ufrag: HashMap<String, Credential>,
    by_addr: HashMap<SocketAddr, SessionKey>,
    sessions: HashMap<SessionKey, Routes>,
    /// Counts bindings, so a session's least recently verified address is known.
    clock: u64,
}

#[derive(Debug)]
struct Credential {
    key: SessionKey,
    pwd: String,
}

/// What one session owns in the table, to forget it all at once.
#[derive(Debug, Default)]
struct Routes {
    /// Oldest first.
    ufrags: Vec<String>,
    /// With the tick of their last verified check.
    addrs: Vec<(SocketAddr, u64)>,
}

/// What the mux decided about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    To(SessionKey),
    /// A STUN message naming a ufrag no session has.
    UnknownUfrag,
    /// A STUN message for a session's ufrag whose integrity does not verify with its password.
    BadIntegrity,
    /// Not a STUN check, from an address no session has verified.
    UnknownAddress,
    /// A verified check from a new address, but the table holds `max_addresses` already.
    TableFull,
}

impl Route {
    /// A short name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Route::To(_) => "routed",
            Route::UnknownUfrag => "unknown_ufrag",
            Route::BadIntegrity => "bad_integrity",
            Route::UnknownAddress => "unknown_address",
            Route::TableFull => "table_full",
        }
    }
}

impl Demux {
    pub fn new(limits: DemuxLimits) -> Self {
        Self { limits, by_ufrag: HashMap::new(), by_addr: HashMap::new(), sessions: HashMap::new(), clock: 0 }
    }

    /// Routes STUN checks for `ufrag` that verify with `pwd` to `key` (a new session, or an
    /// ICE restart of one); a session keeps its two newest ufrags.
    pub fn add_ufrag(&mut self, ufrag: &str, pwd: &str, key: SessionKey) {
        if self.by_ufrag.get(ufrag).is_some_and(|c| c.key != key) {
            // ufrags are random; a collision must not hand one session's checks to another.
            return;
        }
        self.by_ufrag.insert(ufrag.to_owned(), Credential { key, pwd: pwd.to_owned() });
        let routes = self.sessions.entry(key).or_default();
        routes.ufrags.retain(|u| u != ufrag);
        routes.ufrags.push(ufrag.to_owned());
        while routes.ufrags.len() > UFRAGS_PER_SESSION {
            let old = routes.ufrags.remove(0);
            self.by_ufrag.remove(&old);
        }
    }

    /// Forgets everything about `key`.
    pub fn remove(&mut self, key: SessionKey) {
        let Some(routes) = self.sessions.remove(&key) else { return };
        for ufrag in routes.ufrags {
            self.by_ufrag.remove(&ufrag);
        }
        for (addr, _) in routes.addrs {
            self.by_addr.remove(&addr);
        }
    }

    /// Decides which session `datagram` (already checked by [`crate::validate`]) belongs to.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8], is_stun: bool) -> Route {
        if is_stun && stun_local_ufrag(datagram).is_some() {
            return match self.authenticate(datagram) {
                Route::To(key) => self.bind(source, key),
                refused => refused,
            };
        }
        match self.by_addr.get(&source) {
            Some(key) => Route::To(*key),
            None => Route::UnknownAddress,
        }
    }

    /// The session a STUN check (already checked by [`crate::validate`]) is for, when its
    /// USERNAME names a session's ufrag and its MESSAGE-INTEGRITY verifies with that session's
    /// password. Binds no address: an ICE-TCP connection is bound by being the connection.
    pub fn authenticate(&self, datagram: &[u8]) -> Route {
        let Some(ufrag) = stun_local_ufrag(datagram) else { return Route::UnknownUfrag };
        let Some(credential) = self.by_ufrag.get(ufrag) else { return Route::UnknownUfrag };
        if !stun_integrity_verifies(datagram, credential.pwd.as_bytes()) {
            return Route::BadIntegrity;
        }
        Route::To(credential.key)
    }

    pub fn limits(&self) -> DemuxLimits {
        self.limits
    }

    /// Remote addresses bound, all sessions together.
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }

    /// Binds `source` to `key` after a verified check (or refreshes the binding).
    fn bind(&mut self, source: SocketAddr, key: SessionKey) -> Route {
        self.clock += 1;
        let now = self.clock;
        if let Some(previous) = self.by_addr.get(&source).copied()
            && previous != key
        {
            // The address now authenticates for another session (a reused port): it moves.
            if let Some(routes) = self.sessions.get_mut(&previous) {
                routes.addrs.retain(|(addr, _)| *addr != source);
            }
            self.by_addr.remove(&source);
        }
        let Some(routes) = self.sessions.get_mut(&key) else { return Route::UnknownUfrag };
        if let Some(entry) = routes.addrs.iter_mut().find(|(addr, _)| *addr == source) {
            entry.1 = now;
            return Route::To(key);
        }
        if routes.addrs.len() >= self.limits.addresses_per_session.max(1) {
            let oldest = (0..routes.addrs.len()).min_by_key(|&i| routes.addrs[i].1).unwrap_or(0);
            let (forgotten, _) = routes.addrs.swap_remove(oldest);
            self.by_addr.remove(&forgotten);
        } else if self.by_addr.len() >= self.limits.max_addresses {
            return Route::TableFull;
        }
        routes.addrs.push((source, now));
        self.by_addr.insert(source, key);
        Route::To(key)
    }

    #[cfg(test)]
    fn addresses_of(&self, key: SessionKey) -> usize {
        self.sessions.get(&key).map_or(0, |r| r.addrs.len())
    }
}

const ATTR_USERNAME: u16 = 0x0006;
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;
const STUN_HEADER: usize = 20;

/// The STUN attributes of a message: (type, offset of the attribute in the message, value).
fn stun_attributes(datagram: &[u8]) -> impl Iterator<Item = (u16, usize, &[u8])> {
    let body_len = match (datagram.get(2), datagram.get(3)) {
        (Some(&a), Some(&b)) => u16::from_be_bytes([a, b]) as usize,
        _ => 0,
    };
    let end = (STUN_HEADER + body_len).min(datagram.len());
    let mut pos = STUN_HEADER;
    std::iter::from_fn(move || {
        if pos + 4 > end {
            return None;
        }
        let kind = u16::from_be_bytes([datagram[pos], datagram[pos + 1]]);
        let len = u16::from_be_bytes([datagram[pos + 2], datagram[pos + 3]]) as usize;
        let value = datagram.get(pos + 4..pos + 4 + len)?;
        let at = pos;
        // Attributes are padded to 4 bytes.
        pos += 4 + len.div_ceil(4) * 4;
        Some((kind, at, value))
    })
}

/// The part of a STUN message's USERNAME before the colon: the recipient's ICE ufrag.
///
/// Written by hand (a dozen lines of TLV walking) rather than through str0m's hidden ICE module,
/// so that the mux does not depend on an unstable API; str0m still does the full validation.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let (_, _, value) = stun_attributes(datagram).find(|(kind, _, _)| *kind == ATTR_USERNAME)?;
    let username = std::str::from_utf8(value).ok()?;
    username.split(':').next().filter(|u| !u.is_empty())
}

/// Whether the message's MESSAGE-INTEGRITY is the HMAC-SHA1 of the message up to it, keyed with
/// `pwd` (RFC 8489 §14.5, short-term credentials: ICE passwords need no SASLprep). The length in
/// the header is taken as ending with the attribute, as the sender computed it.
pub fn stun_integrity_verifies(datagram: &[u8], pwd: &[u8]) -> bool {
    let Some((_, at, value)) = stun_attributes(datagram).find(|(kind, _, _)| *kind == ATTR_MESSAGE_INTEGRITY) else {
        return false;
    };
    if value.len() != 20 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(pwd) else { return false };
    let length = ((at + 4 + 20 - STUN_HEADER) as u16).to_be_bytes();
    mac.update(&datagram[..2]);
    mac.update(&length);
    mac.update(&datagram[4..at]);
    // Constant-time comparison.
    mac.verify_slice(value).is_ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use str0m::ice::{StunMessage, TransId};

    /// A binding request from `username`, with MESSAGE-INTEGRITY keyed by `pwd` and a
    /// FINGERPRINT, serialised by str0m's own STUN code (an implementation independent of ours).
    pub(crate) fn binding_request(username: &str, pwd: &str) -> Vec<u8> {
        let message = StunMessage::binding_request(username, TransId::new(), false, 7, 1_000, false);
        let mut buf = vec![0u8; 512];
        let hmac = |key: &[u8], parts: &[&[u8]]| {
            let mut mac = Hmac::<Sha1>::new_from_slice(key).unwrap();
            for part in parts {
                mac.update(part);
            }
            let mut out = [0u8; 20];
            out.copy_from_slice(&mac.finalize().into_bytes());
            out
        };
        let len = message.to_bytes(Some(pwd.as_bytes()), &mut buf, hmac).unwrap();
        buf.truncate(len);
        buf
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn demux() -> Demux {
        Demux::new(DemuxLimits { addresses_per_session: 4, max_addresses: 100 })
    }

    const RTP: [u8; 12] = [0x80u8, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

    #[test]
    fn integrity_agrees_with_str0m_and_needs_the_password() {
        let request = binding_request("srvA:cli", "password-of-a-0123456789");
        assert_eq!(stun_local_ufrag(&request), Some("srvA"));
        assert!(stun_integrity_verifies(&request, b"password-of-a-0123456789"));
        assert!(!stun_integrity_verifies(&request, b"password-of-b-0123456789"));
        let mut tampered = request.clone();
        tampered[25] ^= 1; // inside USERNAME
        assert!(!stun_integrity_verifies(&tampered, b"password-of-a-0123456789"));
    }

    #[test]
    fn verified_stun_binds_the_address_then_media_follows() {
        let mut demux = demux();
        demux.add_ufrag("srvA", "pwdA-0123456789012345", SessionKey(1));
        demux.add_ufrag("srvB", "pwdB-0123456789012345", SessionKey(2));

        assert_eq!(demux.route(addr(5000), &RTP, false), Route::UnknownAddress, "media before ICE goes nowhere");
        let check_b = binding_request("srvB:cli1", "pwdB-0123456789012345");
        assert_eq!(demux.route(addr(5000), &check_b, true), Route::To(SessionKey(2)));
        assert_eq!(demux.route(addr(5000), &RTP, false), Route::To(SessionKey(2)));
        let check_a = binding_request("srvA:cli2", "pwdA-0123456789012345");
        assert_eq!(demux.route(addr(6000), &check_a, true), Route::To(SessionKey(1)));
        assert_eq!(demux.route(addr(6000), &RTP, false), Route::To(SessionKey(1)));
        assert_eq!(demux.route(addr(7000), &binding_request("nobody:x", "whatever"), true), Route::UnknownUfrag);

        demux.remove(SessionKey(2));
        assert_eq!(demux.route(addr(5000), &RTP, false), Route::UnknownAddress);
        assert_eq!(demux.route(addr(5000), &check_b, true), Route::UnknownUfrag);
        assert_eq!(demux.addresses(), 1);
    }

    #[test]
    fn forged_checks_neither_create_nor_move_entries() {
        let mut demux = demux();
        demux.add_ufrag("srvA", "pwdA-0123456789012345", SessionKey(1));
        demux.add_ufrag("srvB", "pwdB-0123456789012345", SessionKey(2));
        let genuine = binding_request("srvA:cli", "pwdA-0123456789012345");
        assert_eq!(demux.route(addr(5000), &genuine, true), Route::To(SessionKey(1)));

        // A guessed ufrag with the wrong password, from a new address and from the bound one.
        let forged = binding_request("srvB:evil", "guessed-password-000000");
        assert_eq!(demux.route(addr(6666), &forged, true), Route::BadIntegrity);
        assert_eq!(demux.route(addr(5000), &forged, true), Route::BadIntegrity);
        // A check without MESSAGE-INTEGRITY at all.
        let mut bare = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        bare.extend_from_slice(&[9; 12]);
        bare.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]);
        bare.extend_from_slice(b"srvB:cli");
        assert_eq!(demux.route(addr(6666), &bare, true), Route::BadIntegrity);

        assert_eq!(demux.route(addr(6666), &RTP, false), Route::UnknownAddress, "no entry was created");
        assert_eq!(demux.route(addr(5000), &RTP, false), Route::To(SessionKey(1)), "no entry was moved");
        assert_eq!(demux.addresses(), 1);
    }

    #[test]
    fn a_verified_check_for_another_session_moves_the_address() {
        let mut demux = demux();
        demux.add_ufrag("srvA", "pwdA-0123456789012345", SessionKey(1));
        demux.add_ufrag("srvB", "pwdB-0123456789012345", SessionKey(2));
        demux.route(addr(5000), &binding_request("srvA:c", "pwdA-0123456789012345"), true);
        demux.route(addr(5000), &binding_request("srvB:c", "pwdB-0123456789012345"), true);
        assert_eq!(demux.route(addr(5000), &RTP, false), Route::To(SessionKey(2)));
        assert_eq!((demux.addresses_of(SessionKey(1)), demux.addresses_of(SessionKey(2))), (0, 1));
        demux.remove(SessionKey(1));
        assert_eq!(demux.route(addr(5000), &RTP, false), Route::To(SessionKey(2)), "removing A keeps B's entry");
    }

    #[test]
    fn the_table_is_bounded_per_session_and_in_total() {
        let mut demux = Demux::new(DemuxLimits { addresses_per_session: 3, max_addresses: 4 });
        demux.add_ufrag("srvA", "pwdA-0123456789012345", SessionKey(1));
        demux.add_ufrag("srvB", "pwdB-0123456789012345", SessionKey(2));
        let check_a = binding_request("srvA:c", "pwdA-0123456789012345");
        for port in 1..=3 {
            assert_eq!(demux.route(addr(port), &check_a, true), Route::To(SessionKey(1)));
        }
        // Port 1 checks again (it is the nominated pair, say); port 4 then evicts port 2.
        demux.route(addr(1), &check_a, true);
        assert_eq!(demux.route(addr(4), &check_a, true), Route::To(SessionKey(1)));
        assert_eq!(demux.addresses_of(SessionKey(1)), 3);
        assert_eq!(demux.route(addr(2), &RTP, false), Route::UnknownAddress, "the least recently verified went");
        assert_eq!(demux.route(addr(1), &RTP, false), Route::To(SessionKey(1)));

        let check_b = binding_request("srvB:c", "pwdB-0123456789012345");
        assert_eq!(demux.route(addr(100), &check_b, true), Route::To(SessionKey(2)));
        assert_eq!(demux.route(addr(101), &check_b, true), Route::TableFull);
        assert_eq!(demux.addresses(), 4);
        assert_eq!(demux.route(addr(101), &RTP, false), Route::UnknownAddress);
    }

    #[test]
    fn an_ice_restart_adds_a_ufrag_and_a_third_retires_the_first() {
        let mut demux = demux();
        demux.add_ufrag("u1", "p1-01234567890123456789", SessionKey(1));
        demux.add_ufrag("u2", "p2-01234567890123456789", SessionKey(1));
        assert_eq!(
            demux.route(addr(1), &binding_request("u2:c", "p2-01234567890123456789"), true),
            Route::To(SessionKey(1))
        );
        assert_eq!(
            demux.route(addr(2), &binding_request("u1:c", "p1-01234567890123456789"), true),
            Route::To(SessionKey(1))
        );
        demux.add_ufrag("u3", "p3-01234567890123456789", SessionKey(1));
        assert_eq!(
            demux.route(addr(2), &binding_request("u1:c", "p1-01234567890123456789"), true),
            Route::UnknownUfrag
        );
        // Another session cannot take a ufrag over.
        demux.add_ufrag("u3", "stolen-0123456789012345", SessionKey(2));
        assert_eq!(
            demux.route(addr(3), &binding_request("u3:c", "p3-01234567890123456789"), true),
            Route::To(SessionKey(1))
        );
        demux.remove(SessionKey(1));
        assert!(demux.by_ufrag.is_empty() && demux.by_addr.is_empty());
    }

    #[test]
    fn malformed_stun_never_panics() {
        let good = binding_request("abc:def", "pwd-0123456789012345678");
        assert_eq!(stun_local_ufrag(&good), Some("abc"));
        for cut in 0..good.len() {
            let _ = stun_local_ufrag(&good[..cut]);
            let _ = stun_integrity_verifies(&good[..cut], b"pwd");
        }
        let mut lying = good.clone();
        lying[22] = 0xff; // the first attribute's length far past the end
        assert_eq!(stun_local_ufrag(&lying), None);
        let mut demux = demux();
        assert_eq!(demux.route(addr(1), &[], false), Route::UnknownAddress);
        assert_eq!(demux.route(addr(1), &good[..20], true), Route::UnknownAddress);
    }
}
