//! A mirror: this node's stand-in for a client of another node ([`PeerRole::Mirror`]). Local
//! peers see it as any other peer; its tracks are published under their origin ids and fed by
//! the relay, pulled only while something here subscribes to them (the track's `Demand`), up to
//! the highest layer wanted. Data messages and signals local peers address to it go back over
//! the bus to its node; keyframe requests and bitrate hints go back over the relay link.

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::{
    CloseReason, DataMessage, EndpointEvent, MediaOut, PeerId, PeerInfo, PublishRequest, RoomId, TrackId, TrackInfo,
};
use junction_engine::{DuplicatePolicy, EndpointMedia, EndpointRpc, JoinRequest, PeerRole, TrackPublisher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::Shared;
use crate::bus::BusMessage;

pub(crate) enum MirrorCmd {
    Publish(TrackInfo),
    Unpublish(TrackId),
    Muted(TrackId, bool),
    Update(PeerInfo),
    /// A message from this (remote) peer to local peers.
    Data(DataMessage),
    Signal {
        to: PeerId,
        payload: serde_json::Value,
    },
    Leave(CloseReason),
}

#[derive(Clone)]
pub(crate) struct MirrorHandle {
    pub info: PeerInfo,
    tx: mpsc::UnboundedSender<MirrorCmd>,
}

impl MirrorHandle {
    pub fn send(&self, cmd: MirrorCmd) {
        let _ = self.tx.send(cmd);
    }
}

/// Joins the mirror of `peer` (a client of `node`) into `room`.
pub(crate) fn join(shared: &Arc<Shared>, node: &str, room: &RoomId, peer: PeerInfo) -> Option<MirrorHandle> {
    let request = JoinRequest {
        name: peer.name.clone(),
        metadata: peer.metadata.clone(),
        grants: peer.grants,
        auto_subscribe: false,
        on_duplicate: DuplicatePolicy::Replace,
        role: PeerRole::Mirror { session: peer.session, joined_at_ms: peer.joined_at_ms },
        ..JoinRequest::new(room.clone(), peer.identity.clone(), peer.transport)
    };
    let joined = match shared.engine.join(request) {
        Ok(joined) => joined,
        Err(err) => {
            info!(room = %room, peer = %peer.identity, node, "cluster: peer not mirrored: {err}");
            return None;
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = MirrorHandle { info: peer.clone(), tx };
    let (rpc, media) = joined.endpoint.split();
    let mirror =
        Mirror { shared: shared.clone(), node: node.to_owned(), room: room.clone(), peer, tracks: HashMap::new() };
    let shared = shared.clone();
    let room = room.clone();
    tokio::spawn(async move {
        let identity = mirror.peer.identity.clone();
        let session = mirror.peer.session;
        let _ = junction_engine::supervise::contain("cluster", mirror.run(rpc, media, rx)).await;
        shared.rooms.mirror_ended(&room, &identity, session);
    });
    Some(handle)
}

struct MirroredTrack {
    publisher: TrackPublisher,
    demand: JoinHandle<()>,
}

struct Mirror {
    shared: Arc<Shared>,
    node: String,
    room: RoomId,
    peer: PeerInfo,
    tracks: HashMap<TrackId, MirroredTrack>,
}

impl Mirror {
    async fn run(
        mut self,
        mut rpc: EndpointRpc,
        mut media: EndpointMedia,
        mut cmds: mpsc::UnboundedReceiver<MirrorCmd>,
    ) {
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(MirrorCmd::Leave(reason)) => {
                        self.stop_tracks();
                        rpc.leave(reason);
                        return;
                    }
                    Some(cmd) => self.command(&rpc, cmd),
                    None => break,
                },
                event = rpc.next_event() => match event {
                    Some(EndpointEvent::Data(message)) => {
                        self.shared.publish(BusMessage::data(&self.room, &self.peer.identity, &message));
                    }
                    Some(EndpointEvent::Signal { from, payload, .. }) => {
                        let to = self.peer.identity.clone();
                        self.shared.publish(BusMessage::Signal { room: self.room.clone(), from, to, payload });
                    }
                    Some(EndpointEvent::Closed { reason }) => {
                        debug!(room = %self.room, peer = %self.peer.identity, reason = reason.as_str(), "cluster: mirror closed here");
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                out = media.recv() => match out {
                    Some(MediaOut::KeyframeRequest { track, layer }) => {
                        self.shared.links.keyframe(&self.node, &self.room, &track, layer);
                    }
                    Some(MediaOut::BitrateHint { track, bps }) => {
                        self.shared.links.bitrate(&self.node, &self.room, &track, bps);
                    }
                    Some(MediaOut::Frame { .. }) => {}
                    None => break,
                },
            }
        }
        self.stop_tracks();
    }

    fn command(&mut self, rpc: &EndpointRpc, cmd: MirrorCmd) {
        match cmd {
            MirrorCmd::Publish(info) => self.publish(rpc, info),
            MirrorCmd::Unpublish(track) => {
                self.stop_track(&track);
                let _ = rpc.unpublish(&track);
            }
            MirrorCmd::Muted(track, muted) => {
                let _ = rpc.set_muted(&track, muted);
            }
            MirrorCmd::Update(info) => {
                let _ = rpc.update(info.name.clone(), Some(info.metadata.clone()));
                self.peer = info;
            }
            MirrorCmd::Data(message) => {
                if let Err(err) = rpc.send_data(message) {
                    debug!(room = %self.room, peer = %self.peer.identity, "cluster: relayed data message refused: {err}");
                }
            }
            MirrorCmd::Signal { to, payload } => {
                let _ = rpc.signal(&to, payload);
            }
            MirrorCmd::Leave(_) => {}
        }
    }

    fn publish(&mut self, rpc: &EndpointRpc, info: TrackInfo) {
        if self.tracks.contains_key(&info.id) {
            return;
        }
        let request = PublishRequest {
            name: info.name.clone(),
            codec: info.codec,
            source: info.source,
            params: info.params.clone(),
            layers: info.layers.clone(),
            muted: info.muted,
        };
        let publisher = match rpc.publish_as(info.id.clone(), request) {
            Ok(publisher) => publisher,
            Err(err) => {
                info!(room = %self.room, peer = %self.peer.identity, track = %info.id, "cluster: track not mirrored: {err}");
                return;
            }
        };
        let demand =
            tokio::spawn(follow_demand(self.shared.clone(), self.node.clone(), self.room.clone(), publisher.clone()));
        self.tracks.insert(info.id, MirroredTrack { publisher, demand });
    }

    fn stop_track(&mut self, track: &TrackId) {
        if let Some(mirrored) = self.tracks.remove(track) {
            mirrored.demand.abort();
            self.shared.links.want(&self.node, &self.room, mirrored.publisher.id(), None);
        }
    }

    fn stop_tracks(&mut self) {
        let ids: Vec<TrackId> = self.tracks.keys().cloned().collect();
        for id in ids {
            self.stop_track(&id);
        }
    }
}

/// Pulls the track from its node while it has subscribers here, up to the top layer wanted.
async fn follow_demand(shared: Arc<Shared>, node: String, room: RoomId, publisher: TrackPublisher) {
    let mut demand = publisher.demand();
    loop {
        let now = *demand.borrow_and_update();
        let want = (now.subscribers > 0).then(|| (now.max_layer, publisher.clone()));
        shared.links.want(&node, &room, publisher.id(), want);
        if demand.changed().await.is_err() {
            return;
        }
    }
}
