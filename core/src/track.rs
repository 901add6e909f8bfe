//! Track descriptions: what a publisher sends (codec, codec parameters, simulcast layers) and how
//! subscribers and clients see it.

use serde::{Deserialize, Serialize};

pub use crate::codec::CodecParams;
use crate::codec::{Codec, MediaKind};
use crate::ids::{PeerId, TrackId};

/// What a track carries, as the publisher labelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
    #[default]
    Unknown,
}

/// One simulcast layer of a video track; a track's layers are ordered lowest first and a
/// frame's `layer` is an index into them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// The RTP stream id the publisher used (`q`/`h`/`f`, `0`/`1`/`2`, ...).
    pub rid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Expected bitrate in bits/s, used to fit layers to a subscriber's bandwidth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u64>,
}

/// A published track as everyone else sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub id: TrackId,
    /// The publishing peer's identity.
    pub peer: PeerId,
    /// The publisher's own label for the track ("camera", "mic", an SDP mid, ...).
    pub name: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub codec: Codec,
    pub params: CodecParams,
    /// Simulcast layers, lowest first; empty when the track has a single layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInfo>,
    pub muted: bool,
}

impl TrackInfo {
    pub fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }
}
