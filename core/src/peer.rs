//! Peers as the room sees them: identity, display name, metadata, grants and the transport they
//! arrived over.

use serde::{Deserialize, Serialize};

use crate::ids::{PeerId, SessionId};

/// What a peer may do in its room. Omitted fields in a token or API request default to
/// publish + subscribe, no admin, no phone calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default = "yes")]
    pub publish: bool,
    #[serde(default = "yes")]
    pub subscribe: bool,
    #[serde(default)]
    pub admin: bool,
    /// May place phone calls from the room (`POST /v1/rooms/{room}/sip/calls`) through the
    /// outbound trunks the operator configured. Never implied by `admin`.
    #[serde(default)]
    pub sip_call: bool,
}

fn yes() -> bool {
    true
}

impl Default for Grants {
    fn default() -> Self {
        Self { publish: true, subscribe: true, admin: false, sip_call: false }
    }
}

impl Grants {
    pub const PUBLISH_ONLY: Grants = Grants { publish: true, subscribe: false, admin: false, sip_call: false };
    pub const SUBSCRIBE_ONLY: Grants = Grants { publish: false, subscribe: true, admin: false, sip_call: false };
}

/// What the engine needs to know of the credential a session was opened with: which token it
/// was (sessions per token are counted by it) and when it stops being valid (the session ends
/// then, unless the operator turned that off). Empty for peers without a client credential
/// (phones dialling in through a trunk, the engine's own peers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCredential {
    /// A stable id of the token or stream key: the JWT's `jti`, or a digest of the token.
    pub token_id: Option<String>,
    /// When the credential expires, in unix milliseconds.
    pub expires_at_ms: Option<u64>,
}

/// Which protocol a peer arrived over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Webrtc,
    Whip,
    Whep,
    Rtmp,
    Srt,
    Sip,
    Moq,
    /// Server-side peers (tests, tools, the engine's own services).
    Internal,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Webrtc => "webrtc",
            TransportKind::Whip => "whip",
            TransportKind::Whep => "whep",
            TransportKind::Rtmp => "rtmp",
            TransportKind::Srt => "srt",
            TransportKind::Sip => "sip",
            TransportKind::Moq => "moq",
            TransportKind::Internal => "internal",
        }
    }
}

/// A peer in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub identity: PeerId,
    pub session: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    pub grants: Grants,
    pub transport: TransportKind,
    /// The client software, as it named itself (a browser's User-Agent); see [`client_label`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Unix time in milliseconds.
    pub joined_at_ms: u64,
}

/// Longest client label kept (a User-Agent can be any length).
pub const MAX_CLIENT_LABEL: usize = 200;

/// A client's self-description from the network (User-Agent and the like) made safe to keep and
/// show: control characters dropped, whitespace trimmed, at most [`MAX_CLIENT_LABEL`]
/// characters; `None` when nothing is left.
pub fn client_label(raw: &str) -> Option<String> {
    let label: String = raw.chars().filter(|c| !c.is_control()).take(MAX_CLIENT_LABEL).collect();
    let label = label.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_label_keeps_printable_text_and_caps_it() {
        assert_eq!(client_label("  OBS-Studio/31.0 \u{7}\n"), Some("OBS-Studio/31.0".to_owned()));
        assert_eq!(client_label("\t \r"), None);
        assert_eq!(client_label(&"é".repeat(1000)).map(|l| l.chars().count()), Some(MAX_CLIENT_LABEL));
    }
}
