//! What a client token may mint: tokens for its own room, with grants it holds itself and an
//! expiry no later than its own — so a leaked token can never outlive or outgrow itself. The
//! operator (an API key) is not bound by this; it mints anything within the maximum lifetime.

use junction_core::Grants;

use crate::{ClientClaims, TokenRequest};

/// A mint request that asks for more than the minting token holds; each item names one excess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a client token may mint only tokens within its own rights: {}", .excess.join("; "))]
pub struct Escalation {
    pub excess: Vec<String>,
}

/// Checks that `request`, minted at `now` (unix seconds) by the holder of `parent`, asks for
/// nothing `parent` does not hold.
pub fn check_delegation(parent: &ClientClaims, request: &TokenRequest, now: u64) -> Result<(), Escalation> {
    let mut excess = Vec::new();
    if request.room != parent.room {
        excess.push(format!("room {} (the token is for room {})", request.room, parent.room));
    }
    let extra = grants_beyond(&request.grants, &parent.grants);
    if !extra.is_empty() {
        excess.push(format!("grants not held: {}", extra.join(", ")));
    }
    let expires = now.saturating_add(request.ttl.as_secs());
    if expires > parent.exp {
        excess.push(format!(
            "expiry {expires} is later than the token's own {} (ttl_s at most {})",
            parent.exp,
            parent.exp.saturating_sub(now)
        ));
    }
    if excess.is_empty() { Ok(()) } else { Err(Escalation { excess }) }
}

/// The names of the grants `asked` has and `held` does not.
fn grants_beyond(asked: &Grants, held: &Grants) -> Vec<&'static str> {
    let Grants { publish, subscribe, admin, sip_call } = *asked;
    [
        ("publish", publish, held.publish),
        ("subscribe", subscribe, held.subscribe),
        ("admin", admin, held.admin),
        ("sip_call", sip_call, held.sip_call),
    ]
    .into_iter()
    .filter(|(_, asked, held)| *asked && !*held)
    .map(|(name, _, _)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use junction_core::{PeerId, RoomId};

    use super::*;

    fn moderator() -> ClientClaims {
        ClientClaims {
            iss: crate::token::ISSUER.into(),
            sub: PeerId::new("mod").unwrap(),
            room: RoomId::new("standup").unwrap(),
            name: None,
            metadata: serde_json::Value::Null,
            grants: Grants { admin: true, ..Grants::default() },
            iat: 1_000,
            nbf: 995,
            exp: 4_600,
            jti: Some("TK_x".into()),
        }
    }

    fn request(room: &str, grants: Grants, ttl: u64) -> TokenRequest {
        TokenRequest {
            room: RoomId::new(room).unwrap(),
            identity: PeerId::new("guest").unwrap(),
            name: None,
            metadata: serde_json::Value::Null,
            grants,
            ttl: Duration::from_secs(ttl),
        }
    }

    #[test]
    fn a_subset_with_an_earlier_expiry_may_be_minted() {
        let parent = moderator();
        assert_eq!(check_delegation(&parent, &request("standup", Grants::SUBSCRIBE_ONLY, 600), 2_000), Ok(()));
        // Everything it holds, to the second it expires.
        assert_eq!(check_delegation(&parent, &request("standup", parent.grants, 2_600), 2_000), Ok(()));
    }

    #[test]
    fn every_excess_is_named() {
        let parent = moderator();
        let all = Grants { sip_call: true, ..parent.grants };
        let err = check_delegation(&parent, &request("board", all, 30 * 24 * 3600), 2_000).unwrap_err();
        assert_eq!(err.excess.len(), 3, "{err}");
        assert!(err.excess[0].contains("room board"), "{err}");
        assert_eq!(err.excess[1], "grants not held: sip_call");
        assert!(err.excess[2].contains("later than the token's own 4600 (ttl_s at most 2600)"), "{err}");

        let viewer = ClientClaims { grants: Grants::SUBSCRIBE_ONLY, ..moderator() };
        let err = check_delegation(&viewer, &request("standup", Grants::default(), 60), 2_000).unwrap_err();
        assert_eq!(err.excess, ["grants not held: publish"]);
        let admin = Grants { admin: true, ..Grants::SUBSCRIBE_ONLY };
        let err = check_delegation(&viewer, &request("standup", admin, 60), 2_000).unwrap_err();
        assert_eq!(err.excess, ["grants not held: admin"]);
    }
}
