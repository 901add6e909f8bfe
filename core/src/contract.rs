//! The transport contract: the vocabulary a transport speaks with the engine for each peer.
//!
//! A transport asks the engine for an endpoint bound to (room, identity). The endpoint has two
//! halves (the handle types live in `junction-endpoint`):
//! - the **RPC half** takes requests — publish ([`PublishRequest`]), subscribe
//!   ([`SubscribeOptions`]), mute, layer preference ([`LayerPreference`]), data and signalling
//!   messages, leave — and yields [`EndpointEvent`]s: what happens in the room, and why the
//!   session ended ([`CloseReason`]);
//! - the **media half** takes frames for the peer's published tracks and yields [`MediaOut`]:
//!   frames of its subscriptions, and feedback (keyframe requests, bitrate hints) for its
//!   publications. A subscriber asks for keyframes and reports its bandwidth the same way.
//!
//! Frames of a new subscription may arrive before its [`EndpointEvent::Subscribed`]: a transport
//! that is not ready for them (an SDP renegotiation in flight) drops them and asks for a keyframe
//! once it is.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::frame::MediaFrame;
use crate::ids::{PeerId, SessionId, TrackId};
use crate::peer::PeerInfo;
use crate::track::{CodecParams, LayerInfo, TrackInfo, TrackSource};

/// What an encoder's media turns into at an ingest (RTMP, SRT): a track to publish — or to
/// publish again, replacing the previous track of its kind, when the encoder changed its
/// configuration — or a frame for the track of its kind.
#[derive(Debug, Clone)]
pub enum IngestEvent {
    Track(PublishRequest),
    Frame(crate::MediaFrame),
}

/// A track a peer wants to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// The publisher's label, unique among its own tracks ("camera", "mic", an SDP mid).
    pub name: String,
    pub codec: Codec,
    pub source: TrackSource,
    pub params: CodecParams,
    /// Simulcast layers, lowest first; empty for a single layer.
    pub layers: Vec<LayerInfo>,
    pub muted: bool,
}

impl PublishRequest {
    pub fn new(name: impl Into<String>, codec: Codec) -> Self {
        Self {
            name: name.into(),
            codec,
            source: TrackSource::Unknown,
            params: CodecParams::for_codec(codec),
            layers: Vec::new(),
            muted: false,
        }
    }

    pub fn with_source(mut self, source: TrackSource) -> Self {
        self.source = source;
        self
    }

    pub fn with_params(mut self, params: CodecParams) -> Self {
        self.params = params;
        self
    }

    pub fn with_layers(mut self, layers: Vec<LayerInfo>) -> Self {
        self.layers = layers;
        self
    }
}

/// Which simulcast layer a subscriber wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPreference {
    /// The best layer being sent.
    #[default]
    Highest,
    /// At most this layer index; a lower one while this one is not being sent.
    AtMost(u8),
}

impl LayerPreference {
    pub fn cap(self) -> u8 {
        match self {
            LayerPreference::Highest => u8::MAX,
            LayerPreference::AtMost(layer) => layer,
        }
    }
}

/// How a peer wants to receive a track.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Codecs the subscriber can receive; empty means any. When the track's codec is not among
    /// them the engine attaches the subscriber to a shared transcoded variant, if one exists.
    pub codecs: Vec<Codec>,
    pub layer: LayerPreference,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CloseReason {
    /// The peer left on its own.
    Left,
    /// An admin removed the peer.
    Kicked,
    /// A newer session with the same identity joined the room.
    Replaced,
    /// The room was deleted through the API.
    RoomDeleted,
    /// The room reached its maximum duration.
    RoomExpired,
    /// The server is shutting down.
    ServerShutdown,
    /// The transport lost the peer (ICE timeout, socket closed, RTP timeout, stalled publisher).
    TransportTimeout,
    /// The peer fell too far behind reading its events.
    Overloaded,
    /// The token (or other credential) the session was opened with expired.
    CredentialExpired,
    /// The transport closed the session because of an error.
    Error { message: String },
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::Left => "left",
            CloseReason::Kicked => "kicked",
            CloseReason::Replaced => "replaced",
            CloseReason::RoomDeleted => "room_deleted",
            CloseReason::RoomExpired => "room_expired",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::TransportTimeout => "transport_timeout",
            CloseReason::Overloaded => "overloaded",
            CloseReason::CredentialExpired => "credential_expired",
            CloseReason::Error { .. } => "error",
        }
    }
}

/// A data message between peers (chat, app data). `to` empty means everyone else in the room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataMessage {
    pub from: PeerId,
    pub to: Vec<PeerId>,
    pub topic: Option<String>,
    pub payload: Bytes,
    /// Whether the sender asked for reliable, ordered delivery.
    pub reliable: bool,
}

/// What the RPC half tells a transport about its peer's room.
#[derive(Debug, Clone)]
pub enum EndpointEvent {
    PeerJoined(PeerInfo),
    PeerLeft {
        peer: PeerId,
        session: SessionId,
        reason: CloseReason,
    },
    PeerUpdated(PeerInfo),
    TrackPublished(TrackInfo),
    TrackUnpublished {
        track: TrackId,
        peer: PeerId,
    },
    TrackMuted {
        track: TrackId,
        muted: bool,
    },
    /// This peer now receives `track`; frames will arrive as `codec` (which differs from the
    /// track's own codec when the engine transcodes for this subscriber).
    Subscribed {
        track: TrackInfo,
        codec: Codec,
        params: CodecParams,
    },
    /// This peer no longer receives `track` (it unsubscribed, or the track went away).
    Unsubscribed {
        track: TrackId,
    },
    /// An automatic subscription could not be made (no codec path, no grant).
    SubscriptionFailed {
        track: TrackId,
        reason: String,
    },
    Data(DataMessage),
    /// Signalling relayed from another session (mesh mode, direct calls).
    Signal {
        from: PeerId,
        from_session: SessionId,
        payload: serde_json::Value,
    },
    /// The session is over; the endpoint handle is dead.
    Closed {
        reason: CloseReason,
    },
}

/// What the media half hands a transport.
#[derive(Debug, Clone)]
pub enum MediaOut {
    /// A frame of a subscribed track.
    Frame { track: TrackId, frame: MediaFrame },
    /// A subscriber needs a keyframe of one of this peer's published tracks.
    KeyframeRequest { track: TrackId, layer: u8 },
    /// The most any current subscriber can take of one of this peer's tracks, in bits/s.
    BitrateHint { track: TrackId, bps: u64 },
}
