//! What a signalling surface asks of the peer's endpoint while a media session owns it
//! ([`PeerRequest`]), as typed commands rather than code to run: the session task carries each
//! one out in one hop, the engine call and what the media side does with it together (a
//! subscription or a layer choice also holds the simulcast layer on the peer's m-line). A surface
//! whose peer has no media session yet applies the same request to the endpoint itself
//! ([`PeerRequest::apply`]).

use junction_core::{ContractError, DataMessage, LayerPreference, PeerId, SubscribeOptions, TrackId};
use junction_engine::EndpointRpc;

/// A request for the peer's endpoint.
#[derive(Debug, Clone)]
pub enum PeerRequest {
    /// New display name and/or metadata.
    Update {
        name: Option<String>,
        metadata: Option<serde_json::Value>,
    },
    /// Subscribe to `track` (in the codecs of `options`), holding the layer of `options`.
    Subscribe {
        track: TrackId,
        options: SubscribeOptions,
    },
    Unsubscribe {
        track: TrackId,
    },
    /// The peer's simulcast layer choice for a track it receives: a layer index holds that layer
    /// whatever the bandwidth estimate; `Highest` returns to the estimate's choice.
    SetLayer {
        track: TrackId,
        layer: LayerPreference,
    },
    Mute {
        track: TrackId,
        muted: bool,
    },
    SendData(DataMessage),
    /// Relays signalling to another peer of the room (mesh rooms).
    Signal {
        to: PeerId,
        payload: serde_json::Value,
    },
}

/// What a request answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerReply {
    Done,
    /// A data message reached this many peers.
    Delivered(usize),
}

impl PeerRequest {
    /// Carries the request out on `rpc` (the engine side only).
    pub fn apply(self, rpc: &EndpointRpc) -> Result<PeerReply, ContractError> {
        match self {
            PeerRequest::Update { name, metadata } => rpc.update(name, metadata).map(|_| PeerReply::Done),
            PeerRequest::Subscribe { track, options } => rpc.subscribe(&track, options).map(|_| PeerReply::Done),
            PeerRequest::Unsubscribe { track } => rpc.unsubscribe(&track).map(|_| PeerReply::Done),
            PeerRequest::SetLayer { track, layer } => rpc.set_layer(&track, layer).map(|_| PeerReply::Done),
            PeerRequest::Mute { track, muted } => rpc.set_muted(&track, muted).map(|_| PeerReply::Done),
            PeerRequest::SendData(message) => rpc.send_data(message).map(PeerReply::Delivered),
            PeerRequest::Signal { to, payload } => rpc.signal(&to, payload).map(|_| PeerReply::Done),
        }
    }

    /// The simulcast layer the request holds on the peer's m-line for a track, if it is one
    /// that chooses a layer: `None` inside for the estimate's choice.
    pub(crate) fn held_layer(&self) -> Option<(TrackId, Option<u8>)> {
        let (track, layer) = match self {
            PeerRequest::Subscribe { track, options } => (track, options.layer),
            PeerRequest::SetLayer { track, layer } => (track, *layer),
            _ => return None,
        };
        let forced = match layer {
            LayerPreference::Highest => None,
            LayerPreference::AtMost(layer) => Some(layer),
        };
        Some((track.clone(), forced))
    }
}
