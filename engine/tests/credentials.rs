//! The credential a session was opened with, as the engine enforces it: sessions end when their
//! token expires (unless configured otherwise), and one token holds a bounded number of live
//! sessions at once. Driven with a synthetic clock.

mod support;

use std::time::Duration;

use junction_core::{CloseReason, ContractError, EndpointEvent, SessionCredential};
use junction_engine::{AdapterRegistry, Clock, DuplicatePolicy, EngineConfig, JoinRequest};
use support::*;

fn token(id: &str, expires_at_ms: Option<u64>) -> SessionCredential {
    SessionCredential { token_id: Some(id.to_owned()), expires_at_ms }
}

fn closed_reason(endpoint: &mut junction_engine::Endpoint) -> Option<CloseReason> {
    events(endpoint).into_iter().find_map(|e| match e {
        EndpointEvent::Closed { reason } => Some(reason),
        _ => None,
    })
}

#[test]
fn a_session_ends_when_its_credential_expires_and_the_others_go_on() {
    let (engine, clock) = engine();
    let soon = clock.unix_ms() + 5_000;
    let mut short = join_with(&engine, "hall", "short", |r| r.credential = token("a", Some(soon))).endpoint;
    let mut long = join_with(&engine, "hall", "long", |r| r.credential = token("b", Some(soon + 60_000))).endpoint;
    let mut phone = join(&engine, "hall", "phone").endpoint;

    clock.advance(Duration::from_millis(4_999));
    engine.tick();
    assert_eq!(engine.stats().peers, 3, "nothing expired yet");
    clock.advance(Duration::from_millis(1));
    engine.tick();
    assert_eq!(closed_reason(&mut short), Some(CloseReason::CredentialExpired));
    assert_eq!(engine.stats().peers, 2);
    let left: Vec<_> = events(&mut long)
        .into_iter()
        .filter_map(|e| match e {
            EndpointEvent::PeerLeft { peer, reason, .. } => Some((peer.to_string(), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(left, [("short".to_owned(), CloseReason::CredentialExpired)]);

    clock.advance(Duration::from_secs(3600));
    engine.tick();
    assert_eq!(closed_reason(&mut long), Some(CloseReason::CredentialExpired));
    assert_eq!(closed_reason(&mut phone), None, "a session without a credential has no expiry");
    assert_eq!(engine.stats().peers, 1);
}

#[test]
fn sessions_can_outlive_their_token_when_configured_so() {
    let config = EngineConfig { end_sessions_at_expiry: false, ..EngineConfig::default() };
    let (engine, clock) = engine_with(config, AdapterRegistry::default());
    let at = clock.unix_ms() + 1_000;
    let mut peer = join_with(&engine, "hall", "p", |r| r.credential = token("a", Some(at))).endpoint;
    clock.advance(Duration::from_secs(10));
    engine.tick();
    assert_eq!(closed_reason(&mut peer), None);
    assert_eq!(engine.stats().peers, 1);
}

#[test]
fn one_token_holds_at_most_the_limit_of_sessions_across_rooms() {
    let config = EngineConfig { max_sessions_per_token: 2, ..EngineConfig::default() };
    let (engine, _) = engine_with(config, AdapterRegistry::default());
    let shared = |r: &mut JoinRequest| r.credential = token("viewer", None);
    let first = join_with(&engine, "hall", "v1", shared);
    let _second = join_with(&engine, "foyer", "v2", shared);
    let (room, peer) = ids("hall", "v3");
    let third = engine
        .join(JoinRequest::new(room, peer, junction_core::TransportKind::Whep).with_credential(token("viewer", None)));
    assert_eq!(third.err(), Some(ContractError::TooManySessions { limit: 2 }));
    assert_eq!(engine.stats().peers, 2, "the refused join left nothing behind");
    let _other = join_with(&engine, "hall", "other", |r| r.credential = token("another", None));

    // A session ending gives its seat back.
    first.endpoint.rpc.leave(CloseReason::Left);
    let _third = join_with(&engine, "hall", "v3", shared);
}

#[test]
fn a_reconnect_replacing_its_own_session_keeps_its_seat() {
    let config = EngineConfig { max_sessions_per_token: 1, ..EngineConfig::default() };
    let (engine, _) = engine_with(config, AdapterRegistry::default());
    let mine = |r: &mut JoinRequest| r.credential = token("alice", None);
    let mut before = join_with(&engine, "hall", "alice", mine).endpoint;
    let _after = join_with(&engine, "hall", "alice", mine).endpoint;
    assert_eq!(closed_reason(&mut before), Some(CloseReason::Replaced));
    // A different identity on the same token is the second session: refused.
    let (room, peer) = ids("hall", "alice2");
    let other = engine
        .join(JoinRequest::new(room, peer, junction_core::TransportKind::Webrtc).with_credential(token("alice", None)));
    assert_eq!(other.err(), Some(ContractError::TooManySessions { limit: 1 }));
    // A join refused for its token's sessions is refused before it replaces anyone.
    let _bob = join_with(&engine, "hall", "bob", |r| r.credential = token("bob", None));
    let (room, peer) = ids("hall", "alice");
    let replacing = JoinRequest::new(room.clone(), peer.clone(), junction_core::TransportKind::Whip);
    let refused = engine.join(replacing.with_credential(token("bob", None)));
    assert_eq!(refused.err(), Some(ContractError::TooManySessions { limit: 1 }));
    assert_eq!(engine.stats().peers, 2, "alice's session is still live");
    let mut again =
        JoinRequest::new(room, peer, junction_core::TransportKind::Whip).with_credential(token("carol", None));
    again.on_duplicate = DuplicatePolicy::Reject;
    assert!(matches!(engine.join(again), Err(ContractError::IdentityTaken { .. })));
    let _carol = join_with(&engine, "hall", "carol", |r| r.credential = token("carol", None));
}
