//! The engine: rooms keyed by room id, endpoints keyed by (room id, peer id). Transports join
//! peers through it; the REST API creates, lists, deletes rooms and kicks peers through it; a
//! timer drives room expiry. The room map's lock is taken only to find, create or remove a room
//! — never while a room's own lock is held, and never for a frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use junction_core::{CloseReason, Codec, ContractError, PeerId, RoomId, RoomInfo, RoomOptions, TrackId, TrackInfo};
use parking_lot::RwLock;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::adapt::AdapterRegistry;
use crate::clock::{Clock, SystemClock};
pub use crate::config::EngineConfig;
use crate::credential::TokenSessions;
use crate::events::{EngineEvent, RoomEndReason, RoomEvent};
pub use crate::join::{DuplicatePolicy, JoinRequest, PeerRole};
use crate::meter::{PictureSize, RoomStats};
use crate::room::{Joined, Room, RoomSnapshot};
use crate::shared::Shared;
use crate::stats::{Counters, EngineStats};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomAdminError {
    #[error("room {room} already exists")]
    RoomExists { room: RoomId },
    #[error("room {room} does not exist")]
    RoomNotFound { room: RoomId },
    #[error("peer {peer} is not in room {room}")]
    PeerNotFound { room: RoomId, peer: PeerId },
    #[error("track {track} is not published in room {room}")]
    TrackNotFound { room: RoomId, track: TrackId },
}

/// The engine. Cheap to clone; every clone is the same engine.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    rooms: Arc<RwLock<HashMap<RoomId, Arc<Room>>>>,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self::with_parts(config, Arc::new(SystemClock), AdapterRegistry::default())
    }

    /// An engine with its own clock (tests) and codec adapters.
    pub fn with_parts(config: EngineConfig, clock: Arc<dyn Clock>, adapters: AdapterRegistry) -> Self {
        let (events, _) = broadcast::channel(config.event_stream_capacity.max(1));
        let epoch = clock.now();
        Self {
            shared: Arc::new(Shared {
                config,
                clock,
                counters: Counters::new(),
                epoch,
                adapters,
                token_sessions: TokenSessions::default(),
                events,
            }),
            rooms: Arc::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Emits a component event (`component_started`, `_finished`, `_failed`) on the engine's
    /// event stream, for the services that run components in rooms. Room, peer and track events
    /// come from the rooms themselves and are not accepted here.
    pub fn announce_component(&self, event: RoomEvent) {
        if matches!(
            event,
            RoomEvent::ComponentStarted { .. }
                | RoomEvent::ComponentFinished { .. }
                | RoomEvent::ComponentFailed { .. }
        ) {
            self.shared.emit(event);
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The engine-wide room event stream (webhooks, dashboards).
    pub fn subscribe_events(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.events.subscribe()
    }

    pub fn stats(&self) -> EngineStats {
        self.shared.counters.snapshot()
    }

    /// Puts an event that no room of this engine emitted into the engine-wide stream: the
    /// cluster reports there what happened on a node that died (its peers' departures).
    pub fn report(&self, event: RoomEvent) {
        self.shared.emit(event);
    }

    /// Creates a room; without a name the engine picks one.
    pub fn create_room(&self, name: Option<RoomId>, options: RoomOptions) -> Result<RoomInfo, RoomAdminError> {
        let mut rooms = self.rooms.write();
        let name = match name {
            Some(name) => name,
            None => loop {
                let candidate = RoomId::generate();
                if !rooms.contains_key(&candidate) {
                    break candidate;
                }
            },
        };
        if rooms.get(&name).is_some_and(|r| !r.is_closed()) {
            return Err(RoomAdminError::RoomExists { room: name });
        }
        let room = Room::new(name.clone(), options, self.shared.clone(), false);
        let info = room.info();
        rooms.insert(name, room);
        Ok(info)
    }

    /// Opens this node's copy of a room another node of the cluster started (nothing when it is
    /// already open here). Its start and end are not put in the engine-wide event stream: the
    /// node that started it reports them, once.
    pub fn adopt_room(&self, name: RoomId, options: RoomOptions) {
        let mut rooms = self.rooms.write();
        if rooms.get(&name).is_some_and(|r| !r.is_closed()) {
            return;
        }
        let room = Room::new(name.clone(), options, self.shared.clone(), true);
        rooms.insert(name, room);
    }

    pub fn rooms(&self) -> Vec<RoomInfo> {
        let rooms: Vec<Arc<Room>> = self.rooms.read().values().cloned().collect();
        let mut infos: Vec<RoomInfo> = rooms.iter().filter(|r| !r.is_closed()).map(|r| r.info()).collect();
        infos.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.name.cmp(&b.name)));
        infos
    }

    fn find(&self, room: &RoomId) -> Option<Arc<Room>> {
        self.rooms.read().get(room).filter(|r| !r.is_closed()).cloned()
    }

    pub fn room_exists(&self, room: &RoomId) -> bool {
        self.find(room).is_some()
    }

    pub fn room(&self, room: &RoomId) -> Option<RoomSnapshot> {
        self.find(room).map(|r| r.snapshot())
    }

    /// The video codec a WebRTC publisher about to join `room` should be steered to in its SDP
    /// answer (see [`junction_core::VideoCodecChoice`]); for a room not open yet, what an
    /// auto-created one would ask for. `None` keeps the publisher's preference.
    pub fn publisher_video_codec(&self, room: &RoomId) -> Option<Codec> {
        match self.find(room) {
            Some(found) => found.publisher_video_codec(),
            None => self.shared.config.room_defaults.video_codec.fixed(),
        }
    }

    /// Deletes a room, disconnecting every peer in it with [`CloseReason::RoomDeleted`].
    pub fn delete_room(&self, room: &RoomId) -> Result<(), RoomAdminError> {
        let found = self.rooms.write().remove(room).filter(|r| !r.is_closed());
        let found = found.ok_or_else(|| RoomAdminError::RoomNotFound { room: room.clone() })?;
        found.close(RoomEndReason::Deleted);
        Ok(())
    }

    /// The live measures of a room's peers, tracks and subscriptions.
    pub fn room_stats(&self, room: &RoomId, picture_size: PictureSize) -> Option<RoomStats> {
        self.find(room).map(|r| r.stats(picture_size))
    }

    /// An operator mutes or unmutes a track: while muted its frames reach no subscriber.
    pub fn mute_track(&self, room: &RoomId, track: &TrackId, muted: bool) -> Result<TrackInfo, RoomAdminError> {
        let found = self.find(room).ok_or_else(|| RoomAdminError::RoomNotFound { room: room.clone() })?;
        found
            .hold_track(track, muted)
            .map_err(|_| RoomAdminError::TrackNotFound { room: room.clone(), track: track.clone() })
    }

    /// Removes a peer from a room ([`CloseReason::Kicked`]).
    pub fn kick(&self, room: &RoomId, peer: &PeerId) -> Result<(), RoomAdminError> {
        let found = self.find(room).ok_or_else(|| RoomAdminError::RoomNotFound { room: room.clone() })?;
        found
            .kick(peer, CloseReason::Kicked)
            .map_err(|_| RoomAdminError::PeerNotFound { room: room.clone(), peer: peer.clone() })
    }

    /// Binds a peer to a room, creating the room when allowed.
    pub fn join(&self, request: JoinRequest) -> Result<Joined, ContractError> {
        // A room found closing is replaced by a fresh one; bounded in case of a pathological race.
        for _ in 0..4 {
            let room = match self.find(&request.room) {
                Some(room) => room,
                None if self.shared.config.auto_create_rooms => self.get_or_create(&request.room),
                None => return Err(ContractError::RoomNotFound { room: request.room.clone() }),
            };
            match room.join(request.clone()) {
                Err(ContractError::RoomClosing { .. }) => continue,
                other => return other,
            }
        }
        Err(ContractError::RoomClosing { room: request.room })
    }

    fn get_or_create(&self, name: &RoomId) -> Arc<Room> {
        let mut rooms = self.rooms.write();
        if let Some(room) = rooms.get(name).filter(|r| !r.is_closed()) {
            return room.clone();
        }
        let room = Room::new(name.clone(), self.shared.config.room_defaults.clone(), self.shared.clone(), false);
        rooms.insert(name.clone(), room.clone());
        room
    }

    /// Ends rooms that were empty for their timeout or reached their maximum duration, and
    /// sessions whose credential expired.
    pub fn tick(&self) {
        let now = self.shared.clock.now();
        let now_ms = self.shared.clock.unix_ms();
        let rooms: Vec<Arc<Room>> = self.rooms.read().values().cloned().collect();
        for room in rooms {
            if self.shared.config.end_sessions_at_expiry {
                room.end_expired_sessions(now_ms);
            }
            let Some(reason) = room.expiry(now) else { continue };
            let removed = {
                let mut map = self.rooms.write();
                match map.get(&room.id) {
                    Some(current) if Arc::ptr_eq(current, &room) => map.remove(&room.id),
                    _ => None,
                }
            };
            if removed.is_some() {
                debug!(room = %room.id, ?reason, "room expired");
                room.close(reason);
            }
        }
    }

    /// Calls [`Engine::tick`] every `period` until `shutdown` is cancelled.
    pub async fn run_timers(self, period: Duration, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => self.tick(),
            }
        }
    }

    /// Closes every room, telling each peer the server is shutting down.
    pub fn shutdown(&self) {
        let rooms: Vec<Arc<Room>> = self.rooms.write().drain().map(|(_, r)| r).collect();
        for room in rooms {
            room.close(RoomEndReason::ServerShutdown);
        }
    }
}
