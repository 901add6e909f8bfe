//! Client transactions (RFC 3261 §17.1, with RFC 6026's Accepted state): the INVITE machine
//! Calling -> Proceeding -> Accepted | Completed -> Terminated, which acknowledges failure
//! responses itself, and the non-INVITE machine Trying -> Proceeding -> Completed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, Request, Response};

use super::{TimerConfig, Transmit, encode};
use crate::message::{Peer, build};

/// How long a failed INVITE's transaction keeps answering response retransmissions (timer D).
const TIMER_D: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Calling,
    Trying,
    Proceeding,
    Completed,
    Accepted,
    Terminated,
}

pub(crate) struct ClientTxn {
    pub(crate) request: Request,
    pub(crate) state: ClientState,
    invite: bool,
    peer: Peer,
    bytes: Bytes,
    /// Timer A or E: next retransmission and the current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F.
    timeout: Option<Instant>,
    /// Timer D, K or M: how long the finished transaction lingers.
    linger: Option<Instant>,
    ack: Option<Bytes>,
}

impl ClientTxn {
    pub(crate) fn new(
        now: Instant,
        request: Request,
        peer: Peer,
        timers: &TimerConfig,
        out: &mut VecDeque<Transmit>,
    ) -> Self {
        let invite = request.method == Method::Invite;
        let bytes = encode(&request);
        out.push_back(Transmit { to: peer, bytes: bytes.clone() });
        let retransmit = (!peer.transport.is_reliable()).then_some((now + timers.t1, timers.t1));
        Self {
            request,
            state: if invite { ClientState::Calling } else { ClientState::Trying },
            invite,
            peer,
            bytes,
            retransmit,
            timeout: Some(now + timers.timeout()),
            linger: None,
            ack: None,
        }
    }

    fn reliable(&self) -> bool {
        self.peer.transport.is_reliable()
    }

    /// A response for this transaction. Returns whether the layer above must see it.
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        response: &Response,
        timers: &TimerConfig,
        out: &mut VecDeque<Transmit>,
    ) -> bool {
        let code = response.status_code.code();
        if self.invite {
            match (self.state, code) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    self.state = ClientState::Proceeding;
                    self.retransmit = None;
                    true
                }
                (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                    self.state = ClientState::Accepted;
                    self.retransmit = None;
                    self.timeout = None;
                    self.linger = Some(now + timers.timeout());
                    true
                }
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    self.timeout = None;
                    let ack = encode(&build::ack_for_failure(&self.request, response));
                    out.push_back(Transmit { to: self.peer, bytes: ack.clone() });
                    self.ack = Some(ack);
                    self.linger = Some(if self.reliable() { now } else { now + TIMER_D });
                    true
                }
                (ClientState::Completed, 300..) => {
                    if let Some(ack) = &self.ack {
                        out.push_back(Transmit { to: self.peer, bytes: ack.clone() });
                    }
                    false
                }
                // The dialog acknowledges each 2xx retransmission itself.
                (ClientState::Accepted, 200..=299) => true,
                _ => false,
            }
        } else {
            match (self.state, code) {
                (ClientState::Trying | ClientState::Proceeding, 100..=199) => {
                    self.state = ClientState::Proceeding;
                    true
                }
                (ClientState::Trying | ClientState::Proceeding, _) => {
                    self.state = ClientState::Completed;
                    self.retransmit = None;
                    self.timeout = None;
                    self.linger = Some(if self.reliable() { now } else { now + timers.t4 });
                    true
                }
                _ => false,
            }
        }
    }

    /// Fires due timers. Returns true when the transaction timed out without a final response.
    pub(crate) fn on_timer(&mut self, now: Instant, timers: &TimerConfig, out: &mut VecDeque<Transmit>) -> bool {
        if let Some((at, interval)) = self.retransmit
            && now >= at
        {
            out.push_back(Transmit { to: self.peer, bytes: self.bytes.clone() });
            let next = match (self.invite, self.state) {
                (true, _) => interval * 2,
                (false, ClientState::Proceeding) => timers.t2,
                (false, _) => (interval * 2).min(timers.t2),
            };
            self.retransmit = Some((now + next, next));
        }
        if let Some(at) = self.timeout
            && now >= at
        {
            self.state = ClientState::Terminated;
            return true;
        }
        if let Some(at) = self.linger
            && now >= at
        {
            self.state = ClientState::Terminated;
        }
        false
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.linger].into_iter().flatten().min()
    }
}
