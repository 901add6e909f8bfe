//! Live signalling sessions by session id: how a reconnecting socket finds the session it
//! resumes, how a direct call finds its callee, and which browser session is behind a
//! (room, identity) so peers can be shown with a callable session id. Also the direct calls in
//! progress, so a session that ends hangs up its calls.
//!
//! Messages to another session go into its bounded inbox with `try_send`: one session never
//! waits for another, and a session that stopped reading makes the sender's request fail with
//! `busy` instead of stalling it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use junction_core::{PeerId, RoomId, SessionId};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::WireError;
use crate::principal::Principal;
use crate::protocol::{CallId, ServerMessage};

/// Messages a session task receives from outside its socket.
pub enum Inbound {
    /// A socket that resumed this session, and how many messages its client received before
    /// (`received=` on the resume URL; `None` when it did not say).
    Attach { socket: WebSocket, received: Option<u64> },
    /// A message for the client relayed from another session.
    Deliver(ServerMessage),
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inbound::Attach { received, .. } => f.debug_struct("Attach").field("received", received).finish(),
            Inbound::Deliver(msg) => f.debug_tuple("Deliver").field(msg).finish(),
        }
    }
}

/// Messages queued per session inbox before senders get `busy`.
pub const INBOX_CAPACITY: usize = 256;

struct Entry {
    inbox: mpsc::Sender<Inbound>,
    principal: Principal,
    resume_key: String,
    /// The room this session joined, for the (room, identity) index.
    joined: Option<RoomId>,
}

struct Call {
    caller: SessionId,
    callee: SessionId,
}

impl Call {
    fn other(&self, me: SessionId) -> Option<SessionId> {
        if me == self.caller {
            Some(self.callee)
        } else if me == self.callee {
            Some(self.caller)
        } else {
            None
        }
    }
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Entry>,
    peers: HashMap<(RoomId, PeerId), SessionId>,
    calls: HashMap<CallId, Call>,
}

impl State {
    fn deliver(&self, to: SessionId, message: ServerMessage) -> Result<(), WireError> {
        let entry = self.sessions.get(&to).ok_or_else(|| session_gone(to))?;
        entry.inbox.try_send(Inbound::Deliver(message)).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => WireError::new("busy", format!("session {to} is not keeping up")),
            mpsc::error::TrySendError::Closed(_) => session_gone(to),
        })
    }

    fn publish_counts(&self) {
        metrics::gauge!("junction_browser_sessions").set(self.sessions.len() as f64);
        metrics::gauge!("junction_browser_calls").set(self.calls.len() as f64);
    }
}

fn session_gone(id: SessionId) -> WireError {
    WireError::new("session_not_found", format!("session {id} does not exist (or has ended)"))
}

fn call_gone(call: &CallId) -> WireError {
    WireError::new("call_not_found", format!("call {call} does not exist (or has ended)"))
}

/// Why a socket could not resume a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("session {0} does not exist (it ended, or its reconnect grace period is over)")]
    Gone(SessionId),
    #[error("the resume key does not match session {0}")]
    BadKey(SessionId),
    #[error("session {0} belongs to another identity or room than this token")]
    NotYours(SessionId),
}

/// The live sessions. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    state: Arc<Mutex<State>>,
}

impl Registry {
    /// Registers a new session; returns its id and resume key.
    pub fn register(&self, principal: Principal, inbox: mpsc::Sender<Inbound>) -> (SessionId, String) {
        let resume_key = junction_core::ids::random_id("", 32);
        let mut st = self.state.lock();
        let id = loop {
            let candidate = SessionId::random();
            if !st.sessions.contains_key(&candidate) {
                break candidate;
            }
        };
        st.sessions.insert(id, Entry { inbox, principal, resume_key: resume_key.clone(), joined: None });
        st.publish_counts();
        (id, resume_key)
    }

    /// Removes a session: its peer index entry goes, and its calls end (the other party is told
    /// `call_ended` with `reason`).
    pub fn remove(&self, id: SessionId, reason: &'static str) {
        let mut st = self.state.lock();
        let Some(entry) = st.sessions.remove(&id) else { return };
        if let Some(room) = entry.joined {
            let key = (room, entry.principal.identity);
            if st.peers.get(&key) == Some(&id) {
                st.peers.remove(&key);
            }
        }
        let ended: Vec<CallId> =
            st.calls.iter().filter(|(_, c)| c.other(id).is_some()).map(|(k, _)| k.clone()).collect();
        for call in ended {
            if let Some(other) = st.calls.remove(&call).and_then(|c| c.other(id)) {
                let _ = st.deliver(other, ServerMessage::CallEnded { call, reason });
            }
        }
        st.publish_counts();
    }

    pub fn len(&self) -> usize {
        self.state.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn calls(&self) -> usize {
        self.state.lock().calls.len()
    }

    /// Records that session `id` is `identity` in `room` (a newer session with the same
    /// identity in the same room takes the entry over, as the engine replaces the older peer).
    pub fn bind_peer(&self, id: SessionId, room: &RoomId, identity: &PeerId) {
        let mut st = self.state.lock();
        if let Some(entry) = st.sessions.get_mut(&id) {
            entry.joined = Some(room.clone());
            st.peers.insert((room.clone(), identity.clone()), id);
        }
    }

    pub fn unbind_peer(&self, id: SessionId) {
        let mut st = self.state.lock();
        let Some(entry) = st.sessions.get_mut(&id) else { return };
        let Some(room) = entry.joined.take() else { return };
        let key = (room, entry.principal.identity.clone());
        if st.peers.get(&key) == Some(&id) {
            st.peers.remove(&key);
        }
    }

    /// The browser session behind `identity` in `room`, if it is one of ours.
    pub fn session_of(&self, room: &RoomId, identity: &PeerId) -> Option<SessionId> {
        self.state.lock().peers.get(&(room.clone(), identity.clone())).copied()
    }

    /// Finds a session a reconnecting socket may take over.
    pub fn resume(
        &self,
        id: SessionId,
        key: &str,
        principal: &Principal,
    ) -> Result<mpsc::Sender<Inbound>, ResumeError> {
        let st = self.state.lock();
        let entry = st.sessions.get(&id).ok_or(ResumeError::Gone(id))?;
        if !junction_auth::secrets_equal(key.as_bytes(), entry.resume_key.as_bytes()) {
            return Err(ResumeError::BadKey(id));
        }
        if !principal.may_resume(&entry.principal) {
            return Err(ResumeError::NotYours(id));
        }
        Ok(entry.inbox.clone())
    }

    /// Starts a direct call from `caller` to `callee`, delivering `incoming_call` with `payload`.
    pub fn start_call(&self, caller: SessionId, callee: SessionId, payload: Value) -> Result<CallId, WireError> {
        if caller == callee {
            return Err(WireError::new("invalid_request", "a session cannot call itself"));
        }
        let mut st = self.state.lock();
        let from = st.sessions.get(&caller).ok_or_else(|| session_gone(caller))?;
        let (identity, name) = (from.principal.identity.clone(), from.principal.name.clone());
        let call = CallId::generate();
        let offer = ServerMessage::IncomingCall { call: call.clone(), from: caller, identity, name, payload };
        st.deliver(callee, offer)?;
        st.calls.insert(call.clone(), Call { caller, callee });
        st.publish_counts();
        Ok(call)
    }

    /// Relays signalling within a call to the other party.
    pub fn relay_call(&self, call: &CallId, from: SessionId, payload: Value) -> Result<(), WireError> {
        let st = self.state.lock();
        let other = st.calls.get(call).and_then(|c| c.other(from)).ok_or_else(|| call_gone(call))?;
        st.deliver(other, ServerMessage::CallSignal { call: call.clone(), payload })
    }

    /// Ends a call on behalf of one party; the other hears `call_ended` with reason `hangup`.
    pub fn hangup(&self, call: &CallId, from: SessionId) -> Result<(), WireError> {
        let mut st = self.state.lock();
        let other = st.calls.get(call).and_then(|c| c.other(from)).ok_or_else(|| call_gone(call))?;
        st.calls.remove(call);
        st.publish_counts();
        let _ = st.deliver(other, ServerMessage::CallEnded { call: call.clone(), reason: "hangup" });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::Grants;
    use serde_json::json;

    fn principal(identity: &str) -> Principal {
        Principal {
            identity: PeerId::new(identity).unwrap(),
            room: Some(RoomId::new("lobby").unwrap()),
            name: None,
            metadata: Value::Null,
            grants: Grants::default(),
            anonymous: false,
            session: Default::default(),
        }
    }

    fn next(rx: &mut mpsc::Receiver<Inbound>) -> ServerMessage {
        match rx.try_recv() {
            Ok(Inbound::Deliver(msg)) => msg,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[test]
    fn calls_are_relayed_both_ways_and_end_with_either_party() {
        let registry = Registry::default();
        let (atx, mut arx) = mpsc::channel(4);
        let (btx, mut brx) = mpsc::channel(4);
        let (a, _) = registry.register(principal("alice"), atx);
        let (b, _) = registry.register(principal("bob"), btx);

        let call = registry.start_call(a, b, json!({"sdp": "offer"})).unwrap();
        let ServerMessage::IncomingCall { from, identity, payload, .. } = next(&mut brx) else { panic!() };
        assert_eq!((from, identity.as_str(), payload), (a, "alice", json!({"sdp": "offer"})));
        registry.relay_call(&call, b, json!({"sdp": "answer"})).unwrap();
        assert!(matches!(next(&mut arx), ServerMessage::CallSignal { payload, .. } if payload["sdp"] == "answer"));
        registry.relay_call(&call, a, json!({"candidate": "c"})).unwrap();
        assert!(matches!(next(&mut brx), ServerMessage::CallSignal { .. }));

        let (ctx, _crx) = mpsc::channel(4);
        let (c, _) = registry.register(principal("carol"), ctx);
        assert_eq!(registry.relay_call(&call, c, json!({})).unwrap_err().code, "call_not_found");
        assert_eq!(registry.start_call(a, a, json!({})).unwrap_err().code, "invalid_request");
        assert_eq!(registry.start_call(a, SessionId(1), json!({})).unwrap_err().code, "session_not_found");

        assert_eq!(registry.calls(), 1);
        registry.remove(a, "gone");
        assert!(matches!(next(&mut brx), ServerMessage::CallEnded { reason: "gone", .. }));
        assert_eq!((registry.calls(), registry.len()), (0, 2));
        assert_eq!(registry.hangup(&call, b).unwrap_err().code, "call_not_found");
    }

    #[test]
    fn a_full_inbox_makes_the_caller_busy_not_blocked() {
        let registry = Registry::default();
        let (atx, _arx) = mpsc::channel(4);
        let (btx, _brx) = mpsc::channel(1);
        let (a, _) = registry.register(principal("alice"), atx);
        let (b, _) = registry.register(principal("bob"), btx);
        registry.start_call(a, b, json!({})).unwrap();
        assert_eq!(registry.start_call(a, b, json!({})).unwrap_err().code, "busy");
    }

    #[test]
    fn resume_needs_the_key_and_the_same_principal_and_peers_are_indexed() {
        let registry = Registry::default();
        let (tx, _rx) = mpsc::channel(4);
        let (id, key) = registry.register(principal("alice"), tx);
        assert!(registry.resume(id, &key, &principal("alice")).is_ok());
        assert_eq!(registry.resume(id, "nope", &principal("alice")).unwrap_err(), ResumeError::BadKey(id));
        assert_eq!(registry.resume(id, &key, &principal("bob")).unwrap_err(), ResumeError::NotYours(id));
        assert_eq!(
            registry.resume(SessionId(9), &key, &principal("alice")).unwrap_err(),
            ResumeError::Gone(SessionId(9))
        );

        let room = RoomId::new("lobby").unwrap();
        let alice = PeerId::new("alice").unwrap();
        registry.bind_peer(id, &room, &alice);
        assert_eq!(registry.session_of(&room, &alice), Some(id));
        // A newer session of the same identity takes the index over; the older leaving keeps it.
        let (tx2, _rx2) = mpsc::channel(4);
        let (newer, _) = registry.register(principal("alice"), tx2);
        registry.bind_peer(newer, &room, &alice);
        registry.remove(id, "gone");
        assert_eq!(registry.session_of(&room, &alice), Some(newer));
        registry.unbind_peer(newer);
        assert_eq!(registry.session_of(&room, &alice), None);
    }
}
