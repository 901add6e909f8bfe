//! The server's API keys: several at once, each an id and a secret, so a key can be rotated
//! without downtime. Any of them opens the REST API; each verifies the client tokens whose JWT
//! header names its id (`kid`); one of them signs new tokens. Also the one comparison of secrets
//! the codebase uses ([`secrets_equal`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The id of the key configured as the single `api_key`, and the key a token without `kid`
/// is checked against.
pub const DEFAULT_KEY_ID: &str = "default";

/// One API key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub secret: String,
}

impl ApiKey {
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { id: id.into(), secret: secret.into() }
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Why a set of keys cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no API key is configured")]
    Empty,
    #[error("key id {0:?} must be 1-64 characters of A-Z a-z 0-9 - _ .")]
    BadId(String),
    #[error("key id {0:?} is configured twice")]
    DuplicateId(String),
    #[error("the secret of key {0:?} must be at least {MIN_SECRET_LEN} characters, without spaces")]
    WeakSecret(String),
    #[error("keys {0:?} and {1:?} have the same secret")]
    SharedSecret(String, String),
    #[error("the signing key {0:?} is not among the configured keys")]
    UnknownSigningKey(String),
}

/// Shortest secret accepted for an API key or the webhook secret.
pub const MIN_SECRET_LEN: usize = 16;

/// Whether `secret` is long enough and has no whitespace or control characters.
pub fn is_strong_secret(secret: &str) -> bool {
    secret.len() >= MIN_SECRET_LEN && !secret.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The configured keys, and which one signs new tokens.
#[derive(Clone)]
pub(crate) struct KeyRing {
    keys: Vec<ApiKey>,
    signing: usize,
}

impl KeyRing {
    pub(crate) fn new(keys: Vec<ApiKey>, signing_id: &str) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for (i, key) in keys.iter().enumerate() {
            let id_ok = (1..=64).contains(&key.id.len())
                && key.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !id_ok {
                return Err(KeyError::BadId(key.id.clone()));
            }
            if !is_strong_secret(&key.secret) {
                return Err(KeyError::WeakSecret(key.id.clone()));
            }
            if let Some(other) = keys[..i].iter().find(|k| k.id == key.id) {
                return Err(KeyError::DuplicateId(other.id.clone()));
            }
            if let Some(other) = keys[..i].iter().find(|k| secrets_equal(k.secret.as_bytes(), key.secret.as_bytes())) {
                return Err(KeyError::SharedSecret(other.id.clone(), key.id.clone()));
            }
        }
        let signing = keys
            .iter()
            .position(|k| k.id == signing_id)
            .ok_or_else(|| KeyError::UnknownSigningKey(signing_id.to_owned()))?;
        Ok(Self { keys, signing })
    }

    /// One key, taken as it is (unit tests and tools that hold a key already checked).
    pub(crate) fn unchecked(key: ApiKey) -> Self {
        Self { keys: vec![key], signing: 0 }
    }

    pub(crate) fn signing(&self) -> &ApiKey {
        &self.keys[self.signing]
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&ApiKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The id of the key `presented` is, comparing it with every key in constant time.
    pub(crate) fn identify(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        // No early exit: the time taken does not depend on which key matched, if any.
        for key in &self.keys {
            if secrets_equal(presented.as_bytes(), key.secret.as_bytes()) {
                found = Some(key.id.as_str());
            }
        }
        found
    }

    pub(crate) fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }
}

/// Compares two secrets in constant time. Both are hashed first, so neither the position of the
/// first difference nor the length of the expected secret shows in the time taken.
pub fn secrets_equal(presented: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(presented), Sha256::digest(expected));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(
            vec![ApiKey::new("default", "old-secret-0123456789"), ApiKey::new("k2", "new-secret-0123456789")],
            "k2",
        )
        .unwrap()
    }

    #[test]
    fn every_key_opens_and_is_named() {
        let ring = ring();
        assert_eq!(ring.identify("old-secret-0123456789"), Some("default"));
        assert_eq!(ring.identify("new-secret-0123456789"), Some("k2"));
        assert_eq!(ring.identify("new-secret-012345678"), None);
        assert_eq!(ring.identify(""), None);
        assert_eq!(ring.signing().id, "k2");
        assert_eq!(ring.by_id("default").map(|k| k.secret.as_str()), Some("old-secret-0123456789"));
    }

    #[test]
    fn bad_key_sets_are_refused_with_reasons() {
        let key = |id: &str, secret: &str| ApiKey::new(id, secret);
        assert_eq!(KeyRing::new(vec![], "default").err(), Some(KeyError::Empty));
        assert_eq!(
            KeyRing::new(vec![key("a b", "secret-secret-secret")], "a b").err(),
            Some(KeyError::BadId("a b".into()))
        );
        assert_eq!(KeyRing::new(vec![key("a", "short")], "a").err(), Some(KeyError::WeakSecret("a".into())));
        assert_eq!(
            KeyRing::new(vec![key("a", "secret-secret-one"), key("a", "secret-secret-two")], "a").err(),
            Some(KeyError::DuplicateId("a".into()))
        );
        assert_eq!(
            KeyRing::new(vec![key("a", "secret-secret-one"), key("b", "secret-secret-one")], "a").err(),
            Some(KeyError::SharedSecret("a".into(), "b".into()))
        );
        assert_eq!(
            KeyRing::new(vec![key("a", "secret-secret-one")], "b").err(),
            Some(KeyError::UnknownSigningKey("b".into()))
        );
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(secrets_equal(b"s3cret", b"s3cret"));
        assert!(!secrets_equal(b"s3cre", b"s3cret"));
        assert!(!secrets_equal(b"s3creT", b"s3cret"));
        assert!(!secrets_equal(b"", b"s3cret"));
    }
}
