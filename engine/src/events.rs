//! The engine-wide room event stream (room started/finished, peer joined/left, track
//! published/unpublished): what webhooks, metrics and operators' dashboards consume.

use junction_core::{CloseReason, PeerInfo, RoomId, RoomInfo, TrackInfo};
use serde::Serialize;

/// Why a room ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEndReason {
    /// Nobody was in it for its empty timeout.
    Empty,
    /// It reached its maximum duration.
    Expired,
    /// It was deleted through the API.
    Deleted,
    ServerShutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RoomEvent {
    RoomStarted {
        room: RoomInfo,
    },
    RoomFinished {
        room: RoomId,
        reason: RoomEndReason,
    },
    PeerJoined {
        room: RoomId,
        peer: PeerInfo,
    },
    PeerLeft {
        room: RoomId,
        peer: PeerInfo,
        reason: CloseReason,
    },
    TrackPublished {
        room: RoomId,
        track: TrackInfo,
    },
    TrackUnpublished {
        room: RoomId,
        track: TrackInfo,
    },
    /// A room component (a source or output the server runs in the room) is running; the
    /// component as its API shows it.
    ComponentStarted {
        room: RoomId,
        component: serde_json::Value,
    },
    /// A component stopped (deleted, or its source ended).
    ComponentFinished {
        room: RoomId,
        component: serde_json::Value,
    },
    /// A component failed; its `reason` says why.
    ComponentFailed {
        room: RoomId,
        component: serde_json::Value,
    },
}

impl RoomEvent {
    pub fn name(&self) -> &'static str {
        match self {
            RoomEvent::RoomStarted { .. } => "room_started",
            RoomEvent::RoomFinished { .. } => "room_finished",
            RoomEvent::PeerJoined { .. } => "peer_joined",
            RoomEvent::PeerLeft { .. } => "peer_left",
            RoomEvent::TrackPublished { .. } => "track_published",
            RoomEvent::TrackUnpublished { .. } => "track_unpublished",
            RoomEvent::ComponentStarted { .. } => "component_started",
            RoomEvent::ComponentFinished { .. } => "component_finished",
            RoomEvent::ComponentFailed { .. } => "component_failed",
        }
    }

    pub fn room(&self) -> &RoomId {
        match self {
            RoomEvent::RoomStarted { room } => &room.name,
            RoomEvent::RoomFinished { room, .. }
            | RoomEvent::PeerJoined { room, .. }
            | RoomEvent::PeerLeft { room, .. }
            | RoomEvent::TrackPublished { room, .. }
            | RoomEvent::TrackUnpublished { room, .. }
            | RoomEvent::ComponentStarted { room, .. }
            | RoomEvent::ComponentFinished { room, .. }
            | RoomEvent::ComponentFailed { room, .. } => room,
        }
    }
}

/// A room event with its unique id and time, as delivered to consumers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineEvent {
    pub id: String,
    /// Unix time in milliseconds.
    pub created_at_ms: u64,
    #[serde(flatten)]
    pub event: RoomEvent,
}
