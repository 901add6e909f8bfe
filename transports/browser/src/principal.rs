//! Who is on the other end of a socket: the identity, room, name, metadata and grants its token
//! names — or, when the configuration allows anonymous sessions and no token was given, a
//! generated identity with no room of its own.

use junction_auth::Authority;
use junction_core::ids::random_id;
use junction_core::{Grants, PeerId, RoomId, SessionCredential};

use crate::error::WireError;

#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub identity: PeerId,
    /// The room the token names; `None` for anonymous sessions, which name it in `join`.
    pub room: Option<RoomId>,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub grants: Grants,
    pub anonymous: bool,
    /// The token's id and expiry, for the engine.
    pub session: SessionCredential,
}

impl Principal {
    /// Resolves the `token` query parameter: a client JWT, or nothing at all when anonymous
    /// sessions are allowed.
    pub fn authenticate(authority: &Authority, token: Option<&str>, allow_anonymous: bool) -> Result<Self, WireError> {
        match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => {
                let credential = authority.resolve_token(token)?;
                Ok(Principal {
                    identity: credential.identity,
                    room: Some(credential.room),
                    name: credential.name,
                    metadata: credential.metadata,
                    grants: credential.grants,
                    anonymous: false,
                    session: credential.session,
                })
            }
            None if allow_anonymous => Ok(Principal::anonymous()),
            None => Err(WireError::new(
                "unauthorized",
                "no token: connect to /ws?token=<client token> (anonymous sessions are disabled)",
            )),
        }
    }

    fn anonymous() -> Self {
        // Not client input: `anon-` plus base62 is always a valid identity.
        let identity = PeerId::new(random_id("anon-", 10)).expect("a generated identity is valid");
        Principal {
            identity,
            room: None,
            name: None,
            metadata: serde_json::Value::Null,
            grants: Grants::default(),
            anonymous: true,
            session: SessionCredential::default(),
        }
    }

    /// Whether a reconnecting socket authenticated as `self` may take over a session that was
    /// opened as `original`: the same identity and room (anonymous sessions are proven by the
    /// resume key alone).
    pub fn may_resume(&self, original: &Principal) -> bool {
        if original.anonymous {
            return self.anonymous;
        }
        !self.anonymous && self.identity == original.identity && self.room == original.room
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn authority() -> Authority {
        Authority::new("unit-test-key-0123456789")
    }

    fn token(authority: &Authority, room: &str, identity: &str) -> String {
        authority
            .mint(&junction_auth::TokenRequest {
                room: RoomId::new(room).unwrap(),
                identity: PeerId::new(identity).unwrap(),
                name: Some("Alice".into()),
                metadata: serde_json::Value::Null,
                grants: Grants::default(),
                ttl: Duration::from_secs(60),
            })
            .unwrap()
    }

    #[test]
    fn tokens_name_the_principal_and_anonymous_needs_permission() {
        let authority = authority();
        let jwt = token(&authority, "lobby", "alice");
        let p = Principal::authenticate(&authority, Some(&jwt), false).unwrap();
        assert_eq!((p.identity.as_str(), p.room.as_ref().map(|r| r.as_str())), ("alice", Some("lobby")));
        assert_eq!(Principal::authenticate(&authority, None, false).unwrap_err().code, "unauthorized");
        assert_eq!(Principal::authenticate(&authority, Some("  "), false).unwrap_err().code, "unauthorized");
        let anon = Principal::authenticate(&authority, None, true).unwrap();
        assert!(anon.anonymous && anon.identity.as_str().starts_with("anon-") && anon.room.is_none());
        assert_eq!(Principal::authenticate(&authority, Some("eyJ.x.y"), true).unwrap_err().code, "unauthorized");
    }

    #[test]
    fn resuming_needs_the_same_identity_and_room() {
        let authority = authority();
        let alice = Principal::authenticate(&authority, Some(&token(&authority, "lobby", "alice")), false).unwrap();
        let again = Principal::authenticate(&authority, Some(&token(&authority, "lobby", "alice")), false).unwrap();
        let bob = Principal::authenticate(&authority, Some(&token(&authority, "lobby", "bob")), false).unwrap();
        let elsewhere = Principal::authenticate(&authority, Some(&token(&authority, "hall", "alice")), false).unwrap();
        let anon = Principal::authenticate(&authority, None, true).unwrap();
        assert!(again.may_resume(&alice));
        assert!(!bob.may_resume(&alice) && !elsewhere.may_resume(&alice) && !anon.may_resume(&alice));
        assert!(Principal::authenticate(&authority, None, true).unwrap().may_resume(&anon));
    }
}
