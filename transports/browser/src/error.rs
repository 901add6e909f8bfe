//! Errors as the socket reports them: a stable `code` and a sentence, mapped once from the
//! engine's [`ContractError`]s (same codes as the REST API), credential problems, and the
//! signalling layer's own refusals.

use junction_auth::AuthError;
use junction_core::ContractError;
use junction_transport_api::ApiError;

/// An error sent to a client as `{"type": "error", "code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    pub code: &'static str,
    pub message: String,
}

impl WireError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<ContractError> for WireError {
    fn from(err: ContractError) -> Self {
        let api = ApiError::from(err);
        // The REST mapping's generic codes, made specific where the socket has no HTTP status.
        let code = match api.code {
            "forbidden" => "not_allowed",
            code => code,
        };
        WireError::new(code, api.message)
    }
}

impl From<AuthError> for WireError {
    fn from(err: AuthError) -> Self {
        let code = match err {
            AuthError::Expired { .. } => "token_expired",
            AuthError::NotYetValid { .. } => "token_not_yet_valid",
            AuthError::WrongRoom { .. } | AuthError::NotAllowed(_) | AuthError::WrongIngressKind { .. } => {
                "not_allowed"
            }
            AuthError::Mint(_) => "invalid_token_request",
            AuthError::Missing
            | AuthError::Malformed(_)
            | AuthError::BadSignature
            | AuthError::UnknownKey { .. }
            | AuthError::UnknownStreamKey => "unauthorized",
        };
        WireError::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::{PeerId, RoomId, TrackId};

    #[test]
    fn engine_and_auth_errors_keep_stable_codes() {
        let room = RoomId::new("r").unwrap();
        let track = TrackId::new("TR_x").unwrap();
        let err = WireError::from(ContractError::TrackNotFound { room: room.clone(), track });
        assert_eq!(err.code, "track_not_found");
        assert_eq!(err.message, "track TR_x does not exist in room r");
        let peer = PeerId::new("p").unwrap();
        assert_eq!(WireError::from(ContractError::PublishNotAllowed { room, peer }).code, "not_allowed");
        assert_eq!(WireError::from(AuthError::Expired { expired_at: 5 }).code, "token_expired");
        assert_eq!(WireError::from(AuthError::BadSignature).code, "unauthorized");
    }
}
