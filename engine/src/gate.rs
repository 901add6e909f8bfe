//! Admission of network connections before any protocol work: a cap on the connections a
//! transport holds in total and per source address, checked at accept. A [`ConnectionPermit`]
//! is held for as long as the connection lives and gives its place back when dropped, however
//! the connection's task ends.
//!
//! Sources are counted per IPv4 address and per IPv6 /64 (one subscriber line or host gets a
//! whole /64, so counting single IPv6 addresses would cap nothing).
//!
//! ```
//! use junction_engine::gate::{ConnectionGate, GateRefusal};
//! let gate = ConnectionGate::new("rtmp", 100, 2);
//! let ip = "192.0.2.7".parse().unwrap();
//! let first = gate.admit(ip).unwrap();
//! let _second = gate.admit(ip).unwrap();
//! assert_eq!(gate.admit(ip).err(), Some(GateRefusal::PerSource { limit: 2 }));
//! drop(first);
//! assert!(gate.admit(ip).is_ok());
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use parking_lot::Mutex;

/// Why a connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    #[error("the server holds its limit of {limit} connections")]
    Total { limit: usize },
    #[error("this address holds its limit of {limit} connections")]
    PerSource { limit: usize },
}

impl GateRefusal {
    /// `total` or `per_source`, for metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            GateRefusal::Total { .. } => "total",
            GateRefusal::PerSource { .. } => "per_source",
        }
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

struct Inner {
    transport: &'static str,
    max_total: usize,
    max_per_source: usize,
    held: Mutex<Held>,
}

/// Caps the connections of one transport. Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct ConnectionGate {
    inner: Arc<Inner>,
}

impl ConnectionGate {
    /// A gate for `transport` (a metrics label) admitting at most `max_total` connections, and
    /// `max_per_source` from one source. A limit of 0 means no limit.
    pub fn new(transport: &'static str, max_total: usize, max_per_source: usize) -> Self {
        metrics::describe_counter!(
            "junction_connections_refused_total",
            "Connections refused at accept because a connection limit was reached, by transport and limit"
        );
        let inner = Inner { transport, max_total, max_per_source, held: Mutex::new(Held::default()) };
        Self { inner: Arc::new(inner) }
    }

    /// Admits a connection from `ip`, or says which limit it would cross (and counts the
    /// refusal in `junction_connections_refused_total{transport, limit}`).
    pub fn admit(&self, ip: IpAddr) -> Result<ConnectionPermit, GateRefusal> {
        let source = source_of(ip);
        let inner = &self.inner;
        let mut held = inner.held.lock();
        let from_source = held.by_source.get(&source).copied().unwrap_or(0);
        let refusal = if inner.max_total > 0 && held.total >= inner.max_total {
            Some(GateRefusal::Total { limit: inner.max_total })
        } else if inner.max_per_source > 0 && from_source >= inner.max_per_source {
            Some(GateRefusal::PerSource { limit: inner.max_per_source })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(held);
            metrics::counter!("junction_connections_refused_total", "transport" => inner.transport, "limit" => refusal.as_str())
                .increment(1);
            return Err(refusal);
        }
        held.total += 1;
        held.by_source.insert(source, from_source + 1);
        Ok(ConnectionPermit { inner: self.inner.clone(), source })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.inner.held.lock().total
    }
}

/// One admitted connection's place; dropping it frees the place.
pub struct ConnectionPermit {
    inner: Arc<Inner>,
    source: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut held = self.inner.held.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.by_source.remove(&self.source);
            }
        }
    }
}

/// The address connections are counted under: the IPv4 address, or the IPv6 /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_and_per_source_limits_hold_and_free_on_drop() {
        let gate = ConnectionGate::new("test", 3, 2);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let c: IpAddr = "198.51.100.3".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(GateRefusal::PerSource { limit: 2 }));
        let _b1 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(c).err(), Some(GateRefusal::Total { limit: 3 }));
        assert_eq!(gate.held(), 3);
        drop(a1);
        assert_eq!(gate.held(), 2);
        let _c1 = gate.admit(c).unwrap();
        let unlimited = ConnectionGate::new("test", 0, 0);
        let permits: Vec<_> = (0..100).map(|_| unlimited.admit(a).unwrap()).collect();
        assert_eq!(unlimited.held(), permits.len());
    }

    #[test]
    fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
        let gate = ConnectionGate::new("test", 0, 1);
        let _one = gate.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(gate.admit("2001:db8:1:2:ffff::9".parse().unwrap()).is_err(), "same /64");
        assert!(gate.admit("2001:db8:1:3::1".parse().unwrap()).is_ok(), "another /64");
        let _v4 = gate.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert!(gate.admit("::ffff:192.0.2.1".parse().unwrap()).is_err());
    }
}
