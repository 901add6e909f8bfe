//! Server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state): the INVITE machine
//! Proceeding -> Accepted | Completed -> Confirmed -> Terminated, and the non-INVITE machine
//! Trying -> Proceeding -> Completed -> Terminated.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, Response};

use super::{TimerConfig, Transmit, encode};
use crate::message::Peer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Trying,
    Proceeding,
    /// A failure response was sent; waiting for its ACK (INVITE) or absorbing retransmissions.
    Completed,
    /// A 2xx was sent (INVITE); the dialog retransmits it, retransmitted INVITEs are absorbed.
    Accepted,
    /// The ACK of a failure response arrived; lingering to absorb ACK retransmissions.
    Confirmed,
    Terminated,
}

/// Holds only what answering retransmissions needs — not the request, so a table full of
/// lingering transactions stays small.
pub(crate) struct ServerTxn {
    pub(crate) state: ServerState,
    invite: bool,
    pub(crate) peer: Peer,
    last_response: Option<Bytes>,
    /// Timer G: the next retransmission of a failure response and the current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H, I, J or L, depending on the state.
    deadline: Option<Instant>,
}

impl ServerTxn {
    pub(crate) fn new(method: Method, peer: Peer) -> Self {
        let invite = method == Method::Invite;
        let state = if invite { ServerState::Proceeding } else { ServerState::Trying };
        Self { state, invite, peer, last_response: None, retransmit: None, deadline: None }
    }

    fn unreliable(&self) -> bool {
        !self.peer.transport.is_reliable()
    }

    fn send(&self, bytes: Bytes, out: &mut VecDeque<Transmit>) {
        out.push_back(Transmit { to: self.peer, bytes });
    }

    /// A request matching this transaction arrived again (or the ACK of its INVITE). Returns
    /// whether the layer above must see it.
    pub(crate) fn on_retransmission(
        &mut self,
        now: Instant,
        method: Method,
        timers: &TimerConfig,
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        if method == Method::Ack {
            return match self.state {
                ServerState::Completed => {
                    self.state = ServerState::Confirmed;
                    self.retransmit = None;
                    self.deadline = Some(if self.unreliable() { now + timers.t4 } else { now });
                    false
                }
                // An ACK of a 2xx that reused the INVITE's branch belongs to the dialog.
                ServerState::Accepted => true,
                _ => false,
            };
        }
        if matches!(self.state, ServerState::Proceeding | ServerState::Completed)
            && let Some(last) = &self.last_response
        {
            self.send(last.clone(), out);
        }
        false
    }

    pub(crate) fn respond(
        &mut self,
        now: Instant,
        response: Response,
        timers: &TimerConfig,
        out: &mut VecDeque<Transmit>,
    ) {
        let code = response.status_code.code();
        let bytes = encode(&response);
        if self.invite {
            match self.state {
                ServerState::Proceeding => {}
                // The dialog retransmits its 2xx through here until the ACK comes.
                ServerState::Accepted if (200..300).contains(&code) => {
                    self.send(bytes, out);
                    return;
                }
                _ => return,
            }
            self.send(bytes.clone(), out);
            self.last_response = Some(bytes);
            match code {
                100..=199 => {}
                200..=299 => {
                    self.state = ServerState::Accepted;
                    self.deadline = Some(now + timers.timeout());
                }
                _ => {
                    self.state = ServerState::Completed;
                    if self.unreliable() {
                        self.retransmit = Some((now + timers.t1, timers.t1));
                    }
                    self.deadline = Some(now + timers.timeout());
                }
            }
        } else {
            if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
                return;
            }
            self.send(bytes.clone(), out);
            self.last_response = Some(bytes);
            if code < 200 {
                self.state = ServerState::Proceeding;
            } else {
                self.state = ServerState::Completed;
                self.deadline = Some(if self.unreliable() { now + timers.timeout() } else { now });
            }
        }
    }

    /// Fires due timers. Returns true when a failure response was never acknowledged.
    pub(crate) fn on_timer(&mut self, now: Instant, timers: &TimerConfig, out: &mut VecDeque<Transmit>) -> bool {
        if let Some((at, interval)) = self.retransmit
            && now >= at
            && self.state == ServerState::Completed
        {
            if let Some(last) = &self.last_response {
                self.send(last.clone(), out);
            }
            let next = (interval * 2).min(timers.t2);
            self.retransmit = Some((now + next, next));
        }
        match self.deadline {
            Some(at) if now >= at => {
                let unacknowledged = self.invite && self.state == ServerState::Completed;
                self.state = ServerState::Terminated;
                self.retransmit = None;
                self.deadline = None;
                unacknowledged
            }
            _ => false,
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match (self.retransmit.map(|r| r.0), self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
