//! What a transport asks of the engine to bind a peer to a room ([`JoinRequest`]), and what
//! happens when the identity is already there ([`DuplicatePolicy`]).

use junction_core::{Codec, Grants, PeerId, RoomId, SessionCredential, SessionId, TransportKind};

/// What happens when a peer joins with an identity that is already in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// The newer session replaces the older, which is closed with [`CloseReason::Replaced`](junction_core::CloseReason::Replaced).
    #[default]
    Replace,
    /// The join is refused with [`ContractError::IdentityTaken`](junction_core::ContractError::IdentityTaken).
    Reject,
}

/// What a peer is to the room, beyond the client a transport serves (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerRole {
    /// A client of this server.
    #[default]
    Client,
    /// A server-side service that watches the room (the cluster's per-room relay peer): it
    /// hears the room's events and may subscribe, but the room does not show it — it takes no
    /// seat, keeps no room open, appears in no list or event, receives no data message or
    /// signal, and may not publish.
    Service,
    /// The stand-in of a peer connected to another node of the cluster. It keeps that peer's
    /// session id and join time, takes no seat (its own node admitted it), and the engine-wide
    /// event stream does not report it or its tracks (its own node does, once). Local peers see
    /// it like any other peer; its tracks are published with their origin's ids
    /// ([`crate::EndpointRpc::publish_as`]) and fed by the cluster's relay.
    Mirror { session: SessionId, joined_at_ms: u64 },
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
    /// Whether the peer's decoders take frames only in presentation order (WebRTC's do): H.264
    /// with B-frames then reaches it re-encoded without. Off by default.
    pub presentation_order_only: bool,
    pub on_duplicate: DuplicatePolicy,
    /// Whether the peer counts against the room's `max_peers`. On by default; off for engine
    /// services that join rooms to serve the peers in them (the room audio mixer).
    pub takes_seat: bool,
    /// The credential the peer presented: counted against its token's sessions, and the
    /// session ends when it expires. Empty (the default) for peers without one.
    pub credential: SessionCredential,
    pub role: PeerRole,
    /// The client software (see [`junction_core::client_label`]), for operators.
    pub client: Option<String>,
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
            presentation_order_only: false,
            on_duplicate: DuplicatePolicy::Replace,
            takes_seat: true,
            credential: SessionCredential::default(),
            role: PeerRole::Client,
            client: None,
        }
    }

    /// The same request, bound to the credential the peer presented.
    pub fn with_credential(self, credential: SessionCredential) -> Self {
        Self { credential, ..self }
    }
}
