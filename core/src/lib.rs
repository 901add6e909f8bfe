//! junction-core: the vocabulary every Junction crate speaks — ids, codecs, media frames, track,
//! peer and room descriptions, and the transport contract (what flows over a peer's RPC half and
//! media half). Pure data and pure functions: no sockets, no tasks, no clocks of its own.

pub mod aac;
pub mod codec;
pub mod contract;
pub mod error;
pub mod frame;
pub mod h264;
pub mod ids;
pub mod peer;
pub mod room;
pub mod track;

pub use codec::{Codec, CodecConfigError, MediaKind};
pub use contract::{
    CloseReason, DataMessage, EndpointEvent, IngestEvent, LayerPreference, MediaOut, PublishRequest, SubscribeOptions,
};
pub use error::{ContractError, IdError};
pub use frame::{MediaFrame, MediaTime};
pub use ids::{PeerId, RoomId, SessionId, TrackId};
pub use peer::{Grants, PeerInfo, SessionCredential, TransportKind, client_label};
pub use room::{RoomInfo, RoomMode, RoomOptions, VideoCodecChoice};
pub use track::{CodecParams, LayerInfo, TrackInfo, TrackSource};
