//! What can go wrong on a MoQ session, and the draft-18 wire code each failure is reported
//! with: session termination codes (draft-ietf-moq-transport-18 §15.10.1, carried in QUIC
//! CONNECTION_CLOSE or WebTransport CLOSE_WEBTRANSPORT_SESSION) for a session that cannot go on,
//! and REQUEST_ERROR codes (§15.10.2) for one request that fails while the session carries on.
//! Mapping happens here, once, at the edge.

use junction_auth::AuthError;
use junction_core::{ContractError, IdError, RoomId};
use moq_transport::message::RequestErrorCode;
use moq_transport::serve::ServeError;

/// Session termination codes of draft-18 that Junction sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Termination {
    NoError = 0x0,
    InternalError = 0x1,
    Unauthorized = 0x2,
    ProtocolViolation = 0x3,
    KeyValueFormattingError = 0x6,
    InvalidPath = 0x8,
    MalformedPath = 0x9,
    ControlMessageTimeout = 0x11,
    MalformedAuthToken = 0x16,
    ExpiredAuthToken = 0x18,
}

impl Termination {
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        match self {
            Termination::NoError => "NO_ERROR",
            Termination::InternalError => "INTERNAL_ERROR",
            Termination::Unauthorized => "UNAUTHORIZED",
            Termination::ProtocolViolation => "PROTOCOL_VIOLATION",
            Termination::KeyValueFormattingError => "KEY_VALUE_FORMATTING_ERROR",
            Termination::InvalidPath => "INVALID_PATH",
            Termination::MalformedPath => "MALFORMED_PATH",
            Termination::ControlMessageTimeout => "CONTROL_MESSAGE_TIMEOUT",
            Termination::MalformedAuthToken => "MALFORMED_AUTH_TOKEN",
            Termination::ExpiredAuthToken => "EXPIRED_AUTH_TOKEN",
        }
    }

    /// The code moq-transport chose for a failure of its own (SETUP decoding, a malformed
    /// control message), as draft-18 names it.
    pub fn from_session_error(err: &moq_transport::session::SessionError) -> Termination {
        use moq_transport::session::SessionError as E;
        match err {
            E::InvalidPath(_) => Termination::MalformedPath,
            E::Decode(_) | E::WrongSize | E::RoleViolation | E::ProtocolViolation(_) | E::Duplicate => {
                Termination::ProtocolViolation
            }
            E::InvalidRequestId | E::TooManyRequests => Termination::ProtocolViolation,
            _ => Termination::InternalError,
        }
    }
}

/// Longest reason phrase sent to a peer (draft-18 caps reason phrases at 1024 bytes).
const MAX_REASON: usize = 512;

/// Cuts `reason` to [`MAX_REASON`] bytes on a character boundary.
pub fn reason_phrase(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Why a connection was not admitted as a session in a room.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdmissionError {
    #[error("the connect URL names no room: connect to https://host:port/<room>")]
    NoRoom,
    #[error("the connect path {path:?} is not /<room>")]
    BadPath { path: String },
    #[error("the connect path names an invalid room: {0}")]
    BadRoom(IdError),
    #[error("no client token: put ?jwt=<token> in the connect URL or an AUTHORIZATION TOKEN in SETUP")]
    MissingToken,
    #[error("the AUTHORIZATION TOKEN in SETUP is malformed: {0}")]
    SetupToken(String),
    #[error("token refused: {0}")]
    Auth(AuthError),
    #[error("room {room} does not exist")]
    RoomNotFound { room: RoomId },
    #[error("?{key}={value:?} in the connect URL is not a {key} codec MoQ carries ({allowed})")]
    BadCodec { key: &'static str, value: String, allowed: &'static str },
    #[error("cannot join the room: {0}")]
    Join(String),
}

impl AdmissionError {
    pub fn termination(&self) -> Termination {
        match self {
            AdmissionError::NoRoom | AdmissionError::RoomNotFound { .. } => Termination::InvalidPath,
            AdmissionError::BadPath { .. } | AdmissionError::BadRoom(_) | AdmissionError::BadCodec { .. } => {
                Termination::MalformedPath
            }
            AdmissionError::MissingToken => Termination::Unauthorized,
            AdmissionError::SetupToken(_) => Termination::KeyValueFormattingError,
            AdmissionError::Auth(AuthError::Expired { .. }) => Termination::ExpiredAuthToken,
            AdmissionError::Auth(AuthError::Malformed(_)) => Termination::MalformedAuthToken,
            AdmissionError::Auth(_) => Termination::Unauthorized,
            AdmissionError::Join(_) => Termination::InternalError,
        }
    }

    pub fn from_join(err: ContractError) -> AdmissionError {
        match err {
            ContractError::RoomNotFound { room } => AdmissionError::RoomNotFound { room },
            other => AdmissionError::Join(other.to_string()),
        }
    }
}

/// A request (SUBSCRIBE, PUBLISH_NAMESPACE, ...) refused while the session carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    DoesNotExist(String),
    /// A per-session limit is reached.
    #[error("{0}")]
    TooMany(String),
    /// The track exists but cannot be given to this subscriber (no codec it takes reaches it).
    #[error("{0}")]
    NotSupported(String),
}

impl RequestRefusal {
    pub fn code(&self) -> u64 {
        match self {
            RequestRefusal::Unauthorized(_) => RequestErrorCode::Unauthorized as u64,
            RequestRefusal::DoesNotExist(_) => RequestErrorCode::DoesNotExist as u64,
            RequestRefusal::TooMany(_) => RequestErrorCode::ExcessiveLoad as u64,
            RequestRefusal::NotSupported(_) => RequestErrorCode::NotSupported as u64,
        }
    }

    /// As a serve error, which moq-transport turns into REQUEST_ERROR with this code.
    pub fn into_serve_error(self) -> ServeError {
        ServeError::Closed(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_failures_map_to_draft_codes() {
        assert_eq!(AdmissionError::MissingToken.termination().code(), 0x2);
        assert_eq!(AdmissionError::Auth(AuthError::BadSignature).termination().code(), 0x2);
        assert_eq!(AdmissionError::Auth(AuthError::Expired { expired_at: 1 }).termination().code(), 0x18);
        assert_eq!(AdmissionError::Auth(AuthError::Malformed("x".into())).termination().code(), 0x16);
        let room = RoomId::new("ghost").unwrap();
        assert_eq!(AdmissionError::RoomNotFound { room }.termination().code(), 0x8);
        assert_eq!(AdmissionError::BadPath { path: "/a/b".into() }.termination().code(), 0x9);
        assert_eq!(RequestRefusal::DoesNotExist("x".into()).code(), 0x10);
        assert_eq!(RequestRefusal::Unauthorized("x".into()).code(), 0x1);
        assert_eq!(RequestRefusal::TooMany("x".into()).code(), 0x9);
    }

    #[test]
    fn reason_phrases_are_cut_on_char_boundaries() {
        let long = "é".repeat(600);
        let cut = reason_phrase(&long);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
        assert_eq!(reason_phrase("short"), "short");
    }
}
