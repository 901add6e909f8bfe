//! Ephemeral TURN credentials, the TURN REST API scheme (draft-uberti-behave-turn-rest, as coturn's
//! `use-auth-secret`): the username is `<expiry unix seconds>:<identity>`, the password is
//! base64(HMAC-SHA1(secret, username)). The server keeps no state per credential: it recomputes
//! the password from the username and refuses it once the expiry has passed. Credentials are
//! minted only for holders of a valid token (a WHIP/WHEP request, a WebSocket join, the tokens
//! endpoint), so only they can relay.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Longest identity put in a username (the rest is cut): STUN usernames stay under 513 bytes.
const MAX_IDENTITY: usize = 256;

/// Why a username is not a valid credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the username is not `<expiry>:<identity>`")]
    Malformed,
    #[error("the credential expired")]
    Expired,
}

/// The secret TURN passwords are derived from (`turn.secret`; every node of a cluster needs the
/// same one).
#[derive(Clone)]
pub struct TurnSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for TurnSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TurnSecret(..)")
    }
}

/// A username and password for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TurnSecret {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    /// A random secret, for a single node that was given none.
    pub fn random() -> Self {
        Self::new(rand::random::<[u8; 32]>().to_vec())
    }

    /// A credential for `identity`, valid for `ttl` from `now`.
    pub fn mint(&self, identity: &str, ttl: Duration, now: SystemTime) -> Credential {
        let identity: String = identity.chars().filter(|c| !c.is_control()).take(MAX_IDENTITY).collect();
        let username = format!("{}:{identity}", unix_seconds(now + ttl));
        let password = self.password(&username);
        Credential { username, password }
    }

    /// The password of `username`, if it is well formed and not expired at `now`.
    pub fn password_for(&self, username: &str, now: SystemTime) -> Result<String, CredentialError> {
        let (expiry, _identity) = username.split_once(':').ok_or(CredentialError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
        if expiry <= unix_seconds(now) {
            return Err(CredentialError::Expired);
        }
        Ok(self.password(username))
    }

    fn password(&self, username: &str) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_credential_verifies_until_it_expires() {
        let secret = TurnSecret::new(b"north".to_vec());
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let credential = secret.mint("alice", Duration::from_secs(600), now);
        assert_eq!(credential.username, "1000600:alice");
        assert_eq!(secret.password_for(&credential.username, now).unwrap(), credential.password);
        assert_eq!(
            secret.password_for(&credential.username, now + Duration::from_secs(600)),
            Err(CredentialError::Expired)
        );
        // Another secret derives another password: a credential of another deployment fails.
        assert_ne!(
            TurnSecret::new(b"south".to_vec()).password_for(&credential.username, now).unwrap(),
            credential.password
        );
        assert_eq!(secret.password_for("alice", now), Err(CredentialError::Malformed));
        assert_eq!(secret.password_for("soon:alice", now), Err(CredentialError::Malformed));
    }

    #[test]
    fn the_password_is_the_rest_api_hmac() {
        // Python's hmac/base64 (as coturn's use-auth-secret) gives the same for this pair.
        let secret = TurnSecret::new(b"secret".to_vec());
        assert_eq!(secret.password("1700000000:bob"), "YeMuUjjOaxvglmPbYS9o30UEIYg=");
    }
}
