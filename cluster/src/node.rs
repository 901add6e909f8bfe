//! A node's identity and the record it keeps in the registry: where it answers HTTP, where its
//! relay listens (with the certificate others pin), its load.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest `node_id` accepted (it is part of Redis keys and log lines).
pub const MAX_NODE_ID_LEN: usize = 64;

/// A node's id: from `cluster.node_id`, else derived from the host name and the public URL, so
/// a restarted node comes back under the same id.
pub fn node_id(configured: Option<&str>, public_url: &str) -> Result<String, String> {
    if let Some(id) = configured {
        let valid = !id.is_empty()
            && id.len() <= MAX_NODE_ID_LEN
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        return if valid {
            Ok(id.to_owned())
        } else {
            Err(format!("cluster.node_id {id:?}: 1-{MAX_NODE_ID_LEN} characters of A-Z a-z 0-9 - _ ."))
        };
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    Ok(derived_id(host.trim(), public_url))
}

fn derived_id(host: &str, public_url: &str) -> String {
    let digest = Sha256::digest(format!("{host}|{public_url}"));
    format!("node-{}", &hex::encode(digest)[..12])
}

/// What a node publishes about itself at each heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Its `http.public_url`: clients and other nodes reach its HTTP there.
    pub url: String,
    /// Its relay's UDP address.
    pub relay: String,
    /// SHA-256 of its relay certificate: the only certificate other nodes accept from it.
    pub relay_cert_sha256: String,
    pub started_at_ms: u64,
    /// Shutting down: takes no new peers.
    pub draining: bool,
    pub load: NodeLoad,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Process CPU over the last heartbeat, in cores (1.0 = one core busy).
    pub cpu: f64,
    /// Clients connected to this node.
    pub peers: u64,
    /// Tracks published on this node.
    pub tracks: u64,
    /// Media sent to subscribers, bits/s (payload, before packetising).
    pub egress_bps: u64,
    /// Whether it is over its `max_peers`.
    pub full: bool,
}

impl NodeLoad {
    /// One number to compare nodes by: peers, weighted up by CPU.
    pub fn score(&self) -> f64 {
        self.peers as f64 + self.cpu * 100.0
    }
}

/// Turns cumulative counters into rates between heartbeats.
pub(crate) struct LoadMeter {
    last: Option<(Instant, f64, u64)>,
}

impl LoadMeter {
    pub fn new() -> Self {
        Self { last: None }
    }

    /// `cpu_seconds` and `bytes_forwarded` are totals since start; returns (cores, bits/s).
    pub fn sample(&mut self, now: Instant, cpu_seconds: f64, bytes_forwarded: u64) -> (f64, u64) {
        let rates = match self.last {
            Some((at, cpu, bytes)) => {
                let dt = now.saturating_duration_since(at).as_secs_f64().max(1e-3);
                (((cpu_seconds - cpu) / dt).max(0.0), (bytes_forwarded.saturating_sub(bytes) as f64 * 8.0 / dt) as u64)
            }
            None => (0.0, 0),
        };
        self.last = Some((now, cpu_seconds, bytes_forwarded));
        rates
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn derived_ids_are_stable_and_differ_per_url() {
        let a = derived_id("host", "http://127.0.0.1:7880");
        assert_eq!(a, derived_id("host", "http://127.0.0.1:7880"));
        assert_ne!(a, derived_id("host", "http://127.0.0.1:7881"));
        assert!(a.starts_with("node-") && a.len() == 17);
    }

    #[test]
    fn configured_ids_are_checked() {
        assert_eq!(node_id(Some("edge-1"), "x").unwrap(), "edge-1");
        assert!(node_id(Some("a b"), "x").is_err());
        assert!(node_id(Some(""), "x").is_err());
        assert!(node_id(Some(&"a".repeat(65)), "x").is_err());
    }

    #[test]
    fn load_rates_between_samples() {
        let mut meter = LoadMeter::new();
        let t0 = Instant::now();
        assert_eq!(meter.sample(t0, 10.0, 1000), (0.0, 0));
        let (cpu, bps) = meter.sample(t0 + Duration::from_secs(2), 11.0, 3000);
        assert!((cpu - 0.5).abs() < 1e-9);
        assert_eq!(bps, 8000);
    }
}
