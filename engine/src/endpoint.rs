//! The handle a transport holds for one peer: [`Endpoint`], split into the RPC half
//! ([`EndpointRpc`]: requests and room events) and the media half ([`EndpointMedia`]: frames of
//! subscriptions, feedback for publications). Dropping the RPC half leaves the room, so a
//! transport task that ends for any reason — including a panic — releases everything its peer
//! held.

use std::sync::Arc;

use junction_core::{
    CloseReason, ContractError, DataMessage, EndpointEvent, LayerPreference, MediaOut, PeerId, PeerInfo,
    PublishRequest, RoomId, SessionId, SubscribeOptions, TrackId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::meter::LinkQuality;
use crate::queue::MediaReceiver;
use crate::room::{Room, RoomSnapshot, SubscribedTrack};
use crate::track::TrackPublisher;

/// What the room and the handles share about one session.
pub(crate) struct PeerLink {
    pub(crate) room: RoomId,
    pub(crate) peer: PeerId,
    pub(crate) session: SessionId,
    /// Cancelled when the session ends, however it ends.
    pub(crate) closed: CancellationToken,
}

/// One peer's session in one room.
pub struct Endpoint {
    pub rpc: EndpointRpc,
    pub media: EndpointMedia,
}

impl Endpoint {
    pub(crate) fn new(
        room: Arc<Room>,
        link: Arc<PeerLink>,
        events: mpsc::Receiver<Box<EndpointEvent>>,
        media: MediaReceiver,
        feedback: mpsc::Receiver<Box<MediaOut>>,
    ) -> Self {
        Endpoint {
            rpc: EndpointRpc { room: room.clone(), link: link.clone(), events },
            media: EndpointMedia { room, link, media, feedback },
        }
    }

    pub fn split(self) -> (EndpointRpc, EndpointMedia) {
        (self.rpc, self.media)
    }
}

/// Control of a session: publish, subscribe, mute, layers, data, signalling, leave — and the
/// room's events. Dropping it leaves the room with [`CloseReason::Left`].
pub struct EndpointRpc {
    room: Arc<Room>,
    link: Arc<PeerLink>,
    /// Boxed, as the feedback of [`EndpointMedia`]: a channel allocates its first block of 32
    /// slots when it is made, and an `EndpointEvent` is 256 bytes (8 KB per idle session inline,
    /// 256 bytes boxed). Events are rare: an allocation each does not show.
    events: mpsc::Receiver<Box<EndpointEvent>>,
}

impl EndpointRpc {
    pub fn room(&self) -> &RoomId {
        &self.link.room
    }

    pub fn peer(&self) -> &PeerId {
        &self.link.peer
    }

    pub fn session(&self) -> SessionId {
        self.link.session
    }

    pub fn is_closed(&self) -> bool {
        self.link.closed.is_cancelled()
    }

    /// A token cancelled when the session ends.
    pub fn closed_token(&self) -> CancellationToken {
        self.link.closed.clone()
    }

    pub fn publish(&self, request: PublishRequest) -> Result<TrackPublisher, ContractError> {
        self.room.publish(&self.link, request, None)
    }

    /// Publishes a track under the id it has on its origin node. Only for a
    /// [`crate::PeerRole::Mirror`] peer, whose tracks everyone in the cluster must know by one id.
    pub fn publish_as(&self, id: TrackId, request: PublishRequest) -> Result<TrackPublisher, ContractError> {
        self.room.publish(&self.link, request, Some(id))
    }

    pub fn unpublish(&self, track: &TrackId) -> Result<(), ContractError> {
        self.room.unpublish(&self.link, track)
    }

    pub fn subscribe(&self, track: &TrackId, options: SubscribeOptions) -> Result<SubscribedTrack, ContractError> {
        self.room.subscribe(&self.link, track, options)
    }

    pub fn unsubscribe(&self, track: &TrackId) -> Result<(), ContractError> {
        self.room.unsubscribe(&self.link, track)
    }

    pub fn set_muted(&self, track: &TrackId, muted: bool) -> Result<(), ContractError> {
        self.room.set_muted(&self.link, track, muted)
    }

    pub fn set_layer(&self, track: &TrackId, layer: LayerPreference) -> Result<(), ContractError> {
        self.room.set_layer(&self.link, track, layer)
    }

    /// Changes the peer's name and/or metadata; the others see a `PeerUpdated`.
    pub fn update(&self, name: Option<String>, metadata: Option<serde_json::Value>) -> Result<PeerInfo, ContractError> {
        self.room.update_peer(&self.link, name, metadata)
    }

    /// Sends a data message; returns how many peers it was delivered to.
    pub fn send_data(&self, message: DataMessage) -> Result<usize, ContractError> {
        self.room.send_data(&self.link, message)
    }

    /// Relays a signalling payload to another peer of the room.
    pub fn signal(&self, to: &PeerId, payload: serde_json::Value) -> Result<(), ContractError> {
        self.room.signal(&self.link, to, payload)
    }

    pub fn snapshot(&self) -> RoomSnapshot {
        self.room.snapshot()
    }

    /// The next room event; `None` once the session is over and its last event was read.
    pub async fn next_event(&mut self) -> Option<EndpointEvent> {
        self.events.recv().await.map(|event| *event)
    }

    pub fn try_next_event(&mut self) -> Option<EndpointEvent> {
        self.events.try_recv().ok().map(|event| *event)
    }

    /// Leaves the room for `reason` (consumes the handle; dropping it leaves with `Left`).
    pub fn leave(self, reason: CloseReason) {
        self.room.leave(&self.link, reason);
    }
}

impl Drop for EndpointRpc {
    fn drop(&mut self) {
        if !self.link.closed.is_cancelled() {
            self.room.leave(&self.link, CloseReason::Left);
        }
    }
}

impl std::fmt::Debug for EndpointRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRpc")
            .field("room", &self.link.room)
            .field("peer", &self.link.peer)
            .field("session", &self.link.session)
            .finish()
    }
}

/// Media of a session: frames of its subscriptions and feedback for its publications come out
/// of [`EndpointMedia::recv`]; keyframe requests and bandwidth reports go in. Frames for its own
/// tracks go in through the [`TrackPublisher`]s that [`EndpointRpc::publish`] returns.
pub struct EndpointMedia {
    room: Arc<Room>,
    link: Arc<PeerLink>,
    media: MediaReceiver,
    feedback: mpsc::Receiver<Box<MediaOut>>,
}

impl EndpointMedia {
    /// The next frame or feedback item (feedback first); `None` once the session is over.
    pub async fn recv(&mut self) -> Option<MediaOut> {
        tokio::select! {
            biased;
            _ = self.link.closed.cancelled() => None,
            Some(item) = self.feedback.recv() => Some(*item),
            Some(item) = self.media.recv() => Some(item),
            else => None,
        }
    }

    /// Takes whatever is queued without waiting, up to `limit` items, into `out` (feedback
    /// first).
    pub fn drain_into(&mut self, out: &mut Vec<MediaOut>, limit: usize) {
        while out.len() < limit {
            match self.feedback.try_recv() {
                Ok(item) => out.push(*item),
                Err(_) => break,
            }
        }
        self.media.drain_into(out, limit);
    }

    /// Asks the publisher of a subscribed track for a keyframe (rate-limited per track).
    pub fn request_keyframe(&self, track: &TrackId) -> Result<(), ContractError> {
        self.room.request_keyframe(&self.link, track)
    }

    /// Reports how many bits/s this subscriber can take of `track`; the publisher hears the
    /// highest figure among its subscribers.
    pub fn report_bitrate(&self, track: &TrackId, bps: u64) -> Result<(), ContractError> {
        self.room.report_bitrate(&self.link, track, bps)
    }

    /// Reports how this subscriber's connection carries `track` (loss, round trip, jitter), for
    /// the stats API.
    pub fn report_link(&self, track: &TrackId, quality: LinkQuality) -> Result<(), ContractError> {
        self.room.report_link(&self.link, track, quality)
    }

    pub fn is_closed(&self) -> bool {
        self.link.closed.is_cancelled()
    }
}
