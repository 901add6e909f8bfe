//! Rooms: their options (limits, timeouts, forwarding mode, the video codec asked of publishers)
//! and how they are described to the REST API and clients.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
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

/// Which video codec a room asks its WebRTC publishers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodecChoice {
    /// H.264 while the room has a viewer that needs it (an RTMP player, a MoQ session asking
    /// for H.264); otherwise the publisher's own preference.
    #[default]
    Auto,
    H264,
    Vp8,
    Vp9,
    Av1,
}

impl VideoCodecChoice {
    /// The codec asked for whatever the room holds, if one is set.
    pub fn fixed(self) -> Option<Codec> {
        match self {
            VideoCodecChoice::Auto => None,
            VideoCodecChoice::H264 => Some(Codec::H264),
            VideoCodecChoice::Vp8 => Some(Codec::Vp8),
            VideoCodecChoice::Vp9 => Some(Codec::Vp9),
            VideoCodecChoice::Av1 => Some(Codec::Av1),
        }
    }
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
    pub video_codec: VideoCodecChoice,
}

impl Default for RoomOptions {
    fn default() -> Self {
        Self {
            max_peers: 0,
            empty_timeout: Duration::from_secs(300),
            max_duration: None,
            metadata: serde_json::Value::Null,
            mode: RoomMode::Sfu,
            video_codec: VideoCodecChoice::Auto,
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
    #[serde(default)]
    pub video_codec: VideoCodecChoice,
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
            video_codec: self.video_codec,
        }
    }
}
