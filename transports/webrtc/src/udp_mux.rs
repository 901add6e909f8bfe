//! Demultiplexing one UDP socket between many WebRTC sessions — the routing table alone, with
//! no I/O, so it can be tested datagram by datagram.
//!
//! A datagram belongs to a session when it is a STUN message whose USERNAME starts with that
//! session's local ICE ufrag (`<our ufrag>:<their ufrag>`, RFC 8445 §7.2.2), or when it comes from
//! a remote address that such a STUN message came from before. ICE always starts with STUN, so a
//! session learns its peer's address(es) before DTLS, SRTP or SRTCP arrive from them.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Identifies one session inside the mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey(pub u64);

/// Where datagrams go: ICE ufrag -> session, remote address -> session.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, SessionKey>,
    by_addr: HashMap<SocketAddr, SessionKey>,
}

/// What the mux decided about one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    To(SessionKey),
    /// A STUN message naming a ufrag no session has.
    UnknownUfrag,
    /// Not STUN, from an address no session has seen.
    UnknownAddress,
}

impl Demux {
    /// Routes STUN messages whose USERNAME starts with `ufrag` to `key`.
    pub fn add_ufrag(&mut self, ufrag: &str, key: SessionKey) {
        self.by_ufrag.insert(ufrag.to_owned(), key);
    }

    /// Forgets everything about `key`.
    pub fn remove(&mut self, key: SessionKey) {
        self.by_ufrag.retain(|_, k| *k != key);
        self.by_addr.retain(|_, k| *k != key);
    }

    /// Decides which session `datagram`, received from `source`, belongs to.
    pub fn route(&mut self, source: SocketAddr, datagram: &[u8]) -> Route {
        if is_stun(datagram)
            && let Some(ufrag) = stun_local_ufrag(datagram)
        {
            let Some(key) = self.by_ufrag.get(ufrag).copied() else {
                return Route::UnknownUfrag;
            };
            // The session verifies the message integrity; a forged check can at worst make the
            // forger's own address route to a session that will drop its packets.
            self.by_addr.insert(source, key);
            return Route::To(key);
        }
        match self.by_addr.get(&source) {
            Some(key) => Route::To(*key),
            None => Route::UnknownAddress,
        }
    }

    #[cfg(test)]
    fn session_count(&self) -> usize {
        let mut keys: Vec<SessionKey> = self.by_ufrag.values().copied().collect();
        keys.sort();
        keys.dedup();
        keys.len()
    }
}

/// RFC 7983: the first byte of STUN is 0..=3 (and STUN has its magic cookie at bytes 4..8).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 4 && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

const ATTR_USERNAME: u16 = 0x0006;

/// The part of a STUN message's USERNAME before the colon: the recipient's ICE ufrag.
///
/// Written by hand (a dozen lines of TLV walking) rather than through str0m's hidden ICE module,
/// so that the mux does not depend on an unstable API; str0m still does the full validation.
pub fn stun_local_ufrag(datagram: &[u8]) -> Option<&str> {
    let body_len = u16::from_be_bytes([*datagram.get(2)?, *datagram.get(3)?]) as usize;
    let end = (20 + body_len).min(datagram.len());
    let mut pos = 20;
    while pos + 4 <= end {
        let kind = u16::from_be_bytes([datagram[pos], datagram[pos + 1]]);
        let len = u16::from_be_bytes([datagram[pos + 2], datagram[pos + 3]]) as usize;
        let value = datagram.get(pos + 4..pos + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to 4 bytes.
        pos += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request with the given USERNAME and one padding attribute before it.
    fn binding_request(username: &str) -> Vec<u8> {
        let mut attrs = Vec::new();
        // PRIORITY first, as browsers send it, so the walk has to skip an attribute.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attrs);
        msg
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn stun_is_routed_by_ufrag_then_the_address_follows() {
        let mut demux = Demux::default();
        demux.add_ufrag("srvA", SessionKey(1));
        demux.add_ufrag("srvB", SessionKey(2));
        let rtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];

        assert_eq!(demux.route(addr(5000), &rtp), Route::UnknownAddress, "media before ICE goes nowhere");
        assert_eq!(demux.route(addr(5000), &binding_request("srvB:cli1")), Route::To(SessionKey(2)));
        assert_eq!(demux.route(addr(5000), &rtp), Route::To(SessionKey(2)));
        assert_eq!(demux.route(addr(6000), &binding_request("srvA:cli2")), Route::To(SessionKey(1)));
        assert_eq!(demux.route(addr(6000), &rtp), Route::To(SessionKey(1)));
        assert_eq!(demux.route(addr(7000), &binding_request("nobody:x")), Route::UnknownUfrag);
        assert_eq!(demux.session_count(), 2);

        demux.remove(SessionKey(2));
        assert_eq!(demux.route(addr(5000), &rtp), Route::UnknownAddress);
        assert_eq!(demux.route(addr(5000), &binding_request("srvB:cli1")), Route::UnknownUfrag);
        assert_eq!(demux.session_count(), 1);
    }

    #[test]
    fn an_ice_restart_adds_a_ufrag_for_the_same_session() {
        let mut demux = Demux::default();
        demux.add_ufrag("old", SessionKey(1));
        demux.add_ufrag("new", SessionKey(1));
        assert_eq!(demux.route(addr(1), &binding_request("new:c")), Route::To(SessionKey(1)));
        assert_eq!(demux.route(addr(2), &binding_request("old:c")), Route::To(SessionKey(1)));
    }

    #[test]
    fn malformed_stun_never_panics() {
        let good = binding_request("abc:def");
        assert_eq!(stun_local_ufrag(&good), Some("abc"));
        for cut in 0..good.len() {
            let _ = stun_local_ufrag(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[30] = 0xff; // USERNAME length far past the end
        assert_eq!(stun_local_ufrag(&lying), None);
        let mut demux = Demux::default();
        assert_eq!(demux.route(addr(1), &[]), Route::UnknownAddress);
        assert_eq!(demux.route(addr(1), &good[..20]), Route::UnknownAddress);
        assert!(!is_stun(&[0x16, 0xfe, 0xfd])); // a DTLS record
    }
}
