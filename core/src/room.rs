//! Rooms: their options (limits, timeouts, forwarding mode) and how they are described to the
//! REST API and clients.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::RoomId;

/// How media moves between a room's browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// Media goes through Junction (selective forwarding).
    #[default]
    Sfu,
    /// Junction only relays signalling; browsers connect to each other.
    Mesh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoomOptions {
    /// 0 means no limit.
    pub max_peers: u32,
    /// How long a room lives with nobody in it (after creation, or after the last peer left).
    pub empty_timeout: Duration,
    /// The room is closed, and everyone disconnected, this long after it started.
    pub max_duration: Option<Duration>,
    pub metadata: serde_json::Value,
    pub mode: RoomMode,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            max_peers: 0,
            empty_timeout: Duration::from_secs(300),
            max_duration: None,
            metadata: serde_json::Value::Null,
            mode: RoomMode::Sfu,
        }
    }
}

/// A room as the REST API lists it. Also how a room travels to other nodes of a cluster and
/// how the state store keeps an API-created one: the live figures default when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: RoomId,
    pub max_peers: u32,
    pub empty_timeout_s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub mode: RoomMode,
    /// Unix time in milliseconds.
    #[serde(default)]
    pub created_at_ms: u64,
    #[serde(default)]
    pub num_peers: usize,
    #[serde(default)]
    pub num_tracks: usize,
}

impl RoomInfo {
    /// The options the room was opened with: what another node, or a restart, opens it with.
    pub fn options(&self) -> RoomOptions {
        RoomOptions {
            max_peers: self.max_peers,
            empty_timeout: Duration::from_secs(self.empty_timeout_s),
            max_duration: self.max_duration_s.map(Duration::from_secs),
            metadata: self.metadata.clone(),
            mode: self.mode,
        }
    }
}
