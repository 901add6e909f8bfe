//! `[cluster]`: how a node finds the others (Redis), names itself, and listens for their media.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://host:port/db` of the Redis the nodes share; unset: a single node, no cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// This node's id; unset: derived from the host name and `http.public_url`, so it is the
    /// same after a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// UDP address of the node-to-node media relay (QUIC).
    pub relay_listen: SocketAddr,
    /// The relay address other nodes dial; unset: the address `relay_listen` bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_public: Option<SocketAddr>,
    /// The secret nodes prove to each other on relay links; unset: the API key (`api_key`),
    /// which then must be the same on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How often a node refreshes its registry entry and load, in milliseconds.
    pub heartbeat_ms: u64,
    /// How long a node's entry outlives its last heartbeat: a node silent this long is dead,
    /// and the others publish its peers' departures.
    pub node_ttl_ms: u64,
    /// Relay links (other nodes connected to this one) at once.
    pub max_relay_links: usize,
    /// Tracks one relay link may pull at once.
    pub max_relayed_tracks: usize,
    /// Peers (clients of this node) past which the node counts as full: WHIP/WHEP offers get
    /// 307 to a less loaded node and new tokens point elsewhere. 0: no limit.
    pub max_peers: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            node_id: None,
            relay_listen: ([127, 0, 0, 1], 7890).into(),
            relay_public: None,
            secret: None,
            heartbeat_ms: 1000,
            node_ttl_ms: 5000,
            max_relay_links: 64,
            max_relayed_tracks: 1024,
            max_peers: 0,
        }
    }
}
