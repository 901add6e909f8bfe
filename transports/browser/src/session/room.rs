//! The room half of a session: joining (the token names room and identity), the requests that
//! need a room (update, subscribe, layers, mute, data, signalling), and the room's events turned
//! into messages for the client. Requests reach the endpoint wherever it is held ([`RoomPeer::call`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use junction_core::{
    CloseReason, Codec, DataMessage, EndpointEvent, LayerPreference, MediaKind, PeerId, PeerInfo, RoomId, RoomMode,
    SubscribeOptions, TransportKind,
};
use junction_engine::{DuplicatePolicy, JoinRequest};
use junction_webrtc::{PeerReply, PeerRequest};
use serde_json::Value;

use super::link::{RoomInput, RoomPeer};
use super::{Ending, Reply, Session};
use crate::error::WireError;
use crate::protocol::{ClientMessage, PeerView, ServerMessage};

/// Longest display name accepted.
const MAX_NAME_BYTES: usize = 256;
/// Largest metadata accepted, as JSON text (same limit as the REST API).
const MAX_METADATA_BYTES: usize = 8 * 1024;
const MAX_TOPIC_BYTES: usize = 128;

/// What a browser can receive over WebRTC, best first.
pub const BROWSER_CODECS: &[Codec] = &[Codec::Opus, Codec::Vp8, Codec::H264, Codec::Vp9, Codec::Av1];

fn check_name(name: &Option<String>) -> Result<(), WireError> {
    match name {
        Some(name) if name.len() > MAX_NAME_BYTES => {
            Err(WireError::new("invalid_field", format!("name is {} bytes, the limit is {MAX_NAME_BYTES}", name.len())))
        }
        _ => Ok(()),
    }
}

fn check_metadata(metadata: &Option<Value>) -> Result<(), WireError> {
    let size = metadata.as_ref().map(|m| m.to_string().len()).unwrap_or(0);
    if size > MAX_METADATA_BYTES {
        let message = format!("metadata is {size} bytes, the limit is {MAX_METADATA_BYTES}");
        return Err(WireError::new("metadata_too_large", message));
    }
    Ok(())
}

/// The codecs a browser session takes: every one a browser decodes, or Opus and the video
/// codecs it names in `receive` (a client without a decoder, or one that wants hardware-decoded
/// H.264, gets the others transcoded).
fn receive_codecs(receive: &Option<Vec<String>>) -> Result<Vec<Codec>, WireError> {
    let Some(names) = receive else { return Ok(BROWSER_CODECS.to_vec()) };
    let mut accept = vec![Codec::Opus];
    for name in names {
        let codec = Codec::from_name(name)
            .filter(|codec| codec.kind() == MediaKind::Video && BROWSER_CODECS.contains(codec))
            .ok_or_else(|| {
                let message =
                    format!("receive: \"{name:.32}\" is not a video codec a browser decodes (vp8, h264, vp9, av1)");
                WireError::new("invalid_field", message)
            })?;
        if !accept.contains(&codec) {
            accept.push(codec);
        }
    }
    if accept.len() == 1 {
        return Err(WireError::new("invalid_field", "receive: name at least one video codec"));
    }
    Ok(accept)
}

fn not_joined() -> WireError {
    WireError::new("not_joined", "join a room first")
}

impl Session {
    pub(super) fn join(
        &mut self,
        id: Option<Value>,
        room: Option<RoomId>,
        name: Option<String>,
        metadata: Option<Value>,
        receive: Option<Vec<String>>,
    ) -> Result<Reply, WireError> {
        if let Some(joined) = &self.room {
            let message = format!("this session has already joined room {}; leave first", joined.info.name);
            return Err(WireError::new("already_joined", message));
        }
        check_name(&name)?;
        check_metadata(&metadata)?;
        let accept = receive_codecs(&receive)?;
        let room = match (&self.principal.room, room) {
            (Some(granted), Some(asked)) if *granted != asked => {
                let message = format!("the token is for room {granted}, not {asked}");
                return Err(WireError::new("not_allowed", message));
            }
            (Some(granted), _) => granted.clone(),
            (None, Some(asked)) => asked,
            (None, None) => return Err(WireError::new("invalid_field", "join: an anonymous session must name a room")),
        };
        let engine = &self.ctx.engine;
        // Mesh rooms forward no media, so their peers take no subscriptions.
        let mode = engine.room(&room).map(|r| r.info.mode).unwrap_or(engine.config().room_defaults.mode);
        let request = JoinRequest {
            room: room.clone(),
            identity: self.principal.identity.clone(),
            name: name.or_else(|| self.principal.name.clone()),
            metadata: metadata.unwrap_or_else(|| self.principal.metadata.clone()),
            grants: self.principal.grants,
            transport: TransportKind::Webrtc,
            auto_subscribe: mode == RoomMode::Sfu,
            accept_codecs: accept.clone(),
            presentation_order_only: true,
            on_duplicate: DuplicatePolicy::Replace,
            takes_seat: true,
            credential: self.principal.session.clone(),
            client: self.client.clone(),
            ..JoinRequest::new(room.clone(), self.principal.identity.clone(), TransportKind::Webrtc)
        };
        // Indexed before joining, so peers told of the join can already see the session id.
        self.ctx.registry.bind_peer(self.id, &room, &self.principal.identity);
        let joined = match engine.join(request) {
            Ok(joined) => joined,
            Err(err) => {
                self.ctx.registry.unbind_peer(self.id);
                return Err(err.into());
            }
        };
        tracing::Span::current().record("room", room.as_str());
        tracing::info!(mode = ?joined.room.mode, peers = joined.peers.len(), "joined");
        let (rpc, media) = joined.endpoint.split();
        let me = rpc.snapshot().peers.into_iter().find(|p| p.info.session == rpc.session()).map(|p| p.info);
        let you = me.map(|info| PeerView::new(info, Some(self.id))).ok_or_else(|| {
            WireError::new("room_closing", format!("room {room} closed while this session joined it"))
        })?;
        let peers = joined.peers.into_iter().map(|p| self.view(&room, p)).collect();
        let reply = ServerMessage::Joined {
            id,
            session: self.id,
            room: joined.room.clone(),
            you,
            peers,
            tracks: joined.tracks,
        };
        self.room = Some(RoomPeer::new(joined.room, rpc, media, accept));
        self.engaged = true;
        Ok(Reply::Message(Box::new(reply)))
    }

    fn view(&self, room: &RoomId, info: PeerInfo) -> PeerView {
        let session = self.ctx.registry.session_of(room, &info.identity);
        PeerView::new(info, session)
    }

    /// Requests that need a room.
    pub(super) async fn room_request(&mut self, message: ClientMessage) -> Result<Reply, WireError> {
        let peer = self.room.as_ref().ok_or_else(not_joined)?;
        let mesh = || {
            let message =
                format!("room {} is a mesh room: media goes peer to peer, not through the server", peer.info.name);
            WireError::new("mesh_room", message)
        };
        match message {
            ClientMessage::Update { name, metadata } => {
                check_name(&name)?;
                check_metadata(&metadata)?;
                peer.request(PeerRequest::Update { name, metadata }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::Subscribe { track, layer } => {
                if peer.mode() == RoomMode::Mesh {
                    return Err(mesh());
                }
                let layer: LayerPreference = layer.map(Into::into).unwrap_or_default();
                let options = SubscribeOptions { codecs: peer.accept.clone(), layer };
                // A media session subscribes and holds the layer on the peer's m-line in one hop.
                peer.request(PeerRequest::Subscribe { track, options }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::Unsubscribe { track } => {
                peer.request(PeerRequest::Unsubscribe { track }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::SetLayer { track, layer } => {
                // The engine checks the subscription; a media session then holds the layer, in
                // the same hop.
                peer.request(PeerRequest::SetLayer { track, layer: layer.into() }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::Mute { track, muted } => {
                peer.request(PeerRequest::Mute { track, muted }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::Data { payload, payload_base64, topic, to, reliable } => {
                let message = data_request(payload, payload_base64, topic, to, reliable, peer.identity.clone())?;
                let PeerReply::Delivered(delivered) = peer.request(PeerRequest::SendData(message)).await? else {
                    return Err(WireError::new("internal", "a data message was answered without a count"));
                };
                Ok(Reply::Delivered(delivered))
            }
            ClientMessage::Signal { to, payload } => {
                self.check_signal(&payload)?;
                peer.request(PeerRequest::Signal { to, payload }).await?;
                Ok(Reply::Ok)
            }
            ClientMessage::Answer { sdp } => self.on_answer(sdp).await,
            ClientMessage::Candidate { candidate, .. } => self.on_candidate(candidate).await,
            other => Err(WireError::new("internal", format!("{other:?} is not a room request"))),
        }
    }

    /// The next thing the session's room hands it; pending forever when it is in none.
    pub async fn next_room_input(&mut self) -> RoomInput {
        match self.room.as_mut() {
            Some(peer) => peer.next_input().await,
            None => std::future::pending().await,
        }
    }

    /// The room's event stream ended: the engine dropped the session without a `Closed` event.
    pub fn room_events_ended(&mut self) {
        if self.room.take().is_some() {
            self.ctx.registry.unbind_peer(self.id);
            let reason = CloseReason::Error { message: "the room ended the session".into() };
            self.end(Ending::from_close(&reason), None);
        }
    }

    pub async fn on_room_event(&mut self, event: EndpointEvent) {
        let Some(room) = self.room.as_ref().map(|r| r.info.name.clone()) else { return };
        let message = match event {
            EndpointEvent::PeerJoined(info) => ServerMessage::PeerJoined { peer: self.view(&room, info) },
            EndpointEvent::PeerUpdated(info) => ServerMessage::PeerUpdated { peer: self.view(&room, info) },
            EndpointEvent::PeerLeft { peer, reason, .. } => {
                ServerMessage::PeerLeft { identity: peer, reason: reason.as_str() }
            }
            EndpointEvent::TrackPublished(track) => ServerMessage::TrackPublished { track },
            EndpointEvent::TrackUnpublished { track, peer } => ServerMessage::TrackUnpublished { track, peer },
            EndpointEvent::TrackMuted { track, muted } => ServerMessage::TrackMuted { track, muted },
            EndpointEvent::Subscribed { track, codec, .. } => ServerMessage::Subscribed { track: track.id, codec },
            EndpointEvent::Unsubscribed { track } => ServerMessage::Unsubscribed { track },
            EndpointEvent::SubscriptionFailed { track, reason } => ServerMessage::SubscriptionFailed { track, reason },
            EndpointEvent::Data(message) => match self.send_on_channel(&message).await {
                true => return,
                false => data_message(message),
            },
            EndpointEvent::Signal { from, payload, .. } => {
                let session = self.ctx.registry.session_of(&room, &from);
                ServerMessage::Signal { from, session, payload }
            }
            EndpointEvent::Closed { reason } => {
                self.room = None;
                self.ctx.registry.unbind_peer(self.id);
                let message = match &reason {
                    CloseReason::Error { message } => Some(message.clone()),
                    _ => None,
                };
                tracing::info!(reason = reason.as_str(), "removed from the room");
                self.end(Ending::from_close(&reason), message);
                return;
            }
        };
        self.push(message);
    }
}

/// A data message a client sent (on the socket or a data channel), checked.
pub(super) fn data_request(
    payload: Option<String>,
    payload_base64: Option<String>,
    topic: Option<String>,
    to: Vec<PeerId>,
    reliable: bool,
    from: PeerId,
) -> Result<DataMessage, WireError> {
    let payload = match (payload, payload_base64) {
        (Some(text), None) => Bytes::from(text),
        (None, Some(encoded)) => BASE64
            .decode(encoded.as_bytes())
            .map(Bytes::from)
            .map_err(|err| WireError::new("invalid_field", format!("data.payload_base64: not base64: {err}")))?,
        _ => {
            let message = "data: give exactly one of payload (text) and payload_base64 (bytes)";
            return Err(WireError::new("invalid_field", message));
        }
    };
    if topic.as_ref().is_some_and(|t| t.len() > MAX_TOPIC_BYTES) {
        return Err(WireError::new("invalid_field", format!("data.topic is longer than {MAX_TOPIC_BYTES} bytes")));
    }
    Ok(DataMessage { from, to, topic, payload, reliable })
}

pub(super) fn data_message(message: DataMessage) -> ServerMessage {
    let (payload, payload_base64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(BASE64.encode(&message.payload))),
    };
    ServerMessage::Data {
        from: message.from,
        topic: message.topic,
        payload,
        payload_base64,
        reliable: message.reliable,
    }
}
