//! Track descriptions: what a publisher sends (codec, codec parameters, simulcast layers) and how
//! subscribers and clients see it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

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

/// Parameters a receiver needs beyond the codec itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CodecParams {
    /// Timestamp clock of the track's frames, in Hz.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub channels: u8,
    /// SDP fmtp line as negotiated with the publisher (`profile-level-id=...`, `minptime=10;...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmtp: Option<String>,
    /// Out-of-band decoder configuration: AAC AudioSpecificConfig, H.264 avcC when known.
    #[serde(skip)]
    pub config: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl CodecParams {
    /// Defaults for `codec`: its usual clock, stereo Opus, mono G.711, stereo AAC.
    pub fn for_codec(codec: Codec) -> Self {
        let channels = match codec {
            Codec::Opus | Codec::Aac => 2,
            Codec::Pcmu | Codec::Pcma => 1,
            _ => 0,
        };
        Self { clock_rate: codec.default_clock_rate(), channels, ..Self::default() }
    }
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
