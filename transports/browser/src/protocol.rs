//! The WebSocket signalling protocol's messages, both directions, as JSON objects with a `type`
//! field (documented message by message in `docs/protocol-websocket.md`), and the parsing of a
//! client's text frame into a [`Request`] with errors that say exactly what was wrong.
//!
//! Every client message may carry an `id` (string or number); replies and errors caused by that
//! message echo it. Unknown fields are refused, so a misspelt field is an error, not a silent no-op.

use junction_core::{
    Codec, LayerPreference, MediaKind, PeerId, PeerInfo, RoomId, RoomInfo, SessionId, TrackId, TrackInfo, TrackSource,
};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::WireError;

/// A direct call between two sessions, named by the server (`CA_` + random).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub String);

impl CallId {
    pub fn generate() -> Self {
        CallId(junction_core::ids::random_id("CA_", 12))
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Session ids travel as `PS_<hex>` strings.
pub mod session_id {
    use super::*;
    use serde::Deserializer;

    pub fn serialize<S: Serializer>(id: &SessionId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SessionId, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        raw.parse().map_err(serde::de::Error::custom)
    }

    pub fn serialize_opt<S: Serializer>(id: &Option<SessionId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }
}

/// A simulcast layer as clients name it: `"highest"` or a layer index (0 = lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireLayer {
    Index(u8),
    Named(LayerName),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerName {
    Highest,
}

impl From<WireLayer> for LayerPreference {
    fn from(layer: WireLayer) -> Self {
        match layer {
            WireLayer::Index(i) => LayerPreference::AtMost(i),
            WireLayer::Named(LayerName::Highest) => LayerPreference::Highest,
        }
    }
}

/// What a client asks for; the `type` field selects the variant.
///
/// On the wire the variant is the `type` field; [`parse`] moves it outside (`{"subscribe":
/// {...}}`) so serde can name the exact field at fault.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Joins the room the token names (or, anonymously, `room`).
    Join {
        room: Option<RoomId>,
        name: Option<String>,
        metadata: Option<Value>,
        /// The video codecs the client decodes (`["h264"]`); every browser codec when absent.
        receive: Option<Vec<String>>,
    },
    /// Ends the session: leaves the room, hangs up calls, closes the socket.
    Leave {},
    Ping {
        data: Option<Value>,
    },
    /// Changes this peer's display name and/or metadata.
    Update {
        name: Option<String>,
        metadata: Option<Value>,
    },
    Subscribe {
        track: TrackId,
        layer: Option<WireLayer>,
    },
    Unsubscribe {
        track: TrackId,
    },
    SetLayer {
        track: TrackId,
        layer: WireLayer,
    },
    Mute {
        track: TrackId,
        muted: bool,
    },
    /// A room data message: text in `payload`, or bytes in `payload_base64`.
    Data {
        payload: Option<String>,
        payload_base64: Option<String>,
        topic: Option<String>,
        #[serde(default)]
        to: Vec<PeerId>,
        #[serde(default = "yes")]
        reliable: bool,
    },
    /// Signalling for another peer of the room (mesh rooms: offer/answer/candidates).
    Signal {
        to: PeerId,
        payload: Value,
    },
    /// Starts a direct call to another session.
    Call {
        #[serde(with = "session_id")]
        to: SessionId,
        payload: Value,
    },
    /// Signalling within a direct call.
    CallSignal {
        call: CallId,
        payload: Value,
    },
    /// Ends (or declines) a direct call.
    Hangup {
        call: CallId,
    },
    /// An SDP offer for the peer's media connection to the server (SFU rooms); `tracks` says
    /// what the m-lines it sends on carry.
    Offer {
        sdp: String,
        #[serde(default)]
        tracks: Vec<WireTrackLabel>,
    },
    /// The answer to the server's last `offer`.
    Answer {
        sdp: String,
    },
    /// A trickled ICE candidate of the peer (`null`: no more candidates).
    Candidate {
        candidate: Option<String>,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u32>,
    },
}

/// What one m-line of a client's offer carries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTrackLabel {
    pub mid: String,
    #[serde(default)]
    pub source: TrackSource,
    pub name: Option<String>,
}

/// The room track one m-line of a server offer carries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfferedTrackView {
    pub mid: String,
    pub track: TrackId,
    pub peer: PeerId,
    pub kind: MediaKind,
    pub source: TrackSource,
}

fn yes() -> bool {
    true
}

impl ClientMessage {
    /// Every `type` a client may send, for the `unknown_type` error.
    pub const TYPES: &'static [&'static str] = &[
        "join",
        "leave",
        "ping",
        "update",
        "subscribe",
        "unsubscribe",
        "set_layer",
        "mute",
        "data",
        "signal",
        "call",
        "call_signal",
        "hangup",
        "offer",
        "answer",
        "candidate",
    ];
}

/// A parsed client message with the `id` it carried.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    /// The message's `type`.
    pub kind: String,
    pub message: ClientMessage,
}

/// Why a text frame is not a valid client message; the `id` and `type` are kept when they could
/// be read, so the error can echo them.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub id: Option<Value>,
    pub kind: Option<String>,
    pub error: WireError,
}

/// Parses one text frame.
pub fn parse(text: &str) -> Result<Request, ParseError> {
    let fail = |id: Option<Value>, kind: Option<String>, error: WireError| ParseError { id, kind, error };
    let value: Value = serde_json::from_str(text)
        .map_err(|err| fail(None, None, WireError::new("invalid_json", format!("malformed JSON: {err}"))))?;
    let Value::Object(mut object) = value else {
        return Err(fail(None, None, WireError::new("invalid_message", "a message must be a JSON object")));
    };
    let id = object.remove("id");
    if let Some(bad) = id.as_ref().filter(|v| !(v.is_string() || v.is_number())) {
        let message = format!("id must be a string or a number, not {bad}");
        return Err(fail(None, None, WireError::new("invalid_field", message)));
    }
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(other) => {
            let message = format!("type must be a string, not {other}");
            return Err(fail(id, None, WireError::new("invalid_field", message)));
        }
        None => return Err(fail(id, None, WireError::new("missing_type", "the message has no \"type\" field"))),
    };
    if !ClientMessage::TYPES.contains(&kind.as_str()) {
        let shown: String = kind.chars().take(64).collect();
        let message = format!("unknown message type {shown:?}; known: {}", ClientMessage::TYPES.join(", "));
        return Err(fail(id, None, WireError::new("unknown_type", message)));
    }
    object.remove("type");
    let tagged = Value::Object(serde_json::Map::from_iter([(kind.clone(), Value::Object(object))]));
    let message = serde_path_to_error::deserialize(tagged).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let message = if path == "." { format!("{kind}: {inner}") } else { format!("{path}: {inner}") };
        fail(id.clone(), Some(kind.clone()), WireError::new("invalid_field", message))
    })?;
    Ok(Request { id, kind, message })
}

/// A peer as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerView {
    pub identity: PeerId,
    /// The peer's signalling session, when it is a browser connected here (callable directly).
    #[serde(serialize_with = "session_id::serialize_opt", skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub metadata: Value,
    pub grants: junction_core::Grants,
    pub transport: junction_core::TransportKind,
    pub joined_at_ms: u64,
}

impl PeerView {
    pub fn new(info: PeerInfo, session: Option<SessionId>) -> Self {
        PeerView {
            identity: info.identity,
            session,
            name: info.name,
            metadata: info.metadata,
            grants: info.grants,
            transport: info.transport,
            joined_at_ms: info.joined_at_ms,
        }
    }
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every socket.
    Welcome {
        #[serde(with = "session_id")]
        session: SessionId,
        /// The secret that, with the session id, resumes this session on a new socket.
        resume_key: String,
        /// Whether this socket resumed an existing session.
        resumed: bool,
        identity: PeerId,
        /// The room the token names.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<RoomId>,
        anonymous: bool,
        direct_call: bool,
        reconnect_grace_s: u64,
        /// STUN/TURN servers for the client's peer connections.
        ice_servers: Vec<junction_webrtc::IceServer>,
    },
    Joined {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(with = "session_id")]
        session: SessionId,
        room: RoomInfo,
        you: PeerView,
        peers: Vec<PeerView>,
        tracks: Vec<TrackInfo>,
    },
    PeerJoined {
        peer: PeerView,
    },
    PeerUpdated {
        peer: PeerView,
    },
    PeerLeft {
        identity: PeerId,
        reason: &'static str,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track: TrackId,
        peer: PeerId,
    },
    TrackMuted {
        track: TrackId,
        muted: bool,
    },
    Subscribed {
        track: TrackId,
        codec: Codec,
    },
    Unsubscribed {
        track: TrackId,
    },
    SubscriptionFailed {
        track: TrackId,
        reason: String,
    },
    Data {
        from: PeerId,
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payload_base64: Option<String>,
        reliable: bool,
    },
    Signal {
        from: PeerId,
        #[serde(serialize_with = "session_id::serialize_opt", skip_serializing_if = "Option::is_none")]
        session: Option<SessionId>,
        payload: Value,
    },
    CallStarted {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        call: CallId,
        #[serde(with = "session_id")]
        to: SessionId,
    },
    IncomingCall {
        call: CallId,
        #[serde(with = "session_id")]
        from: SessionId,
        identity: PeerId,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        payload: Value,
    },
    CallSignal {
        call: CallId,
        payload: Value,
    },
    CallEnded {
        call: CallId,
        reason: &'static str,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
    /// Success of a request that carried an `id` and has no reply of its own.
    Ok {
        id: Value,
        request: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        delivered: Option<usize>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        /// The `type` of the message that caused it, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        request: Option<String>,
        code: &'static str,
        message: String,
    },
    /// The answer to the client's `offer`.
    Answer {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
        sdp: String,
    },
    /// A renegotiation offer from the server: the room tracks on its sending m-lines changed.
    Offer {
        sdp: String,
        tracks: Vec<OfferedTrackView>,
    },
    /// One of the server's ICE candidates (`null`: no more).
    Candidate {
        candidate: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
    },
    /// What the client sends on m-line `mid` is published as `track`.
    Published {
        mid: String,
        track: TrackInfo,
    },
    /// The session is over; the socket closes next.
    Closed {
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl ServerMessage {
    pub fn error(id: Option<Value>, request: Option<String>, error: WireError) -> Self {
        ServerMessage::Error { id, request, code: error.code, message: error.message }
    }

    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|err| {
            format!(r#"{{"type":"error","code":"internal","message":"cannot encode a message: {err}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(text: &str) -> (&'static str, String) {
        let err = parse(text).unwrap_err();
        (err.error.code, err.error.message)
    }

    #[test]
    fn parses_requests_with_ids() {
        let req = parse(r#"{"type":"join","id":7,"name":"Alice"}"#).unwrap();
        assert_eq!(req.id, Some(json!(7)));
        assert_eq!(req.kind, "join");
        assert_eq!(
            req.message,
            ClientMessage::Join { room: None, name: Some("Alice".into()), metadata: None, receive: None }
        );
        let req = parse(r#"{"type":"set_layer","track":"TR_abc","layer":1}"#).unwrap();
        assert!(matches!(req.message, ClientMessage::SetLayer { layer: WireLayer::Index(1), .. }));
        let req = parse(r#"{"type":"set_layer","track":"TR_abc","layer":"highest"}"#).unwrap();
        let ClientMessage::SetLayer { layer, .. } = req.message else { panic!() };
        assert_eq!(LayerPreference::from(layer), LayerPreference::Highest);
        let req = parse(r#"{"type":"data","payload":"hi"}"#).unwrap();
        assert!(matches!(req.message, ClientMessage::Data { reliable: true, ref to, .. } if to.is_empty()));
        let req = parse(r#"{"type":"call","to":"PS_1f","payload":{"sdp":"x"}}"#).unwrap();
        assert!(matches!(req.message, ClientMessage::Call { to: SessionId(0x1f), .. }));
        assert!(matches!(parse(r#"{"type":"leave"}"#).unwrap().message, ClientMessage::Leave {}));
    }

    #[test]
    fn bad_frames_get_precise_errors() {
        assert_eq!(code("{nope").0, "invalid_json");
        assert_eq!(code("[1,2]").0, "invalid_message");
        assert_eq!(code(r#"{"id":1}"#).0, "missing_type");
        let (c, m) = code(r#"{"type":"frobnicate"}"#);
        assert_eq!(c, "unknown_type");
        assert!(m.contains("\"frobnicate\"") && m.contains("subscribe"), "{m}");
        let (c, m) = code(r#"{"type":"subscribe"}"#);
        assert_eq!(c, "invalid_field");
        assert!(m.contains("missing field `track`"), "{m}");
        let (c, m) = code(r#"{"type":"subscribe","track":"a/b"}"#);
        assert_eq!(c, "invalid_field");
        assert!(m.starts_with("subscribe.track:"), "{m}");
        let (_, m) = code(r#"{"type":"mute","track":"TR_a","mutd":true}"#);
        assert!(m.contains("unknown field `mutd`"), "{m}");
        let (_, m) = code(r#"{"type":"mute","track":"TR_a","muted":"yes"}"#);
        assert!(m.starts_with("mute.muted: invalid type"), "{m}");
        let (_, m) = code(r#"{"type":"call","to":"bob","payload":{}}"#);
        assert!(m.contains("PS_<hex>"), "{m}");
        let (c, _) = code(r#"{"type":"ping","id":{"x":1}}"#);
        assert_eq!(c, "invalid_field");
        let err = parse(r#"{"type":"mute","id":"m1"}"#).unwrap_err();
        assert_eq!((err.id, err.kind.as_deref()), (Some(json!("m1")), Some("mute")));
    }

    #[test]
    fn server_messages_serialise_with_their_type() {
        let msg = ServerMessage::CallStarted { id: None, call: CallId("CA_x".into()), to: SessionId(255) };
        assert_eq!(serde_json::to_value(&msg).unwrap(), json!({"type":"call_started","call":"CA_x","to":"PS_ff"}));
        let msg = ServerMessage::error(Some(json!(3)), Some("join".into()), WireError::new("already_joined", "x"));
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"type":"error","id":3,"request":"join","code":"already_joined","message":"x"})
        );
    }
}
