//! Client JWTs: HS256 tokens naming room, identity, display name, metadata and grants, with
//! issue and expiry times and a unique id (`jti`). The JWT header names the API key that signed
//! the token (`kid`); verification uses that key, or the `default` key for a token without one.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use junction_core::ids::random_id;
use junction_core::{Grants, PeerId, RoomId, SessionCredential};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys::{ApiKey, DEFAULT_KEY_ID, KeyRing};
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
    /// The token's unique id, stamped at minting (tokens minted before it existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl ClientClaims {
    /// The credential these claims grant; `jwt` is the token they came from, whose digest names
    /// it when it has no `jti`.
    pub fn into_credential(self, jwt: &str) -> Credential {
        let session = self.session_credential(jwt);
        Credential {
            room: self.room,
            identity: self.sub,
            name: self.name,
            metadata: self.metadata,
            grants: self.grants,
            ingress: None,
            session,
        }
    }

    /// What the engine needs of this token for a session: its id and its expiry.
    pub fn session_credential(&self, jwt: &str) -> SessionCredential {
        let token_id = match &self.jti {
            Some(jti) => format!("jti:{jti}"),
            None => format!("sha256:{}", short_digest(jwt.as_bytes())),
        };
        SessionCredential { token_id: Some(token_id), expires_at_ms: Some(self.exp.saturating_mul(1000)) }
    }
}

/// The first 16 bytes of a SHA-256 digest, in hex: names a token without revealing it.
fn short_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().take(16).map(|b| format!("{b:02x}")).collect()
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

pub(crate) fn mint(key: &ApiKey, request: &TokenRequest, now: u64) -> Result<String, AuthError> {
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
        jti: Some(random_id("TK_", 20)),
    };
    let header = Header { kid: Some(key.id.clone()), ..Header::new(Algorithm::HS256) };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(key.secret.as_bytes()))
        .map_err(|err| AuthError::Mint(err.to_string()))
}

pub(crate) fn verify(keys: &KeyRing, jwt: &str, now: u64) -> Result<ClientClaims, AuthError> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|err| AuthError::Malformed(err.to_string()))?;
    let kid = header.kid.as_deref().unwrap_or(DEFAULT_KEY_ID);
    let key = keys.by_id(kid).ok_or_else(|| AuthError::UnknownKey { kid: kid.to_owned() })?;
    verify_with(key.secret.as_bytes(), jwt, now)
}

fn verify_with(secret: &[u8], jwt: &str, now: u64) -> Result<ClientClaims, AuthError> {
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

    fn key(id: &str, secret: &str) -> ApiKey {
        ApiKey::new(id, secret)
    }

    fn ring(keys: &[(&str, &str)]) -> KeyRing {
        KeyRing::new(keys.iter().map(|(id, secret)| key(id, secret)).collect(), keys[0].0).unwrap()
    }

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let jwt = mint(&key("default", "secret-0123456789ab"), &request(60), 1_000).unwrap();
        assert!(looks_like_jwt(&jwt));
        let claims = verify(&ring(&[("default", "secret-0123456789ab")]), &jwt, 1_030).unwrap();
        assert_eq!(claims.sub.as_str(), "alice");
        assert_eq!(claims.room.as_str(), "lobby");
        assert_eq!(claims.exp, 1_060);
        assert!(!claims.grants.publish && claims.grants.subscribe);
        assert_eq!(claims.metadata["seat"], 4);
        assert!(claims.jti.as_deref().is_some_and(|j| j.starts_with("TK_")));
        let session = claims.session_credential(&jwt);
        assert_eq!(session.expires_at_ms, Some(1_060_000));
        assert_eq!(session.token_id, Some(format!("jti:{}", claims.jti.unwrap())));
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused_with_reasons() {
        let secret = "secret-0123456789ab";
        let jwt = mint(&key("default", secret), &request(60), 1_000).unwrap();
        let keys = ring(&[("default", secret)]);
        assert_eq!(verify(&keys, &jwt, 1_060), Err(AuthError::Expired { expired_at: 1_060 }));
        assert_eq!(verify(&ring(&[("default", "other-0123456789abc")]), &jwt, 1_001), Err(AuthError::BadSignature));
        assert!(matches!(verify(&keys, "eyJ.nope.nope", 1_001), Err(AuthError::Malformed(_))));
        let mut tampered = jwt.clone();
        tampered.insert(jwt.find('.').unwrap() + 3, 'x');
        assert!(verify(&keys, &tampered, 1_001).is_err());
        assert!(matches!(mint(&key("default", secret), &request(0), 1_000), Err(AuthError::Mint(_))));
    }

    #[test]
    fn the_header_names_the_key_and_verification_uses_it() {
        let (old, new) = (key("default", "old-secret-0123456789"), key("k2", "new-secret-0123456789"));
        let by_old = mint(&old, &request(60), 1_000).unwrap();
        let by_new = mint(&new, &request(60), 1_000).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&by_new).unwrap().kid.as_deref(), Some("k2"));
        let both = ring(&[("default", "old-secret-0123456789"), ("k2", "new-secret-0123456789")]);
        assert!(verify(&both, &by_old, 1_001).is_ok());
        assert!(verify(&both, &by_new, 1_001).is_ok());
        // The old key removed: what it signed is refused, what the new one signed still works.
        let rotated = ring(&[("k2", "new-secret-0123456789")]);
        assert_eq!(verify(&rotated, &by_old, 1_001), Err(AuthError::UnknownKey { kid: "default".into() }));
        assert!(verify(&rotated, &by_new, 1_001).is_ok());
        // A token naming k2 but signed with the old secret does not verify.
        let forged = mint(&key("k2", "old-secret-0123456789"), &request(60), 1_000).unwrap();
        assert_eq!(verify(&both, &forged, 1_001), Err(AuthError::BadSignature));
    }

    /// Claims as an older or foreign minter would write them: no `jti`, no `kid` in the header.
    #[derive(Serialize)]
    struct Raw<'a> {
        iss: &'a str,
        sub: &'a str,
        room: &'a str,
        iat: u64,
        nbf: u64,
        exp: u64,
    }

    fn sign_raw(sub: &str, secret: &str) -> String {
        let raw = Raw { iss: ISSUER, sub, room: "lobby", iat: 0, nbf: 0, exp: 9_999 };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &raw, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    #[test]
    fn a_token_without_kid_is_tried_against_the_default_key_only() {
        let keys = ring(&[("k2", "new-secret-0123456789"), ("default", "old-secret-0123456789")]);
        let claims = verify(&keys, &sign_raw("alice", "old-secret-0123456789"), 10).unwrap();
        assert_eq!(claims.jti, None);
        let digest_id = claims.session_credential("a.b.c").token_id.unwrap();
        assert!(digest_id.starts_with("sha256:") && digest_id.len() == 7 + 32, "{digest_id}");
        assert_eq!(verify(&keys, &sign_raw("alice", "new-secret-0123456789"), 10), Err(AuthError::BadSignature));
    }

    #[test]
    fn tokens_with_bad_ids_inside_are_malformed() {
        let secret = "secret-0123456789ab";
        let jwt = sign_raw("a/b", secret);
        let verdict = verify(&ring(&[("default", secret)]), &jwt, 10);
        assert!(matches!(verdict, Err(AuthError::Malformed(m)) if m.contains("contains '/'")));
    }
}
