//! The room audio mixer, an engine service any transport can use: one mix per room, and for
//! each listener a *minus-one* — the N loudest speakers of the room except the listener itself
//! — as 20 ms frames of 48 kHz mono PCM. A SIP phone hears the room through it; so could any
//! other single-stream audio client. The mix also tells who the active speaker is
//! ([`speaker`]), for outputs that follow them.
//!
//! A room's mix runs on its own task while it has listeners. It joins the room as an internal
//! peer (`junction:mixer`, subscribe-only, [`TransportKind::Internal`], taking no seat:
//! [`JoinRequest::takes_seat`] is off) and subscribes to every
//! audio track, so each track is decoded once per room however many listeners there are;
//! tracks in codecs it does not decode arrive through the engine's shared transcoded variants.
//! It leaves the room when its last listener goes.
//!
//! The task runs under [`supervise::restart`](junction_engine::supervise::restart): if it panics, its
//! endpoint is dropped (the mixer leaves the room), and a new task joins again and carries on
//! for the same listeners, which hear a short gap. If the room is gone by then, the listeners
//! are told the mix has ended.

pub mod core;
mod room;
pub mod speaker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use junction_core::{ContractError, Grants, PeerId, RoomId, TransportKind};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use junction_engine::engine::{DuplicatePolicy, Engine, JoinRequest};
use junction_engine::supervise;

pub use self::core::{FRAME_SAMPLES, MIX_RATE, MixConfig, MixCore, MixFrame};
pub use self::room::SourceDecoder;

/// The identity the mixer joins rooms under (only a name: nothing treats it specially).
const IDENTITY: &str = "junction:mixer";

/// Mix frames queued per listener; a listener that falls further behind loses frames.
const LISTENER_QUEUE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("the mixer cannot join room {room}: {source}")]
    Join { room: RoomId, source: ContractError },
}

struct ListenerSlot {
    id: u64,
    identity: PeerId,
    frames: mpsc::Sender<Vec<f32>>,
}

/// What a room's mix task shares with its listeners.
struct RoomMix {
    listeners: Mutex<Vec<ListenerSlot>>,
    /// The room's active speaker ([`speaker::SpeakerTracker`]), for listeners that follow it.
    speaker: watch::Sender<Option<PeerId>>,
    stop: CancellationToken,
}

/// The mixer service. Cheap to clone; every clone is the same mixer.
#[derive(Clone)]
pub struct Mixer {
    engine: Engine,
    config: MixConfig,
    rooms: Arc<Mutex<HashMap<RoomId, Arc<RoomMix>>>>,
    next_listener: Arc<AtomicU64>,
}

impl Mixer {
    pub fn new(engine: Engine, config: MixConfig) -> Self {
        Self { engine, config, rooms: Arc::default(), next_listener: Arc::new(AtomicU64::new(1)) }
    }

    /// Rooms with a running mix.
    pub fn active_rooms(&self) -> usize {
        self.rooms.lock().len()
    }

    /// Starts hearing `room` as `listener` (whose own tracks are left out of what it hears).
    /// Starts the room's mix if it is not running. Must be called inside a tokio runtime.
    pub fn listen(&self, room: &RoomId, listener: &PeerId) -> Result<MixListener, MixError> {
        let mut rooms = self.rooms.lock();
        let mix = match rooms.get(room).filter(|m| !m.stop.is_cancelled()) {
            Some(mix) => mix.clone(),
            None => {
                let mix = Arc::new(RoomMix {
                    listeners: Mutex::new(Vec::new()),
                    speaker: watch::channel(None).0,
                    stop: CancellationToken::new(),
                });
                let joined = self.join(room, DuplicatePolicy::Reject)?;
                tokio::spawn(self.clone().supervise(room.clone(), mix.clone(), joined));
                rooms.insert(room.clone(), mix.clone());
                mix
            }
        };
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        mix.listeners.lock().push(ListenerSlot { id, identity: listener.clone(), frames: tx });
        Ok(MixListener { id, frames: rx, mix })
    }

    /// Runs a room's mix task, and a new one (joining again) each time it panics, until it ends.
    async fn supervise(self, room: RoomId, mix: Arc<RoomMix>, joined: junction_engine::room::Joined) {
        let mut first = Some(joined);
        supervise::restart("mixer", || {
            // A restart replaces the mixer's endpoint in the room, should the old one linger.
            let joined = first.take().map_or_else(|| self.join(&room, DuplicatePolicy::Replace), Ok);
            let (config, rooms, mix, room) = (self.config, self.rooms.clone(), mix.clone(), room.clone());
            async move {
                match joined {
                    Ok(joined) => room::RoomTask::new(joined, mix, config, rooms, room).run().await,
                    Err(err) => {
                        tracing::warn!(room = %room, "room mix not restarted: {err}");
                        room::end_mix(&rooms, &room, &mix);
                    }
                }
            }
        })
        .await;
    }

    fn join(&self, room: &RoomId, on_duplicate: DuplicatePolicy) -> Result<junction_engine::room::Joined, MixError> {
        let identity = PeerId::new(IDENTITY)
            .map_err(|e| MixError::Join { room: room.clone(), source: ContractError::Invalid(e.to_string()) })?;
        let mut request = JoinRequest::new(room.clone(), identity, TransportKind::Internal);
        request.name = Some("Audio mixer".into());
        request.grants = Grants::SUBSCRIBE_ONLY;
        request.auto_subscribe = false;
        request.on_duplicate = on_duplicate;
        request.takes_seat = false;
        self.engine.join(request).map_err(|source| MixError::Join { room: room.clone(), source })
    }
}

/// One listener's minus-one of a room. Dropping it stops listening; the room's mix stops with
/// its last listener.
pub struct MixListener {
    id: u64,
    frames: mpsc::Receiver<Vec<f32>>,
    mix: Arc<RoomMix>,
}

impl MixListener {
    /// The next 20 ms frame (960 samples, 48 kHz mono); `None` once the room's mix has ended
    /// (the room closed).
    pub async fn recv(&mut self) -> Option<Vec<f32>> {
        self.frames.recv().await
    }

    /// A frame if one is queued.
    pub fn try_recv(&mut self) -> Option<Vec<f32>> {
        self.frames.try_recv().ok()
    }

    /// The room's active speaker, as it changes (`None` until someone has spoken).
    pub fn speaker(&self) -> watch::Receiver<Option<PeerId>> {
        self.mix.speaker.subscribe()
    }
}

impl Drop for MixListener {
    fn drop(&mut self) {
        let mut listeners = self.mix.listeners.lock();
        listeners.retain(|l| l.id != self.id);
    }
}

#[cfg(test)]
mod tests;
