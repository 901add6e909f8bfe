//! This node's side of each room it has: the cluster joins the room as a hidden service peer
//! (`junction:cluster`, [`PeerRole::Service`]) that hears what the room's local clients do and
//! publishes it on the bus, and subscribes — once per track, whatever the number of nodes — to
//! the local tracks other nodes pull over the relay, copying each frame to every relay link
//! that wants it.

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::{
    CloseReason, EndpointEvent, Grants, LayerPreference, MediaFrame, MediaOut, PeerId, PeerInfo, RoomId, SessionId,
    SubscribeOptions, TrackId, TrackInfo, TransportKind,
};
use junction_engine::{JoinRequest, Joined, PeerRole};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::is_internal;
use crate::Shared;
use crate::bus::{BusMessage, WireTrack};

pub(crate) const SERVICE_IDENTITY: &str = "junction:cluster";
/// Frames queued per relay link and track before they are dropped.
const LINK_QUEUE: usize = 512;

pub(crate) type LinkId = u64;

pub(crate) enum OriginCmd {
    Want { track: TrackId, link: LinkId, layer: u8, sink: mpsc::Sender<MediaFrame> },
    Drop { track: TrackId, link: LinkId },
    Keyframe { track: TrackId },
    Bitrate { track: TrackId, bps: u64 },
}

#[derive(Clone)]
pub(crate) struct OriginHandle {
    tx: mpsc::UnboundedSender<OriginCmd>,
}

impl OriginHandle {
    pub fn send(&self, cmd: OriginCmd) {
        let _ = self.tx.send(cmd);
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// A sink for one link's copy of one track.
    pub fn sink() -> (mpsc::Sender<MediaFrame>, mpsc::Receiver<MediaFrame>) {
        mpsc::channel(LINK_QUEUE)
    }
}

/// Joins `room` as the service peer and starts its task; `None` when the room is gone.
pub(crate) fn attach(shared: &Arc<Shared>, room: &RoomId) -> Option<OriginHandle> {
    let identity = PeerId::new(SERVICE_IDENTITY).ok()?;
    let request = JoinRequest {
        grants: Grants::SUBSCRIBE_ONLY,
        auto_subscribe: false,
        role: PeerRole::Service,
        ..JoinRequest::new(room.clone(), identity, TransportKind::Internal)
    };
    let joined = match shared.engine.join(request) {
        Ok(joined) => joined,
        Err(err) => {
            debug!(room = %room, "cluster: not watching the room: {err}");
            return None;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = OriginHandle { tx };
    let shared = shared.clone();
    let room = room.clone();
    tokio::spawn(async move {
        let task = Origin {
            shared: shared.clone(),
            room: room.clone(),
            local: HashMap::new(),
            owners: HashMap::new(),
            sinks: HashMap::new(),
        };
        if junction_engine::supervise::contain("cluster", task.run(joined, rx)).await.is_err() {
            warn!(room = %room, "cluster: the room's relay task failed; other nodes lose its local media");
        }
        shared.rooms.origin_ended(&room);
    });
    Some(handle)
}

struct Origin {
    shared: Arc<Shared>,
    room: RoomId,
    /// This node's clients in the room (mirrors of other nodes' peers are not).
    local: HashMap<PeerId, SessionId>,
    /// Local clients' tracks: who owns each (a mute names the track only).
    owners: HashMap<TrackId, PeerId>,
    /// The relay links pulling each track, with the layer each wants.
    sinks: HashMap<TrackId, Vec<(LinkId, u8, mpsc::Sender<MediaFrame>)>>,
}

impl Origin {
    async fn run(mut self, joined: Joined, mut cmds: mpsc::UnboundedReceiver<OriginCmd>) {
        let (mut rpc, mut media) = joined.endpoint.split();
        for peer in &joined.peers {
            self.local_joined(peer);
        }
        for track in &joined.tracks {
            self.local_published(track);
        }
        loop {
            tokio::select! {
                event = rpc.next_event() => {
                    let Some(event) = event else { break };
                    if let EndpointEvent::Closed { reason } = event {
                        self.closed(reason);
                        break;
                    }
                    self.event(event);
                }
                Some(cmd) = cmds.recv() => self.command(&rpc, &media, cmd),
                out = media.recv() => match out {
                    Some(MediaOut::Frame { track, frame }) => self.forward(&track, frame),
                    Some(_) => {}
                    None => break,
                },
            }
        }
    }

    fn is_local(&self, peer: &PeerId) -> bool {
        self.local.contains_key(peer)
    }

    fn local_joined(&mut self, peer: &PeerInfo) {
        if is_internal(&peer.identity) || self.shared.rooms.is_mirror_session(peer.session) {
            return;
        }
        self.local.insert(peer.identity.clone(), peer.session);
        self.shared.publish(BusMessage::PeerJoined { room: self.room.clone(), peer: peer.clone() });
    }

    fn local_published(&mut self, track: &TrackInfo) {
        if self.is_local(&track.peer) {
            self.owners.insert(track.id.clone(), track.peer.clone());
            self.shared.publish(BusMessage::TrackPublished { room: self.room.clone(), track: WireTrack::new(track) });
        }
    }

    fn event(&mut self, event: EndpointEvent) {
        let room = self.room.clone();
        match event {
            EndpointEvent::PeerJoined(peer) => self.local_joined(&peer),
            EndpointEvent::PeerUpdated(peer) if self.is_local(&peer.identity) => {
                self.shared.publish(BusMessage::PeerUpdated { room, peer });
            }
            EndpointEvent::PeerLeft { peer, session, reason } if self.local.get(&peer) == Some(&session) => {
                self.local.remove(&peer);
                self.shared.publish(BusMessage::PeerLeft { room, peer, session, reason });
            }
            EndpointEvent::TrackPublished(track) => self.local_published(&track),
            EndpointEvent::TrackUnpublished { track, peer } => {
                self.sinks.remove(&track);
                if self.owners.remove(&track).is_some() {
                    self.shared.publish(BusMessage::TrackUnpublished { room, peer, track });
                }
            }
            EndpointEvent::TrackMuted { track, muted } => {
                if let Some(peer) = self.owners.get(&track) {
                    self.shared.publish(BusMessage::TrackMuted { room, peer: peer.clone(), track, muted });
                }
            }
            EndpointEvent::Unsubscribed { track } => {
                self.sinks.remove(&track);
            }
            _ => {}
        }
    }

    fn closed(&self, reason: CloseReason) {
        info!(room = %self.room, reason = reason.as_str(), "cluster: room closed on this node");
        if reason == CloseReason::RoomDeleted && !self.shared.rooms.take_deleted_by_bus(&self.room) {
            self.shared.publish(BusMessage::RoomDeleted { room: self.room.clone() });
        }
    }

    fn command(&mut self, rpc: &junction_engine::EndpointRpc, media: &junction_engine::EndpointMedia, cmd: OriginCmd) {
        match cmd {
            OriginCmd::Want { track, link, layer, sink } => {
                let links = self.sinks.entry(track.clone()).or_default();
                links.retain(|(id, _, _)| *id != link);
                links.push((link, layer, sink));
                let top = links.iter().map(|(_, layer, _)| *layer).max().unwrap_or(0);
                let options = SubscribeOptions { codecs: Vec::new(), layer: LayerPreference::AtMost(top) };
                match rpc.subscribe(&track, options) {
                    Ok(_) => {
                        let _ = media.request_keyframe(&track);
                    }
                    Err(err) => {
                        debug!(room = %self.room, track = %track, "cluster: relay wants a track this node cannot give: {err}");
                        self.sinks.remove(&track);
                    }
                }
            }
            OriginCmd::Drop { track, link } => {
                let Some(links) = self.sinks.get_mut(&track) else { return };
                links.retain(|(id, _, _)| *id != link);
                if links.is_empty() {
                    self.sinks.remove(&track);
                    let _ = rpc.unsubscribe(&track);
                }
            }
            OriginCmd::Keyframe { track } => {
                let _ = media.request_keyframe(&track);
            }
            OriginCmd::Bitrate { track, bps } => {
                let _ = media.report_bitrate(&track, bps);
            }
        }
    }

    /// One local frame to every link that pulls its track.
    fn forward(&mut self, track: &TrackId, frame: MediaFrame) {
        let Some(links) = self.sinks.get_mut(track) else { return };
        links.retain(|(_, _, sink)| match sink.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("junction_relay_frames_dropped_total").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}
