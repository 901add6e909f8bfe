//! The engine's configuration: queue sizes, feedback pacing, the defaults of rooms a join
//! creates, per-peer caps and the credential rules.

use std::time::Duration;

use junction_core::RoomOptions;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a frame may wait in a subscribing peer's queue before it is dropped as stale
    /// (video to the track's next keyframe; see `queue.rs`).
    pub subscriber_queue_delay: Duration,
    /// Frames a subscribing peer's queue holds at most, however fresh: the memory bound.
    pub subscriber_queue_frames: usize,
    /// Feedback items (keyframe requests, bitrate hints) queued per publishing peer.
    pub feedback_queue: usize,
    /// Room events queued per peer before the peer counts as overloaded and is closed.
    pub event_queue: usize,
    /// The least time between two keyframe requests for one layer of one track.
    pub keyframe_request_interval: Duration,
    /// Options of rooms that are created by a join rather than through the API.
    pub room_defaults: RoomOptions,
    /// Whether joining a room that does not exist creates it.
    pub auto_create_rooms: bool,
    pub max_tracks_per_peer: usize,
    pub max_data_message_bytes: usize,
    /// Capacity of the engine-wide event stream; a consumer that falls further behind loses events.
    pub event_stream_capacity: usize,
    /// Live sessions one token (by [`SessionCredential::token_id`](junction_core::SessionCredential::token_id)) may hold at once; 0: no limit.
    pub max_sessions_per_token: usize,
    /// Whether a session ends ([`CloseReason::CredentialExpired`](junction_core::CloseReason::CredentialExpired)) when its credential expires.
    pub end_sessions_at_expiry: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            subscriber_queue_delay: Duration::from_millis(250),
            subscriber_queue_frames: 1024,
            feedback_queue: 64,
            event_queue: 4096,
            keyframe_request_interval: Duration::from_millis(500),
            room_defaults: RoomOptions::default(),
            auto_create_rooms: true,
            max_tracks_per_peer: 32,
            max_data_message_bytes: 64 * 1024,
            event_stream_capacity: 4096,
            max_sessions_per_token: 4,
            end_sessions_at_expiry: true,
        }
    }
}
