//! The cluster's view of rooms on this node: for each room, the origin task that publishes what
//! local clients do ([`origin`]), and the mirrors of other nodes' clients ([`mirror`]). Applies
//! the bus's messages to the engine, and answers a resynchronisation with this node's state.

pub(crate) mod mirror;
pub(crate) mod origin;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_core::{CloseReason, PeerId, PeerInfo, RoomId, RoomInfo, SessionId, TrackId, TrackInfo};
use junction_engine::{Engine, RoomEvent};
use parking_lot::Mutex;
use tracing::{debug, info};

use crate::Shared;
use crate::bus::{BusMessage, Envelope, WirePeer, WireRoom, WireTrack, data_message};
use mirror::{MirrorCmd, MirrorHandle};
use origin::OriginHandle;

/// How long a departed mirror's session is still recognised as one (events about it may lag).
const TOMBSTONE: Duration = Duration::from_secs(60);

/// Internal engine services (`junction:mixer`, `junction:cluster`) are per node, never mirrored.
pub(crate) fn is_internal(peer: &PeerId) -> bool {
    peer.as_str().starts_with("junction:")
}

struct MirrorEntry {
    node: String,
    session: SessionId,
    /// None while its join is in progress.
    handle: Option<MirrorHandle>,
    tracks: HashMap<junction_core::TrackId, TrackInfo>,
}

#[derive(Default)]
struct Inner {
    origins: HashMap<RoomId, OriginHandle>,
    mirrors: HashMap<RoomId, HashMap<PeerId, MirrorEntry>>,
    /// Sessions of mirrors, live and recently gone.
    mirror_sessions: HashMap<SessionId, Option<Instant>>,
    /// Rooms deleted because another node said so: their deletion is not announced again.
    deleted_by_bus: Vec<RoomId>,
    /// The start time each node announced last: a newer one means it restarted.
    epochs: HashMap<String, u64>,
}

/// A peer of a node that died, as reported to this node's event stream.
pub(crate) struct Departed {
    pub room: RoomId,
    pub peer: PeerInfo,
    pub tracks: Vec<TrackInfo>,
}

#[derive(Default)]
pub(crate) struct Rooms {
    inner: Mutex<Inner>,
}

impl Rooms {
    pub fn is_mirror_session(&self, session: SessionId) -> bool {
        self.inner.lock().mirror_sessions.contains_key(&session)
    }

    /// The node a peer of `room` is connected to, when it is a mirror here.
    pub fn mirror_node(&self, room: &RoomId, peer: &PeerId) -> Option<String> {
        self.inner.lock().mirrors.get(room)?.get(peer).map(|m| m.node.clone())
    }

    /// Rooms and the nodes their mirrored peers are on (for placement).
    pub fn nodes_in_room(&self, room: &RoomId) -> Vec<String> {
        let inner = self.inner.lock();
        let mut nodes: Vec<String> =
            inner.mirrors.get(room).map(|m| m.values().map(|e| e.node.clone()).collect()).unwrap_or_default();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    pub fn take_deleted_by_bus(&self, room: &RoomId) -> bool {
        let mut inner = self.inner.lock();
        let before = inner.deleted_by_bus.len();
        inner.deleted_by_bus.retain(|r| r != room);
        inner.deleted_by_bus.len() != before
    }

    pub fn origin_ended(&self, room: &RoomId) {
        let mut inner = self.inner.lock();
        if inner.origins.get(room).is_some_and(|o| o.is_closed()) {
            inner.origins.remove(room);
        }
    }

    pub fn mirror_ended(&self, room: &RoomId, peer: &PeerId, session: SessionId) {
        let mut inner = self.inner.lock();
        if let Some(peers) = inner.mirrors.get_mut(room) {
            if peers.get(peer).is_some_and(|m| m.session == session) {
                peers.remove(peer);
            }
            if peers.is_empty() {
                inner.mirrors.remove(room);
            }
        }
        let now = Instant::now();
        inner.mirror_sessions.insert(session, Some(now));
        inner.mirror_sessions.retain(|_, gone| gone.is_none_or(|at| now.duration_since(at) < TOMBSTONE));
    }

    /// Starts the room's origin task unless it runs.
    pub fn watch(&self, shared: &Arc<Shared>, room: &RoomId) {
        let running = self.inner.lock().origins.get(room).is_some_and(|o| !o.is_closed());
        if running {
            return;
        }
        if let Some(handle) = origin::attach(shared, room) {
            self.inner.lock().origins.insert(room.clone(), handle);
        }
    }

    pub fn origin(&self, room: &RoomId) -> Option<OriginHandle> {
        self.inner.lock().origins.get(room).filter(|o| !o.is_closed()).cloned()
    }

    fn adopt(&self, shared: &Arc<Shared>, room: &RoomId, info: Option<&RoomInfo>) {
        let engine: &Engine = &shared.engine;
        if !engine.room_exists(room) {
            let options = info.map(RoomInfo::options).unwrap_or_else(|| engine.config().room_defaults.clone());
            engine.adopt_room(room.clone(), options);
        }
        self.watch(shared, room);
    }

    fn mirror(&self, room: &RoomId, peer: &PeerId) -> Option<MirrorHandle> {
        self.inner.lock().mirrors.get(room)?.get(peer)?.handle.clone()
    }

    fn peer_joined(&self, shared: &Arc<Shared>, node: &str, room: &RoomId, peer: PeerInfo) {
        self.adopt(shared, room, None);
        let previous = {
            let mut inner = self.inner.lock();
            let existing = inner.mirrors.get(room).and_then(|m| m.get(&peer.identity));
            if existing.is_some_and(|m| m.session == peer.session) {
                return;
            }
            inner.mirror_sessions.insert(peer.session, None);
            let entry =
                MirrorEntry { node: node.to_owned(), session: peer.session, handle: None, tracks: HashMap::new() };
            inner.mirrors.entry(room.clone()).or_default().insert(peer.identity.clone(), entry)
        };
        if let Some(handle) = previous.and_then(|p| p.handle) {
            handle.send(MirrorCmd::Leave(CloseReason::Replaced));
        }
        let handle = mirror::join(shared, node, room, peer.clone());
        let mut inner = self.inner.lock();
        let Some(peers) = inner.mirrors.get_mut(room) else { return };
        match handle {
            Some(handle) => {
                if let Some(entry) = peers.get_mut(&peer.identity).filter(|e| e.session == peer.session) {
                    entry.handle = Some(handle);
                }
            }
            None => {
                peers.remove(&peer.identity);
            }
        }
    }

    fn track_published(&self, room: &RoomId, info: TrackInfo) {
        let handle = {
            let mut inner = self.inner.lock();
            let Some(entry) = inner.mirrors.get_mut(room).and_then(|m| m.get_mut(&info.peer)) else { return };
            entry.tracks.insert(info.id.clone(), info.clone());
            entry.handle.clone()
        };
        if let Some(handle) = handle {
            handle.send(MirrorCmd::Publish(info));
        }
    }

    /// Applies one message from another node.
    pub fn apply(&self, shared: &Arc<Shared>, envelope: Envelope) {
        let node = envelope.from.as_str();
        let restarted = {
            let mut inner = self.inner.lock();
            let known = inner.epochs.insert(node.to_owned(), envelope.epoch);
            known.is_some_and(|epoch| epoch < envelope.epoch)
        };
        if restarted {
            info!(node, "cluster: node restarted; its previous peers are gone");
            self.node_gone(node);
        }
        match envelope.msg {
            BusMessage::SyncRequest => shared.publish(BusMessage::State { rooms: self.local_state(shared) }),
            BusMessage::State { rooms } => self.reconcile(shared, node, rooms),
            BusMessage::RoomCreated { room } => self.adopt(shared, &room.name.clone(), Some(&room)),
            BusMessage::RoomDeleted { room } => {
                if shared.engine.room_exists(&room) {
                    self.inner.lock().deleted_by_bus.push(room.clone());
                    let _ = shared.engine.delete_room(&room);
                }
            }
            BusMessage::PeerJoined { room, peer } => self.peer_joined(shared, node, &room, peer),
            BusMessage::PeerUpdated { room, peer } => {
                if let Some(handle) = self.mirror(&room, &peer.identity) {
                    handle.send(MirrorCmd::Update(peer));
                }
            }
            BusMessage::PeerLeft { room, peer, session, reason } => {
                let handle = {
                    let inner = self.inner.lock();
                    inner
                        .mirrors
                        .get(&room)
                        .and_then(|m| m.get(&peer))
                        .filter(|m| m.session == session)
                        .and_then(|m| m.handle.clone())
                };
                if let Some(handle) = handle {
                    handle.send(MirrorCmd::Leave(reason));
                }
            }
            BusMessage::TrackPublished { room, track } => self.track_published(&room, track.into_info()),
            BusMessage::TrackUnpublished { room, peer, track } => {
                let handle = {
                    let mut inner = self.inner.lock();
                    let entry = inner.mirrors.get_mut(&room).and_then(|m| m.get_mut(&peer));
                    entry.and_then(|e| e.tracks.remove(&track).and(e.handle.clone()))
                };
                if let Some(handle) = handle {
                    handle.send(MirrorCmd::Unpublish(track));
                }
            }
            BusMessage::TrackMuted { room, peer, track, muted } => {
                if let Some(handle) = self.mirror(&room, &peer) {
                    handle.send(MirrorCmd::Muted(track, muted));
                }
            }
            BusMessage::Data { room, from, to, topic, payload, reliable } => {
                // Only for `to` if it is a client here; the sender's mirror hands it over.
                if self.mirror_node(&room, &to).is_some() {
                    return;
                }
                if let (Some(sender), Some(message)) =
                    (self.mirror(&room, &from), data_message(from, to, topic, &payload, reliable))
                {
                    sender.send(MirrorCmd::Data(message));
                }
            }
            BusMessage::Signal { room, from, to, payload } => {
                if self.mirror_node(&room, &to).is_some() {
                    return;
                }
                if let Some(sender) = self.mirror(&room, &from) {
                    sender.send(MirrorCmd::Signal { to, payload });
                }
            }
            BusMessage::Kick { room, peer } => {
                if self.mirror_node(&room, &peer).is_none() && !is_internal(&peer) {
                    let _ = shared.engine.kick(&room, &peer);
                }
            }
            BusMessage::Draining => debug!(node, "cluster: node is draining"),
        }
    }

    /// Everything of this node's own, for a resynchronisation.
    pub fn local_state(&self, shared: &Arc<Shared>) -> Vec<WireRoom> {
        let mut rooms = Vec::new();
        for info in shared.engine.rooms() {
            let Some(snapshot) = shared.engine.room(&info.name) else { continue };
            let peers = snapshot
                .peers
                .into_iter()
                .filter(|p| !is_internal(&p.info.identity) && !self.is_mirror_session(p.info.session))
                .map(|p| WirePeer { info: p.info, tracks: p.tracks.iter().map(WireTrack::new).collect() })
                .collect();
            rooms.push(WireRoom { info, peers });
        }
        rooms
    }

    /// Makes this node's mirrors of `node` match that node's full state.
    /// Peers and tracks it no longer has (left or unpublished while the bus was down) go.
    fn reconcile(&self, shared: &Arc<Shared>, node: &str, rooms: Vec<WireRoom>) {
        let mut listed: HashMap<(RoomId, PeerId), (SessionId, HashSet<TrackId>)> = HashMap::new();
        for room in rooms {
            let name = room.info.name.clone();
            self.adopt(shared, &name, Some(&room.info));
            for peer in room.peers {
                let tracks = peer.tracks.iter().map(|t| t.info.id.clone()).collect();
                listed.insert((name.clone(), peer.info.identity.clone()), (peer.info.session, tracks));
                self.peer_joined(shared, node, &name, peer.info);
                for track in peer.tracks {
                    self.track_published(&name, track.into_info());
                }
            }
        }
        let mut stale_peers = Vec::new();
        let mut stale_tracks = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (room, peers) in inner.mirrors.iter_mut() {
                for (peer, entry) in peers.iter_mut().filter(|(_, entry)| entry.node == node) {
                    let Some(handle) = entry.handle.clone() else { continue };
                    match listed.get(&(room.clone(), peer.clone())) {
                        Some((session, tracks)) if *session == entry.session => {
                            let gone: Vec<TrackId> =
                                entry.tracks.keys().filter(|t| !tracks.contains(*t)).cloned().collect();
                            for track in gone {
                                entry.tracks.remove(&track);
                                stale_tracks.push((handle.clone(), track));
                            }
                        }
                        _ => stale_peers.push(handle),
                    }
                }
            }
        }
        for (handle, track) in stale_tracks {
            debug!(node, track = %track, "cluster: track unpublished while the bus was down");
            handle.send(MirrorCmd::Unpublish(track));
        }
        for handle in stale_peers {
            handle.send(MirrorCmd::Leave(CloseReason::TransportTimeout));
        }
    }

    /// Removes every mirror of `node` (dead or restarted); returns what they were.
    pub fn node_gone(&self, node: &str) -> Vec<Departed> {
        let mut departed = Vec::new();
        let mut handles = Vec::new();
        {
            let mut inner = self.inner.lock();
            for (room, peers) in inner.mirrors.iter_mut() {
                peers.retain(|_, entry| {
                    if entry.node != node {
                        return true;
                    }
                    if let Some(handle) = entry.handle.take() {
                        departed.push(Departed {
                            room: room.clone(),
                            peer: handle.info.clone(),
                            tracks: entry.tracks.values().cloned().collect(),
                        });
                        handles.push(handle);
                    }
                    false
                });
            }
            inner.mirrors.retain(|_, peers| !peers.is_empty());
        }
        for handle in handles {
            handle.send(MirrorCmd::Leave(CloseReason::TransportTimeout));
        }
        departed
    }

    /// Puts the departures of a dead node's peers in this node's event stream (webhooks).
    pub fn report_departed(engine: &Engine, departed: &[Departed]) {
        for gone in departed {
            for track in &gone.tracks {
                engine.report(RoomEvent::TrackUnpublished { room: gone.room.clone(), track: track.clone() });
            }
            engine.report(RoomEvent::PeerLeft {
                room: gone.room.clone(),
                peer: gone.peer.clone(),
                reason: CloseReason::TransportTimeout,
            });
        }
    }
}
