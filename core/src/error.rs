//! Errors of the vocabulary: bad ids, and the contract's refusals a transport maps to its
//! protocol's own error (HTTP status, RTMP status, SIP response, MoQ error code).

use crate::ids::{PeerId, RoomId, TrackId};

pub use crate::ids::IdError;

/// Why the engine refused a request from a transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    #[error("room {room} does not exist")]
    RoomNotFound { room: RoomId },
    #[error("room {room} is full ({max_peers} peers)")]
    RoomFull { room: RoomId, max_peers: u32 },
    #[error("room {room} is closing")]
    RoomClosing { room: RoomId },
    #[error("identity {peer} is already in room {room}")]
    IdentityTaken { room: RoomId, peer: PeerId },
    #[error("peer {peer} is not in room {room}")]
    PeerNotFound { room: RoomId, peer: PeerId },
    #[error("this session of {peer} has left room {room}")]
    SessionClosed { room: RoomId, peer: PeerId },
    #[error("{peer} may not publish in room {room}")]
    PublishNotAllowed { room: RoomId, peer: PeerId },
    #[error("{peer} may not subscribe in room {room}")]
    SubscribeNotAllowed { room: RoomId, peer: PeerId },
    #[error("track {track} does not exist in room {room}")]
    TrackNotFound { room: RoomId, track: TrackId },
    #[error("track {track} is not published by {peer}")]
    NotTrackOwner { track: TrackId, peer: PeerId },
    #[error("{peer} already publishes a {what} track named {name:?}")]
    DuplicateTrack { peer: PeerId, name: String, what: &'static str },
    #[error("{peer} cannot subscribe to its own track {track}")]
    OwnTrack { peer: PeerId, track: TrackId },
    #[error("no codec accepted by the subscriber can carry track {track} ({codec}); accepted: {accepted}")]
    NoCodecPath { track: TrackId, codec: String, accepted: String },
    #[error("track {track} cannot be transcoded for this subscriber: {reason}")]
    TranscodeUnavailable { track: TrackId, reason: String },
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded { what: &'static str, limit: usize },
    #[error("the credential already holds {limit} live sessions, the most one token may hold at once")]
    TooManySessions { limit: usize },
    #[error("invalid request: {0}")]
    Invalid(String),
}
