//! junction-auth: who may do what. Client JWTs (HS256, signed with the server's API key) name a
//! room, an identity and grants; ingress stream keys bind an RTMP or WHIP publisher to a room and
//! identity. Every transport resolves the bearer credential its client presents through
//! [`Authority::resolve`], so all protocols accept the same tokens.

mod ingress;
mod token;

pub use ingress::{Ingress, IngressKind, IngressStore};
pub use token::{ClientClaims, TokenRequest};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use junction_core::{Grants, PeerId, RoomId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was presented")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not match this server's key")]
    BadSignature,
    #[error("the token expired at {expired_at} (unix seconds)")]
    Expired { expired_at: u64 },
    #[error("the token is not valid before {not_before} (unix seconds)")]
    NotYetValid { not_before: u64 },
    #[error("unknown stream key")]
    UnknownStreamKey,
    #[error("this stream key is for {expected} ingress, not {used}")]
    WrongIngressKind { expected: &'static str, used: &'static str },
    #[error("the credential is for room {granted}, not {requested}")]
    WrongRoom { granted: RoomId, requested: RoomId },
    #[error("the credential does not grant {0}")]
    NotAllowed(&'static str),
    #[error("cannot mint a token: {0}")]
    Mint(String),
}

/// What a resolved credential allows: a peer identity in one room, with grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Credential {
    pub room: RoomId,
    pub identity: PeerId,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub grants: Grants,
    /// Set when the credential was an ingress stream key.
    pub ingress: Option<Ingress>,
}

impl Credential {
    /// Checks the credential is for `room`.
    pub fn for_room(self, room: &RoomId) -> Result<Credential, AuthError> {
        if self.room != *room {
            return Err(AuthError::WrongRoom { granted: self.room, requested: room.clone() });
        }
        Ok(self)
    }

    pub fn require_publish(self) -> Result<Credential, AuthError> {
        if !self.grants.publish {
            return Err(AuthError::NotAllowed("publish"));
        }
        Ok(self)
    }

    pub fn require_subscribe(self) -> Result<Credential, AuthError> {
        if !self.grants.subscribe {
            return Err(AuthError::NotAllowed("subscribe"));
        }
        Ok(self)
    }
}

/// The server's credentials authority. Cheap to clone.
#[derive(Clone)]
pub struct Authority {
    api_key: Arc<str>,
    ingress: IngressStore,
}

impl Authority {
    /// An authority whose REST key — and client-token signing secret — is `api_key`.
    pub fn new(api_key: &str) -> Self {
        Self { api_key: Arc::from(api_key), ingress: IngressStore::default() }
    }

    /// Whether `presented` is the server's API key (constant-time comparison).
    pub fn is_api_key(&self, presented: &str) -> bool {
        let (a, b) = (presented.as_bytes(), self.api_key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    pub fn ingress(&self) -> &IngressStore {
        &self.ingress
    }

    /// Mints a client JWT.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, AuthError> {
        token::mint(self.api_key.as_bytes(), request, unix_now())
    }

    /// Verifies a client JWT: signature, expiry, and the shape of its claims.
    pub fn verify(&self, jwt: &str) -> Result<ClientClaims, AuthError> {
        token::verify(self.api_key.as_bytes(), jwt, unix_now())
    }

    /// Resolves a bearer credential: a client JWT, or else an ingress stream key of `kind`.
    pub fn resolve(&self, bearer: &str, kind: IngressKind) -> Result<Credential, AuthError> {
        let bearer = bearer.trim();
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        if token::looks_like_jwt(bearer) {
            return self.verify(bearer).map(ClientClaims::into_credential);
        }
        let ingress = self.ingress.find_by_key(bearer).ok_or(AuthError::UnknownStreamKey)?;
        if ingress.kind != kind {
            return Err(AuthError::WrongIngressKind { expected: ingress.kind.as_str(), used: kind.as_str() });
        }
        Ok(Credential {
            room: ingress.room.clone(),
            identity: ingress.identity.clone(),
            name: ingress.name.clone(),
            metadata: serde_json::Value::Null,
            grants: Grants::PUBLISH_ONLY,
            ingress: Some(ingress),
        })
    }

    /// Resolves a client JWT only (protocols without stream keys).
    pub fn resolve_token(&self, bearer: &str) -> Result<Credential, AuthError> {
        let bearer = bearer.trim();
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(bearer).map(ClientClaims::into_credential)
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("ingresses", &self.ingress.len()).finish_non_exhaustive()
    }
}

/// Longest lifetime a client token may be minted with.
pub fn token_max_ttl() -> Duration {
    token::MAX_TTL
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
