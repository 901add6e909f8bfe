//! The HTTP pieces every HTTP surface of Junction shares — the REST API in `server`, WHIP/WHEP,
//! the WebSocket endpoint, transports' own REST routes. Errors always look like
//! `{"error": {"code": "room_not_found", "message": "..."}}` with the matching status.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use junction_auth::AuthError;
use junction_core::{ContractError, IdError};
use serde::de::DeserializeOwned;

/// Largest JSON body the API reads.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// An HTTP error with a stable machine-readable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// A bad field in a request, named in the message.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::bad_request("invalid_field", format!("{field}: {problem}"))
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code, "message": self.message}})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::WrongRoom { .. } | AuthError::NotAllowed(_) | AuthError::WrongIngressKind { .. } => {
                ApiError::forbidden(err.to_string())
            }
            AuthError::Mint(_) => ApiError::unprocessable("invalid_token_request", err.to_string()),
            _ => ApiError::unauthorized(err.to_string()),
        }
    }
}

/// A change the state store could not keep (disk full, database locked): 503, and the change
/// is not made, so what the API reports stays what a restart would bring back.
impl From<junction_store::StoreError> for ApiError {
    fn from(err: junction_store::StoreError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "state_store_unavailable", err.to_string())
    }
}

impl From<ContractError> for ApiError {
    fn from(err: ContractError) -> Self {
        let message = err.to_string();
        match err {
            ContractError::RoomNotFound { .. } => ApiError::not_found("room_not_found", message),
            ContractError::PeerNotFound { .. } => ApiError::not_found("peer_not_found", message),
            ContractError::TrackNotFound { .. } => ApiError::not_found("track_not_found", message),
            ContractError::RoomFull { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "room_full", message),
            ContractError::RoomClosing { .. } => ApiError::conflict("room_closing", message),
            ContractError::IdentityTaken { .. } => ApiError::conflict("identity_taken", message),
            ContractError::DuplicateTrack { .. } => ApiError::conflict("duplicate_track", message),
            ContractError::PublishNotAllowed { .. } | ContractError::SubscribeNotAllowed { .. } => {
                ApiError::forbidden(message)
            }
            ContractError::NotTrackOwner { .. } | ContractError::OwnTrack { .. } => ApiError::forbidden(message),
            ContractError::SessionClosed { .. } => ApiError::not_found("session_not_found", message),
            ContractError::NoCodecPath { .. } => ApiError::unprocessable("no_codec", message),
            ContractError::TranscodeUnavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "transcode_unavailable", message)
            }
            ContractError::LimitExceeded { .. } => ApiError::unprocessable("limit_exceeded", message),
            ContractError::TooManySessions { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_sessions", message)
            }
            ContractError::Invalid(_) => ApiError::bad_request("invalid_request", message),
        }
    }
}

/// Parses a path segment as an id, answering 400 naming the parameter when it is not one.
pub fn path_id<T>(param: &str, raw: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = IdError>,
{
    raw.parse().map_err(|err: IdError| ApiError::invalid_field(param, err))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
/// The client software a request names (its User-Agent), made safe to keep and show (see
/// [`junction_core::client_label`]).
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::USER_AGENT)?;
    junction_core::client_label(&String::from_utf8_lossy(raw.as_bytes()))
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// A JSON request body: requires a JSON content type, limits the size (413), and names the
/// offending field when it does not fit the expected shape (400).
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| {
            let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        });
        let body = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {MAX_JSON_BODY} bytes"),
                )
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        match is_json {
            Some(true) => {}
            // An empty body with no content type means "all defaults".
            None if body.is_empty() => return parse_json(b"{}").map(ApiJson),
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "expected Content-Type: application/json",
                ));
            }
        }
        parse_json(if body.is_empty() { b"{}" } else { &body }).map(ApiJson)
    }
}

/// Deserialises JSON, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request("invalid_json", format!("malformed JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request("invalid_field", inner.to_string())
        } else {
            ApiError::invalid_field(&path, inner)
        }
    })?;
    de.end().map_err(|err| ApiError::bad_request("invalid_json", format!("malformed JSON: {err}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::RoomId;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: RoomId,
        max_peers: Option<u32>,
    }

    #[test]
    fn json_errors_name_the_field() {
        let err = parse_json::<Body>(br#"{"name": "a/b"}"#).unwrap_err();
        assert_eq!(err.code, "invalid_field");
        assert!(err.message.starts_with("name: room \"a/b\" contains '/'"), "{}", err.message);
        let err = parse_json::<Body>(br#"{"name": "a", "max_peers": "many"}"#).unwrap_err();
        assert!(err.message.starts_with("max_peers: invalid type"), "{}", err.message);
        let err = parse_json::<Body>(br#"{"name": "a", "colour": 1}"#).unwrap_err();
        assert!(err.message.contains("unknown field `colour`"), "{}", err.message);
        let err = parse_json::<Body>(br#"{"name": "#).unwrap_err();
        assert_eq!(err.code, "invalid_json");
        let err = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(err.message.contains("missing field `name`"), "{}", err.message);
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        let _ = RoomId::new("x");
    }
}

/// Who is calling a `/v1` route. The server's credential check puts it in the request's
/// extensions (`axum::Extension<Principal>`), so a route that needs more than the check gave
/// (placing phone calls, minting tokens) can tell an operator from a room's client.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The holder of one of the server's API keys, named by its id.
    Operator { key_id: String },
    /// A client token (it carries the admin grant for its room to get this far).
    Client(junction_auth::ClientClaims),
}

impl Principal {
    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator { .. })
    }
}
