//! Client JWTs: HS256 tokens naming room, identity, display name, metadata and grants, with
//! issue and expiry times.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use junction_core::{Grants, PeerId, RoomId};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Credential};

/// The issuer stamped into every token.
pub const ISSUER: &str = "junction";

/// Longest lifetime a token may be minted with.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The claims inside a client JWT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientClaims {
    pub iss: String,
    /// The peer's identity.
    pub sub: PeerId,
    pub room: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub grants: Grants,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
}

impl ClientClaims {
    pub fn into_credential(self) -> Credential {
        Credential {
            room: self.room,
            identity: self.sub,
            name: self.name,
            metadata: self.metadata,
            grants: self.grants,
            ingress: None,
        }
    }
}

/// What to put in a new token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub room: RoomId,
    pub identity: PeerId,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub grants: Grants,
    pub ttl: Duration,
}

pub(crate) fn mint(secret: &[u8], request: &TokenRequest, now: u64) -> Result<String, AuthError> {
    if request.ttl.is_zero() || request.ttl > MAX_TTL {
        return Err(AuthError::Mint(format!("ttl must be between 1 s and {} s", MAX_TTL.as_secs())));
    }
    let claims = ClientClaims {
        iss: ISSUER.to_owned(),
        sub: request.identity.clone(),
        room: request.room.clone(),
        name: request.name.clone(),
        metadata: request.metadata.clone(),
        grants: request.grants,
        iat: now,
        nbf: now.saturating_sub(5),
        exp: now + request.ttl.as_secs(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .map_err(|err| AuthError::Mint(err.to_string()))
}

pub(crate) fn verify(secret: &[u8], jwt: &str, now: u64) -> Result<ClientClaims, AuthError> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    let data =
        jsonwebtoken::decode::<ClientClaims>(jwt, &DecodingKey::from_secret(secret), &validation).map_err(|err| {
            match err.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::Malformed("only HS256 tokens are accepted".into()),
                _ => AuthError::Malformed(err.to_string()),
            }
        })?;
    let claims = data.claims;
    // Expiry is checked here, against our clock, so the error can say when it expired.
    if claims.exp <= now {
        return Err(AuthError::Expired { expired_at: claims.exp });
    }
    if claims.nbf > now {
        return Err(AuthError::NotYetValid { not_before: claims.nbf });
    }
    Ok(claims)
}

/// A JWT has three dot-separated base64url parts; stream keys have none.
pub(crate) fn looks_like_jwt(bearer: &str) -> bool {
    bearer.split('.').count() == 3 && bearer.starts_with("eyJ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ttl: u64) -> TokenRequest {
        TokenRequest {
            room: RoomId::new("lobby").unwrap(),
            identity: PeerId::new("alice").unwrap(),
            name: Some("Alice".into()),
            metadata: serde_json::json!({"seat": 4}),
            grants: Grants { subscribe: true, ..Grants::SUBSCRIBE_ONLY },
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let jwt = mint(b"secret", &request(60), 1_000).unwrap();
        assert!(looks_like_jwt(&jwt));
        let claims = verify(b"secret", &jwt, 1_030).unwrap();
        assert_eq!(claims.sub.as_str(), "alice");
        assert_eq!(claims.room.as_str(), "lobby");
        assert_eq!(claims.exp, 1_060);
        assert!(!claims.grants.publish && claims.grants.subscribe);
        assert_eq!(claims.metadata["seat"], 4);
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused_with_reasons() {
        let jwt = mint(b"secret", &request(60), 1_000).unwrap();
        assert_eq!(verify(b"secret", &jwt, 1_060), Err(AuthError::Expired { expired_at: 1_060 }));
        assert_eq!(verify(b"other", &jwt, 1_001), Err(AuthError::BadSignature));
        assert!(matches!(verify(b"secret", "eyJ.nope.nope", 1_001), Err(AuthError::Malformed(_))));
        let mut tampered = jwt.clone();
        tampered.insert(jwt.find('.').unwrap() + 3, 'x');
        assert!(verify(b"secret", &tampered, 1_001).is_err());
        assert!(matches!(mint(b"secret", &request(0), 1_000), Err(AuthError::Mint(_))));
    }

    #[test]
    fn tokens_with_bad_ids_inside_are_malformed() {
        #[derive(Serialize)]
        struct Raw<'a> {
            iss: &'a str,
            sub: &'a str,
            room: &'a str,
            iat: u64,
            nbf: u64,
            exp: u64,
        }
        let raw = Raw { iss: ISSUER, sub: "a/b", room: "lobby", iat: 0, nbf: 0, exp: 9_999 };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &raw, &EncodingKey::from_secret(b"k")).unwrap();
        assert!(matches!(verify(b"k", &jwt, 10), Err(AuthError::Malformed(m)) if m.contains("contains '/'")));
    }
}
