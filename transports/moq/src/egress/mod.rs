//! The subscribe side of a session: the room as MoQ broadcasts. Keeps the room's `.catalog`
//! (every peer's tracks, with the MoQ names they get) and, for each peer a subscriber asks for,
//! a [`PeerBroadcast`] fed by engine subscriptions this session holds for that peer's tracks.
//! Broadcasts are made on demand and dropped — with their engine subscriptions — once nobody
//! has read them for a while.

mod catalog;
mod peer;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use junction_core::{Codec, MediaFrame, PeerId, PeerInfo, RoomId, SubscribeOptions, TrackId, TrackInfo};
use junction_engine::EndpointRpc;
use moq_transport::serve::{TrackReader, Tracks, TracksReader, TracksRequest};
use tracing::{debug, warn};

pub use catalog::{CatalogEntry, CatalogPeer, catalog_json};
pub use peer::{BroadcastUser, PeerBroadcast};

use crate::codecs;
use crate::error::RequestRefusal;
use crate::naming::{self, CATALOG_TRACK, PeerTrack};
use crate::out_track::OutTrack;

/// A broadcast nobody reads is dropped after this long.
const IDLE_BROADCAST: Duration = Duration::from_secs(15);

/// A peer's published tracks and the ids they have in the peer's MoQ namespace.
#[derive(Default)]
struct PeerTracks {
    next_id: u32,
    tracks: BTreeMap<u32, TrackInfo>,
}

pub struct Egress {
    room: RoomId,
    me: PeerId,
    /// The codecs this session takes; the engine transcodes other tracks into one when it can.
    accept: Vec<Codec>,
    /// Tracks this session could not be given, with why: a subscriber asking for one is told.
    refused: HashMap<TrackId, String>,
    _writer: moq_transport::serve::TracksWriter,
    _requests: TracksRequest,
    reader: TracksReader,
    room_catalog: OutTrack,
    /// Everyone else in the room.
    peers: BTreeMap<PeerId, PeerInfo>,
    known: BTreeMap<PeerId, PeerTracks>,
    broadcasts: HashMap<PeerId, PeerBroadcast>,
}

impl Egress {
    /// The room as this session first sees it: `peers` and their `tracks`.
    pub fn new(
        room: RoomId,
        me: PeerId,
        accept: Vec<Codec>,
        peers: &[PeerInfo],
        tracks: &[TrackInfo],
    ) -> Option<Egress> {
        let (mut writer, requests, mut reader) = Tracks::new(naming::room_namespace(&room)).produce();
        let room_catalog = OutTrack::create(&mut writer, &mut reader, CATALOG_TRACK, 0)?;
        let mut egress = Egress {
            room,
            me,
            accept,
            refused: HashMap::new(),
            _writer: writer,
            _requests: requests,
            reader,
            room_catalog,
            peers: peers.iter().map(|p| (p.identity.clone(), p.clone())).collect(),
            known: BTreeMap::new(),
            broadcasts: HashMap::new(),
        };
        for track in tracks {
            egress.remember(track.clone());
        }
        egress.publish_room_catalog();
        Some(egress)
    }

    fn remember(&mut self, track: TrackInfo) {
        let entry = self.known.entry(track.peer.clone()).or_default();
        if entry.tracks.values().any(|t| t.id == track.id) {
            return;
        }
        entry.next_id += 1;
        entry.tracks.insert(entry.next_id, track);
    }

    fn publish_room_catalog(&mut self) {
        let entries: Vec<CatalogEntry> = self
            .known
            .iter()
            .flat_map(|(peer, tracks)| tracks.tracks.iter().map(move |(id, info)| (peer, *id, info)))
            .filter_map(|(peer, id, info)| {
                let codec = codecs::catalog_codec(info)?;
                Some(CatalogEntry {
                    namespace: naming::namespace_path(&naming::peer_namespace(&self.room, peer)),
                    name: naming::media_track_name(id),
                    kind: info.kind,
                    codec,
                    width: info.params.width,
                    height: info.params.height,
                    sample_rate: Some(info.params.clock_rate),
                    channels: Some(info.params.channels),
                })
            })
            .collect();
        let peers: Vec<CatalogPeer> = self
            .peers
            .values()
            .map(|p| CatalogPeer {
                identity: p.identity.to_string(),
                namespace: naming::namespace_path(&naming::peer_namespace(&self.room, &p.identity)),
                transport: p.transport.as_str(),
            })
            .collect();
        let _ = self.room_catalog.publish_single(catalog_json(&entries, Some(&peers)));
    }

    pub fn peer_joined(&mut self, peer: PeerInfo) {
        if peer.identity != self.me {
            self.peers.insert(peer.identity.clone(), peer);
            self.publish_room_catalog();
        }
    }

    pub fn peer_left(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        if self.broadcasts.remove(peer).is_some() {
            debug!(room = %self.room, peer = %peer, "peer left: broadcast ended");
        }
        self.known.remove(peer);
        self.publish_room_catalog();
    }

    pub fn track_published(&mut self, track: TrackInfo, rpc: &EndpointRpc, now: Instant) {
        let peer = track.peer.clone();
        let engine = track.id.clone();
        self.remember(track);
        self.publish_room_catalog();
        if self.broadcasts.contains_key(&peer) {
            self.attach(&peer, &engine, rpc);
            if let Some(broadcast) = self.broadcasts.get_mut(&peer) {
                broadcast.refresh(now);
            }
        }
    }

    pub fn track_unpublished(&mut self, track: &TrackId, peer: &PeerId, now: Instant) {
        if let Some(known) = self.known.get_mut(peer) {
            known.tracks.retain(|_, info| &info.id != track);
        }
        self.refused.remove(track);
        if let Some(broadcast) = self.broadcasts.get_mut(peer) {
            broadcast.remove_track(track, now);
        }
        self.publish_room_catalog();
    }

    /// The engine stopped delivering `track` (its transcoder failed for good).
    pub fn track_lost(&mut self, track: &TrackId, reason: String, now: Instant) {
        warn!(room = %self.room, track = %track, "track lost to this MoQ session: {reason}");
        if let Some(broadcast) = self.broadcasts.values_mut().find(|b| b.has_track(track)) {
            broadcast.remove_track(track, now);
        }
        self.refused.insert(track.clone(), reason);
    }

    /// Subscribes this session to one of `peer`'s tracks and adds it to the peer's broadcast.
    fn attach(&mut self, peer: &PeerId, engine: &TrackId, rpc: &EndpointRpc) {
        let Some(id) = self
            .known
            .get(peer)
            .and_then(|known| known.tracks.iter().find(|(_, info)| &info.id == engine).map(|(id, _)| *id))
        else {
            return;
        };
        let Some(broadcast) = self.broadcasts.get_mut(peer) else { return };
        if broadcast.has_track(engine) {
            return;
        }
        let options = SubscribeOptions { codecs: self.accept.clone(), ..SubscribeOptions::default() };
        match rpc.subscribe(engine, options) {
            Ok(subscribed) => {
                self.refused.remove(engine);
                broadcast.add_track(id, engine.clone(), subscribed.codec, subscribed.params);
            }
            Err(err) => {
                warn!(room = %self.room, peer = %peer, track = %engine, "track not carried to this MoQ session: {err}");
                self.refused.insert(engine.clone(), err.to_string());
            }
        }
    }

    /// A frame of a track this session subscribed to.
    pub fn on_frame(&mut self, track: &TrackId, frame: MediaFrame, now: Instant) {
        if let Some(broadcast) = self.broadcasts.values_mut().find(|b| b.has_track(track)) {
            broadcast.on_frame(track, frame, now);
        }
    }

    /// Periodic work: late init segments, and dropping broadcasts nobody reads. Returns the
    /// engine tracks this session should unsubscribe from.
    pub fn tick(&mut self, now: Instant) -> Vec<TrackId> {
        let mut released = Vec::new();
        let idle: Vec<PeerId> = self
            .broadcasts
            .iter_mut()
            .filter_map(|(peer, b)| (b.idle_for(now) >= IDLE_BROADCAST).then(|| peer.clone()))
            .collect();
        for peer in idle {
            debug!(room = %self.room, peer = %peer, "broadcast unread: dropped");
            self.broadcasts.remove(&peer);
            if let Some(known) = self.known.get(&peer) {
                released.extend(known.tracks.values().map(|t| t.id.clone()));
            }
        }
        for broadcast in self.broadcasts.values_mut() {
            broadcast.refresh(now);
        }
        released
    }

    pub fn has_peer(&self, peer: &PeerId) -> bool {
        peer != &self.me && self.peers.contains_key(peer)
    }

    /// The room catalog's reader.
    pub fn room_catalog(&mut self) -> Option<TrackReader> {
        let namespace = self.reader.namespace.clone();
        self.reader.get_track_reader(&namespace, CATALOG_TRACK)
    }

    /// A reader for `track` of `peer`'s broadcast, creating the broadcast (and this session's
    /// engine subscriptions to the peer's tracks) on first use.
    pub fn peer_track(
        &mut self,
        peer: &PeerId,
        track: &PeerTrack,
        rpc: &EndpointRpc,
        now: Instant,
    ) -> Result<(TrackReader, BroadcastUser), RequestRefusal> {
        if !self.has_peer(peer) {
            return Err(RequestRefusal::DoesNotExist(format!("no peer {peer} in room {}", self.room)));
        }
        if !self.broadcasts.contains_key(peer) {
            let broadcast = PeerBroadcast::new(&self.room, peer.clone(), now)
                .ok_or_else(|| RequestRefusal::DoesNotExist("the broadcast is closed".into()))?;
            debug!(room = %self.room, peer = %peer, "broadcast started");
            self.broadcasts.insert(peer.clone(), broadcast);
            let engines: Vec<TrackId> =
                self.known.get(peer).map(|k| k.tracks.values().map(|t| t.id.clone()).collect()).unwrap_or_default();
            for engine in engines {
                self.attach(peer, &engine, rpc);
            }
            if let Some(broadcast) = self.broadcasts.get_mut(peer) {
                broadcast.refresh(now);
            }
        }
        let name = match track {
            PeerTrack::Catalog => CATALOG_TRACK.to_owned(),
            PeerTrack::Init => naming::INIT_TRACK.to_owned(),
            PeerTrack::Media(id) => {
                let engine = self.known.get(peer).and_then(|known| known.tracks.get(id)).map(|info| &info.id);
                if let Some(reason) = engine.and_then(|engine| self.refused.get(engine)) {
                    return Err(RequestRefusal::NotSupported(format!("track {id} of {peer}: {reason}")));
                }
                naming::media_track_name(*id)
            }
        };
        self.broadcasts
            .get_mut(peer)
            .and_then(|broadcast| broadcast.reader(&name))
            .ok_or_else(|| RequestRefusal::DoesNotExist(format!("peer {peer} has no track {name}")))
    }
}
