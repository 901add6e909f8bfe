//! The RTP port range: each call takes an even port for RTP and the next one for RTCP
//! (RFC 3550 §11), and gives both back when its sockets are dropped.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("every RTP port between {min} and {max} is in use")]
    Exhausted { min: u16, max: u16 },
}

struct State {
    used: BTreeSet<u16>,
    /// Where the next search starts, so a port just freed is not reused at once.
    cursor: u16,
}

/// A range of UDP ports on one address. Cheap to clone.
#[derive(Clone)]
pub struct PortRange {
    ip: IpAddr,
    /// The address written in SDP (differs from `ip` when binding a wildcard address).
    advertised: IpAddr,
    min: u16,
    max: u16,
    state: Arc<Mutex<State>>,
}

/// A call's RTP and RTCP sockets; the ports return to the range when this is dropped.
pub struct RtpSockets {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    port: u16,
    range: PortRange,
}

impl RtpSockets {
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.range.advertised, self.port)
    }
}

impl Drop for RtpSockets {
    fn drop(&mut self) {
        self.range.state.lock().used.remove(&self.port);
    }
}

impl PortRange {
    /// Ports `min..=max` on `ip` (`min` rounded up to even), announced as `advertised`.
    pub fn new(ip: IpAddr, advertised: IpAddr, min: u16, max: u16) -> Self {
        let min = min.saturating_add(min % 2);
        Self { ip, advertised, min, max, state: Arc::new(Mutex::new(State { used: BTreeSet::new(), cursor: min })) }
    }

    pub fn in_use(&self) -> usize {
        self.state.lock().used.len()
    }

    /// Binds the next free pair (non-blocking sockets, ready for tokio).
    pub fn allocate(&self) -> Result<RtpSockets, PortError> {
        let mut state = self.state.lock();
        let pairs = (u32::from(self.max.saturating_sub(self.min)) / 2 + 1) as usize;
        let mut port = state.cursor;
        for _ in 0..pairs {
            if port < self.min || port.checked_add(1).is_none_or(|p| p > self.max) {
                port = self.min;
            }
            let next = port.wrapping_add(2);
            if !state.used.contains(&port)
                && let (Ok(rtp), Ok(rtcp)) =
                    (UdpSocket::bind((self.ip, port)), UdpSocket::bind((self.ip, port.wrapping_add(1))))
                && rtp.set_nonblocking(true).is_ok()
                && rtcp.set_nonblocking(true).is_ok()
            {
                state.used.insert(port);
                state.cursor = next;
                return Ok(RtpSockets { rtp, rtcp, port, range: self.clone() });
            }
            port = next;
        }
        Err(PortError::Exhausted { min: self.min, max: self.max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_even_distinct_and_returned() {
        let ip = "127.0.0.1".parse().unwrap();
        let range = PortRange::new(ip, ip, 41001, 41007);
        let a = range.allocate().unwrap();
        let b = range.allocate().unwrap();
        assert_eq!(a.local_addr().port() % 2, 0);
        assert_ne!(a.local_addr(), b.local_addr());
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.local_addr().port() + 1);
        let c = range.allocate().unwrap();
        assert!(matches!(range.allocate(), Err(PortError::Exhausted { .. })), "41002, 41004, 41006 taken");
        drop(b);
        assert_eq!(range.in_use(), 2);
        let again = range.allocate().unwrap();
        assert!(again.local_addr().port() >= 41002);
        drop((a, c, again));
        assert_eq!(range.in_use(), 0);
    }
}
