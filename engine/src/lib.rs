//! junction-engine: the engine every transport plugs into. Rooms keyed by room id, endpoints
//! keyed by (room id, peer id), tracks as pub-sub channels with bounded per-subscriber queues,
//! keyframe and bitrate feedback, simulcast layer selection, shared codec adaptation, and the
//! room event stream.
//!
//! A transport calls [`Engine::join`] for each peer and gets an [`Endpoint`]: its RPC half
//! ([`EndpointRpc`]) publishes, subscribes and yields room events; its media half
//! ([`EndpointMedia`]) yields frames and feedback. See `docs/architecture.md`.

pub mod adapt;
pub mod clock;
mod config;
mod credential;
pub mod endpoint;
pub mod engine;
pub mod events;
pub mod gate;
mod join;
pub mod meter;
mod queue;
pub mod room;
mod shared;
pub mod stats;
mod subscription;
pub mod supervise;
pub mod track;

pub use adapt::{AdapterRegistry, FrameTranscoder, LayerMove, TranscodeError, TranscoderFactory};
pub use clock::{Clock, ManualClock, SystemClock};
pub use endpoint::{Endpoint, EndpointMedia, EndpointRpc};
pub use engine::{DuplicatePolicy, Engine, EngineConfig, JoinRequest, PeerRole, RoomAdminError};
pub use events::{EngineEvent, RoomEndReason, RoomEvent};
pub use meter::{LinkQuality, PictureSize, RoomStats};
pub use room::{Joined, PeerSnapshot, RoomSnapshot, SubscribedTrack};
pub use stats::EngineStats;
pub use track::{Demand, SendError, TrackPublisher};
