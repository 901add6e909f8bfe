//! WHIP/WHEP errors as RFC 9725 wants them: the status says what kind of failure it is, the
//! JSON body (`{"error": {"code", "message"}}`, as everywhere in Junction) says why.

use axum::http::StatusCode;
use junction_transport_api::ApiError;
use junction_webrtc::SessionError;

pub(crate) fn from_session(err: SessionError) -> ApiError {
    let message = err.to_string();
    match err {
        SessionError::BadSdp(_) | SessionError::OfferRefused(_) => ApiError::bad_request("bad_sdp", message),
        SessionError::NoCodec { .. } => ApiError::unprocessable("no_codec", message),
        SessionError::BadCandidate { .. } => ApiError::bad_request("bad_candidate", message),
        SessionError::SdpTooLarge { limit, .. } => crate::limits::too_large(limit),
        SessionError::TooManyMediaLines { .. } => ApiError::bad_request("too_many_media_lines", message),
        SessionError::TooManyCandidates { .. } => ApiError::bad_request("too_many_candidates", message),
        // WHIP/WHEP never renegotiate from the server's side.
        SessionError::NoOfferPending | SessionError::AnswerRefused(_) => ApiError::conflict("no_offer", message),
        SessionError::Closed => ApiError::not_found("session_not_found", message),
    }
}

pub(crate) fn unsupported_media_type(expected: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("expected Content-Type: {expected}"),
    )
}

pub(crate) fn unknown_session(kind: &str, room: &str, id: &str) -> ApiError {
    ApiError::not_found("session_not_found", format!("no {kind} session {id} in room {room}"))
}

pub(crate) fn precondition_failed(etag: &str) -> ApiError {
    ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "etag_mismatch",
        format!("If-Match does not match the ICE session's ETag {etag}"),
    )
}
