//! What a transport asks of the engine to bind a peer to a room ([`JoinRequest`]), and what
//! happens when the identity is already there ([`DuplicatePolicy`]).

use junction_core::{Codec, Grants, PeerId, RoomId, SessionCredential, TransportKind};

/// What happens when a peer joins with an identity that is already in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// The newer session replaces the older, which is closed with [`CloseReason::Replaced`](junction_core::CloseReason::Replaced).
    #[default]
    Replace,
    /// The join is refused with [`ContractError::IdentityTaken`](junction_core::ContractError::IdentityTaken).
    Reject,
}

/// A transport's request to bind a peer to a room.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub room: RoomId,
    pub identity: PeerId,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub grants: Grants,
    pub transport: TransportKind,
    /// Receive every track of the room (now and later) without asking. On by default.
    pub auto_subscribe: bool,
    /// Codecs the transport can deliver to this peer, best first (empty: any). Used for
    /// automatic subscriptions; tracks in other codecs are transcoded when the engine can.
    pub accept_codecs: Vec<Codec>,
    pub on_duplicate: DuplicatePolicy,
    /// Whether the peer counts against the room's `max_peers`. On by default; off for engine
    /// services that join rooms to serve the peers in them (the room audio mixer).
    pub takes_seat: bool,
    /// The credential the peer presented: counted against its token's sessions, and the
    /// session ends when it expires. Empty (the default) for peers without one.
    pub credential: SessionCredential,
}

impl JoinRequest {
    pub fn new(room: RoomId, identity: PeerId, transport: TransportKind) -> Self {
        Self {
            room,
            identity,
            name: None,
            metadata: serde_json::Value::Null,
            grants: Grants::default(),
            transport,
            auto_subscribe: true,
            accept_codecs: Vec::new(),
            on_duplicate: DuplicatePolicy::Replace,
            takes_seat: true,
            credential: SessionCredential::default(),
        }
    }

    /// The same request, bound to the credential the peer presented.
    pub fn with_credential(self, credential: SessionCredential) -> Self {
        Self { credential, ..self }
    }
}
