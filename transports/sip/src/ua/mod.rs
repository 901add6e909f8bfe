//! The user agent core, sans I/O: calls (INVITE dialogs, RFC 3261 §12-15) on top of the
//! [`crate::transaction`] layer. It answers what needs no decision on its own — OPTIONS, BYE,
//! INFO, CANCEL, requests for dialogs it does not know (481), methods it does not do (405) —
//! retransmits our 2xx until the ACK comes, acknowledges the 2xx of calls we place, answers
//! digest challenges with the call's credentials, and reports everything else as a [`UaEvent`]
//! for the stack to decide (who may call, which codec, which room).
//!
//! Like the transaction layer it is driven from outside: [`UserAgent::receive`] and
//! [`UserAgent::handle_timeout`] take `now`; bytes leave through [`UserAgent::poll_transmit`].

mod dialog;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Request, Response, SipMessage};

pub use dialog::{Dialog, addr_spec, uri_addr};
pub(crate) use inbound::warning;

use crate::message::{Head, Peer, Unparsed};
use crate::transaction::{ClientKey, ServerKey, TimerConfig, Transactions, Transmit, TxnEvent, TxnLimits};

/// What the user agent keeps bounded: its transaction table, and how long an answered INVITE
/// may wait for its ACK before the call is hung up (its slot and ports freed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaLimits {
    pub transactions: TxnLimits,
    /// RFC 3261 §13.3.1.4 gives up after 64·T1 (32 s).
    pub ack_timeout: Duration,
}

impl Default for UaLimits {
    fn default() -> Self {
        Self { transactions: TxnLimits::default(), ack_timeout: TimerConfig::default().timeout() }
    }
}

/// Names one call inside the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey(pub u64);

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "call#{}", self.0)
    }
}

/// Why a call ended without the stack asking for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The far end sent BYE.
    RemoteBye,
    /// The far end cancelled its INVITE before we answered.
    Cancelled,
    /// Our 2xx was never acknowledged.
    NoAck,
    /// An in-dialog request got no answer, or a 408/481: the far end is gone.
    Unreachable,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::RemoteBye => "remote_bye",
            EndReason::Cancelled => "cancelled",
            EndReason::NoAck => "no_ack",
            EndReason::Unreachable => "unreachable",
        }
    }
}

/// What the user agent tells the stack.
#[derive(Debug, Clone)]
pub enum UaEvent {
    /// A new INVITE: answer it ([`UserAgent::answer`]) or refuse it ([`UserAgent::reject`]).
    Incoming { call: CallKey, request: Box<Request>, head: Box<Head>, from: Peer },
    /// The ACK of our 2xx arrived (calls we answered).
    Confirmed { call: CallKey },
    /// A call we placed got a provisional response (180, 183).
    Progress { call: CallKey, code: u16 },
    /// A call we placed was answered; the body is the far end's SDP answer.
    Answered { call: CallKey, sdp: Vec<u8> },
    /// A call we placed failed with a final response (or 408 for no answer at all).
    Failed { call: CallKey, code: u16, reason: String },
    /// A re-INVITE: answer with [`UserAgent::answer_offer`] or [`UserAgent::reject_offer`].
    Offer { call: CallKey, sdp: Vec<u8> },
    /// The far end answered an in-dialog OPTIONS ([`UserAgent::ping`]): it is alive.
    Alive { call: CallKey },
    /// An INFO request (already answered 200).
    Info { call: CallKey, content_type: Option<String>, body: Vec<u8> },
    /// The call is over; the key is dead.
    Ended { call: CallKey, reason: EndReason },
}

#[derive(Debug, Clone, Copy)]
struct Retransmit {
    next: Instant,
    interval: Duration,
    give_up: Instant,
}

/// A 2xx to an INVITE or re-INVITE, retransmitted until its ACK (§13.3.1.4).
#[derive(Debug, Clone)]
struct PendingOk {
    /// The answer to the call's first INVITE (its ACK confirms the call).
    initial: bool,
    bytes: Bytes,
    to: Peer,
    retransmit: Retransmit,
}

#[derive(Debug, Clone)]
enum Phase {
    /// An INVITE we received and have not answered.
    Offered { txn: ServerKey, request: Request },
    /// An INVITE we sent, not answered yet.
    Calling { invite: Request, provisional: bool, cancel: bool },
    /// Answered; waiting for the ACK if `pending_ok` is set.
    Established,
    /// Our BYE is out.
    Ending,
}

#[derive(Debug, Clone)]
struct Credentials {
    username: String,
    password: String,
}

struct Call {
    dialog: Dialog,
    phase: Phase,
    pending_ok: Option<PendingOk>,
    /// A re-INVITE waiting for the stack's answer.
    pending_offer: Option<(ServerKey, Request)>,
    credentials: Option<Credentials>,
    auth_tries: u8,
    /// The ACK of a call we placed, resent for each 2xx retransmission.
    ack: Option<(Bytes, Peer)>,
}

/// What one of our client transactions is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Bye,
    Cancel,
    Ping,
}

/// How to place a call.
#[derive(Debug, Clone)]
pub struct Invitation {
    /// The Request-URI (`sip:user@host:port`).
    pub target: rsip::Uri,
    /// Where the INVITE goes.
    pub to: Peer,
    /// Our From URI (`sip:room@junction`).
    pub from: String,
    pub sdp: String,
    /// Digest credentials for challenges of the far end.
    pub credentials: Option<(String, String)>,
}

pub struct UserAgent {
    txns: Transactions,
    ack_timeout: Duration,
    local_udp: SocketAddr,
    local_tcp: SocketAddr,
    calls: HashMap<CallKey, Call>,
    /// (Call-ID, our tag) -> call.
    dialogs: HashMap<(String, String), CallKey>,
    /// Server INVITE transactions -> their call (CANCEL finds its INVITE through this).
    invites: HashMap<ServerKey, CallKey>,
    clients: HashMap<ClientKey, (CallKey, Purpose)>,
    events: VecDeque<UaEvent>,
    transmits: VecDeque<Transmit>,
    next_key: u64,
}

impl UserAgent {
    /// A user agent that advertises `local_udp` / `local_tcp` in its Via and Contact headers.
    pub fn new(timers: TimerConfig, local_udp: SocketAddr, local_tcp: SocketAddr) -> Self {
        Self::with_limits(
            timers,
            UaLimits { ack_timeout: timers.timeout(), ..UaLimits::default() },
            local_udp,
            local_tcp,
        )
    }

    pub fn with_limits(timers: TimerConfig, limits: UaLimits, local_udp: SocketAddr, local_tcp: SocketAddr) -> Self {
        Self {
            txns: Transactions::with_limits(timers, limits.transactions),
            ack_timeout: limits.ack_timeout,
            local_udp,
            local_tcp,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            clients: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            next_key: 1,
        }
    }

    fn local_for(&self, peer: Peer) -> SocketAddr {
        if peer.transport.is_reliable() { self.local_tcp } else { self.local_udp }
    }

    fn new_key(&mut self) -> CallKey {
        let key = CallKey(self.next_key);
        self.next_key += 1;
        key
    }

    /// Live calls (for tests and metrics).
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Live transactions (server, client).
    pub fn transaction_counts(&self) -> (usize, usize) {
        self.txns.counts()
    }

    /// Requests refused for overload so far, and the sources holding server transactions.
    pub fn overload(&self) -> (u64, usize) {
        self.txns.overload()
    }

    /// Sizes of the user agent's tables — calls, dialogs, INVITE and client transaction
    /// indexes — for the stack's metrics and the tests that check every one is swept.
    pub fn table_sizes(&self) -> [usize; 4] {
        [self.calls.len(), self.dialogs.len(), self.invites.len(), self.clients.len()]
    }

    /// Bytes that arrived from `from`.
    pub fn receive(&mut self, now: Instant, bytes: &[u8], from: Peer) {
        match crate::message::parse(bytes) {
            Ok(SipMessage::Request(request)) => self.on_request(now, request, from),
            Ok(SipMessage::Response(response)) => self.on_response(now, response),
            Err(unparsed) => self.on_unparsed(unparsed, from),
        }
    }

    fn on_request(&mut self, now: Instant, request: Request, from: Peer) {
        let head = match Head::of(&request) {
            Ok(head) => head,
            Err(err) => {
                inbound::bad_request(&mut self.transmits, &request, from, &err.to_string());
                return;
            }
        };
        if let Some(TxnEvent::Request { key, request, head, from }) =
            self.txns.receive_request(now, request, head, from)
        {
            self.handle_request(now, key, request, head, from);
        }
    }

    fn on_response(&mut self, now: Instant, response: Response) {
        let Ok(head) = Head::of(&response) else { return };
        if let Some(TxnEvent::Response { key, response, head }) = self.txns.receive_response(now, response, head) {
            self.handle_response(now, key, response, head);
        }
    }

    /// RFC 3261 §21.4.1: a request we cannot parse gets a 400 when we can still tell where
    /// to send it; responses and anything else are dropped.
    fn on_unparsed(&mut self, unparsed: Unparsed, from: Peer) {
        if let Some(raw) = unparsed.raw.filter(|r| r.is_request()) {
            inbound::bad_raw_request(&mut self.transmits, &raw, from, &unparsed.error.to_string());
        }
    }

    pub fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.txns.poll_transmit().or_else(|| self.transmits.pop_front())
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        let oks = self
            .calls
            .values()
            .filter_map(|c| c.pending_ok.as_ref())
            .map(|p| p.retransmit.next.min(p.retransmit.give_up));
        self.txns.poll_timeout().into_iter().chain(oks).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for event in self.txns.handle_timeout(now) {
            match event {
                TxnEvent::Timeout { key } => self.on_client_timeout(now, key),
                TxnEvent::AckTimeout { key } => {
                    self.invites.remove(&key);
                }
                _ => {}
            }
        }
        let keys: Vec<CallKey> = self.calls.keys().copied().collect();
        for key in keys {
            self.retransmit_ok(now, key);
        }
        // Forget finished INVITE transactions that no call refers to any more.
        let txns = &self.txns;
        self.invites.retain(|k, _| txns.server_state(k).is_some());
        self.clients.retain(|k, _| txns.client_state(k).is_some());
    }

    /// Resends a call's 2xx on schedule; gives up (and hangs up) after 64·T1.
    fn retransmit_ok(&mut self, now: Instant, key: CallKey) {
        let timers = self.txns.timers();
        let Some(call) = self.calls.get_mut(&key) else { return };
        let Some(pending) = call.pending_ok.as_mut() else { return };
        if now >= pending.retransmit.give_up {
            call.pending_ok = None;
            self.hangup(now, key);
            self.events.push_back(UaEvent::Ended { call: key, reason: EndReason::NoAck });
            return;
        }
        if now >= pending.retransmit.next {
            self.transmits.push_back(Transmit { to: pending.to, bytes: pending.bytes.clone() });
            let interval = (pending.retransmit.interval * 2).min(timers.t2);
            pending.retransmit.interval = interval;
            pending.retransmit.next = now + interval;
        }
    }

    /// Forgets a call and its indexes.
    fn remove(&mut self, key: CallKey) {
        if let Some(call) = self.calls.remove(&key) {
            self.dialogs.remove(&(call.dialog.call_id.clone(), call.dialog.local_tag.clone()));
        }
        self.invites.retain(|_, k| *k != key);
    }

    /// The dialog of a call, for tests and the stack's logs.
    pub fn dialog(&self, key: CallKey) -> Option<&Dialog> {
        self.calls.get(&key).map(|c| &c.dialog)
    }
}
