//! junction-auth: who may do what. Client JWTs (HS256, signed with one of the server's API keys,
//! named in the JWT header) name a room, an identity and grants; ingress stream keys bind an RTMP
//! or WHIP publisher to a room and identity. Every transport resolves the bearer credential its
//! client presents through [`Authority::resolve`], so all protocols accept the same tokens.

mod delegate;
mod ingress;
mod keys;
mod token;

pub use delegate::{Escalation, check_delegation};
pub use ingress::{Ingress, IngressKind, IngressStore};
pub use keys::{ApiKey, DEFAULT_KEY_ID, KeyError, MIN_SECRET_LEN, is_strong_secret, secrets_equal};
pub use token::{ClientClaims, TokenRequest};

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use junction_core::{Grants, PeerId, RoomId, SessionCredential};

use crate::keys::KeyRing;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credential was presented")]
    Missing,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token's signature does not match this server's key")]
    BadSignature,
    #[error("the token was signed with key {kid:?}, which this server does not hold (rotated out?)")]
    UnknownKey { kid: String },
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
    /// Which token this was and when it expires, for the engine (`JoinRequest::credential`).
    pub session: SessionCredential,
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
    keys: Arc<KeyRing>,
    ingress: IngressStore,
}

impl Authority {
    /// An authority with one API key, id `default`: the REST key and the client-token signing
    /// secret. The key is not checked for strength (the server's configuration does that).
    pub fn new(api_key: &str) -> Self {
        let key = ApiKey::new(DEFAULT_KEY_ID, api_key);
        let keys = KeyRing::unchecked(key);
        Self { keys: Arc::new(keys), ingress: IngressStore::default() }
    }

    /// An authority with several API keys; `signing` names the one new tokens are signed with.
    pub fn with_keys(keys: Vec<ApiKey>, signing: &str) -> Result<Self, KeyError> {
        Ok(Self { keys: Arc::new(KeyRing::new(keys, signing)?), ingress: IngressStore::default() })
    }

    /// The id of the API key `presented` is, if it is one (every key compared in constant time).
    pub fn api_key_id(&self, presented: &str) -> Option<&str> {
        self.keys.identify(presented)
    }

    /// Whether `presented` is one of the server's API keys.
    pub fn is_api_key(&self, presented: &str) -> bool {
        self.api_key_id(presented).is_some()
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_key_id(&self) -> &str {
        &self.keys.signing().id
    }

    pub fn ingress(&self) -> &IngressStore {
        &self.ingress
    }

    /// Mints a client JWT, signed with the signing key and naming it in its header.
    pub fn mint(&self, request: &TokenRequest) -> Result<String, AuthError> {
        token::mint(self.keys.signing(), request, unix_now())
    }

    /// Verifies a client JWT: the key its header names (or `default`), its signature, expiry,
    /// and the shape of its claims.
    pub fn verify(&self, jwt: &str) -> Result<ClientClaims, AuthError> {
        token::verify(&self.keys, jwt, unix_now())
    }

    /// Resolves a bearer credential: a client JWT, or else an ingress stream key of `kind`.
    pub fn resolve(&self, bearer: &str, kind: IngressKind) -> Result<Credential, AuthError> {
        let bearer = bearer.trim();
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        if token::looks_like_jwt(bearer) {
            return self.verify(bearer).map(|claims| claims.into_credential(bearer));
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
            session: SessionCredential { token_id: Some(format!("ingress:{}", ingress.id)), expires_at_ms: None },
            ingress: Some(ingress),
        })
    }

    /// Resolves a client JWT only (protocols without stream keys).
    pub fn resolve_token(&self, bearer: &str) -> Result<Credential, AuthError> {
        let bearer = bearer.trim();
        if bearer.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(bearer).map(|claims| claims.into_credential(bearer))
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.keys.ids().collect();
        f.debug_struct("Authority")
            .field("keys", &keys)
            .field("signing", &self.signing_key_id())
            .field("ingresses", &self.ingress.len())
            .finish_non_exhaustive()
    }
}

/// Longest lifetime a client token may be minted with.
pub fn token_max_ttl() -> Duration {
    token::MAX_TTL
}

/// The current time in unix seconds, the clock tokens are minted and checked against.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
