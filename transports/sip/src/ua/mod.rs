//! The user agent core, sans I/O: calls (INVITE dialogs, RFC 3261 §12-15) on top of the
//! [`crate::transaction`] layer. It answers what needs no decision on its own — OPTIONS, BYE,
//! INFO, CANCEL, requests for dialogs it does not know (481), methods it does not do (405) —
//! retransmits our 2xx until the ACK comes, acknowledges the 2xx of calls we place, answers
//! digest challenges with the call's credentials, and reports everything else as a [`UaEvent`]
//! for the stack to decide (who may call, which codec, which room).
//!
//! The carrier extensions live beside the core: offers in our 2xx and answers in the ACK
//! (late offer, [`answer`]), reliable provisional responses and PRACK ([`early`], RFC 3262),
//! and session timers ([`session_timer`], [`refresh`], RFC 4028, with UPDATE of RFC 3311).
//!
//! Like the transaction layer it is driven from outside: [`UserAgent::receive`] and
//! [`UserAgent::handle_timeout`] take `now`; bytes leave through [`UserAgent::poll_transmit`].

mod answer;
mod dialog;
mod early;
mod in_dialog;
mod inbound;
mod outbound;
mod refresh;
pub mod register;
pub mod session_timer;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_carrier;
pub mod transfer;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, Request, Response, SipMessage};

pub use dialog::{Dialog, addr_spec, uri_addr};
pub(crate) use inbound::warning;
pub use session_timer::TimerPolicy;

use crate::message::{Head, Peer, Transport, Unparsed};
use crate::transaction::{ClientKey, ServerKey, TimerConfig, Transactions, Transmit, TxnEvent, TxnLimits};
use session_timer::SessionTimer;

/// What the user agent keeps bounded, and its session-timer policy: its transaction table,
/// how long an answered INVITE may wait for its ACK before the call is hung up (its slot and
/// ports freed), and the session-timer intervals it asks for and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UaLimits {
    pub transactions: TxnLimits,
    /// RFC 3261 §13.3.1.4 gives up after 64·T1 (32 s).
    pub ack_timeout: Duration,
    pub session_timers: TimerPolicy,
}

impl Default for UaLimits {
    fn default() -> Self {
        Self {
            transactions: TxnLimits::default(),
            ack_timeout: TimerConfig::default().timeout(),
            session_timers: TimerPolicy::default(),
        }
    }
}

/// Our own addresses, per transport, for Via and Contact headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Locals {
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Where SIP over TLS listens, when it does.
    pub tls: Option<SocketAddr>,
}

impl Locals {
    /// UDP and TCP on one address, no TLS.
    pub fn plain(addr: SocketAddr) -> Self {
        Self { udp: addr, tcp: addr, tls: None }
    }

    fn for_transport(&self, transport: Transport) -> SocketAddr {
        match transport {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls.unwrap_or(self.tcp),
        }
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
    /// The session timer ran out without a refresh (RFC 4028 §10); we sent BYE.
    SessionExpired,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::RemoteBye => "remote_bye",
            EndReason::Cancelled => "cancelled",
            EndReason::NoAck => "no_ack",
            EndReason::Unreachable => "unreachable",
            EndReason::SessionExpired => "session_expired",
        }
    }
}

/// What the user agent tells the stack.
#[derive(Debug, Clone)]
pub enum UaEvent {
    /// A new INVITE: answer it ([`UserAgent::answer`]) or refuse it ([`UserAgent::reject`]).
    /// An empty body is a late offer: our answer then carries the offer, the ACK the answer.
    Incoming { call: CallKey, request: Box<Request>, head: Box<Head>, from: Peer },
    /// The ACK of our 2xx arrived: of the first INVITE (`initial`) or of a re-INVITE. Its body
    /// is the far end's answer when our 2xx carried the offer, empty otherwise.
    Confirmed { call: CallKey, initial: bool, sdp: Vec<u8> },
    /// A call we placed got a provisional response (180, 183).
    Progress { call: CallKey, code: u16 },
    /// A call we placed got its SDP answer in a provisional response: early media flows.
    EarlyMedia { call: CallKey, sdp: Vec<u8> },
    /// A call we placed was answered; the body is the far end's SDP answer (empty when it
    /// came earlier, with early media).
    Answered { call: CallKey, sdp: Vec<u8> },
    /// A call we placed failed with a final response (or 408 for no answer at all).
    Failed { call: CallKey, code: u16, reason: String },
    /// A re-INVITE or UPDATE: answer with [`UserAgent::answer_offer`] or
    /// [`UserAgent::reject_offer`]. An empty body (a re-INVITE without SDP) asks for our offer.
    Offer { call: CallKey, sdp: Vec<u8> },
    /// The far end answered an in-dialog OPTIONS ([`UserAgent::ping`]): it is alive.
    Alive { call: CallKey },
    /// An INFO request (already answered 200).
    Info { call: CallKey, content_type: Option<String>, body: Vec<u8> },
    /// The far end asked (REFER, already accepted with 202) to transfer the call to
    /// `refer_to` (the Refer-To value); report with [`UserAgent::notify_transfer`].
    Refer { call: CallKey, refer_to: String },
    /// How a transfer we asked for (REFER) goes: the new leg's status from the far end's
    /// NOTIFY, or the REFER's own refusal.
    TransferProgress { call: CallKey, code: u16 },
    /// A trunk's registration changed state.
    Registration { trunk: String, state: register::RegistrationState },
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

/// A re-INVITE or UPDATE waiting for the stack's answer.
#[derive(Debug, Clone)]
struct PendingOffer {
    txn: ServerKey,
    request: Request,
}

struct Call {
    dialog: Dialog,
    phase: Phase,
    pending_ok: Option<PendingOk>,
    pending_offer: Option<PendingOffer>,
    credentials: Option<Credentials>,
    auth_tries: u8,
    /// The ACK of a call we placed, resent for each 2xx retransmission.
    ack: Option<(Bytes, Peer)>,
    /// Our SDP as last sent, offered again by re-INVITE refreshes (RFC 4028 §7.4).
    local_sdp: Option<String>,
    timer: Option<SessionTimer>,
    /// Whether the far end's Allow lists UPDATE (our refreshes then use it).
    remote_update: bool,
    /// A 422 retry of our INVITE was made already.
    min_se_retried: bool,
    /// The RSeq of the last reliable provisional response acknowledged with PRACK.
    last_rseq: Option<u32>,
    /// Whether an early answer (SDP in a provisional response) was passed up already.
    early_answer: bool,
}

impl Call {
    fn new(dialog: Dialog, phase: Phase) -> Call {
        Call {
            dialog,
            phase,
            pending_ok: None,
            pending_offer: None,
            credentials: None,
            auth_tries: 0,
            ack: None,
            local_sdp: None,
            timer: None,
            remote_update: false,
            min_se_retried: false,
            last_rseq: None,
            early_answer: false,
        }
    }
}

/// What one of our client transactions is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Invite,
    Bye,
    Cancel,
    Ping,
    Prack,
    /// A session refresh: a re-INVITE (`invite`) or an UPDATE.
    Refresh {
        invite: bool,
    },
    Info,
    /// A REFER we sent (call transfer).
    Refer,
    /// A NOTIFY reporting a transfer the far end asked for.
    Notify,
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
    timer_policy: TimerPolicy,
    locals: Locals,
    calls: HashMap<CallKey, Call>,
    /// (Call-ID, our tag) -> call.
    dialogs: HashMap<(String, String), CallKey>,
    /// Server INVITE transactions -> their call (CANCEL finds its INVITE through this).
    invites: HashMap<ServerKey, CallKey>,
    clients: HashMap<ClientKey, (CallKey, Purpose)>,
    registrations: register::Registrations,
    events: VecDeque<UaEvent>,
    transmits: VecDeque<Transmit>,
    next_key: u64,
}

impl UserAgent {
    /// A user agent that advertises `locals` in its Via and Contact headers.
    pub fn new(timers: TimerConfig, locals: Locals) -> Self {
        Self::with_limits(timers, UaLimits { ack_timeout: timers.timeout(), ..UaLimits::default() }, locals)
    }

    pub fn with_limits(timers: TimerConfig, limits: UaLimits, locals: Locals) -> Self {
        Self {
            txns: Transactions::with_limits(timers, limits.transactions),
            ack_timeout: limits.ack_timeout,
            timer_policy: limits.session_timers,
            locals,
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            invites: HashMap::new(),
            registrations: register::Registrations::default(),
            clients: HashMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            next_key: 1,
        }
    }

    fn local_for(&self, peer: Peer) -> SocketAddr {
        self.locals.for_transport(peer.transport)
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
        let timers = self.calls.values().filter_map(|c| c.timer.as_ref()).map(SessionTimer::deadline);
        let registrations = self.registrations.next_deadline();
        self.txns.poll_timeout().into_iter().chain(oks).chain(timers).chain(registrations).min()
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
            self.session_timer_due(now, key);
        }
        self.registrations_due(now);
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

    /// Starts an in-dialog client transaction for `request`, remembering what it is for.
    fn send_in_dialog(&mut self, now: Instant, call_key: CallKey, request: Request, purpose: Purpose) -> bool {
        let Some(call) = self.calls.get(&call_key) else { return false };
        let to = call.dialog.next_hop();
        match self.txns.send(now, request, to) {
            Some(txn) => {
                self.clients.insert(txn, (call_key, purpose));
                true
            }
            None => false,
        }
    }

    /// Sends INFO in a call (DTMF as `application/dtmf-relay`, for a far end without RFC 4733).
    pub fn info(&mut self, now: Instant, call_key: CallKey, content_type: &str, body: Vec<u8>) {
        let Some(call) = self.calls.get_mut(&call_key) else { return };
        if !matches!(call.phase, Phase::Established) {
            return;
        }
        let request = call.dialog.request(Method::Info, Vec::new());
        let request = crate::message::build::request_with_body(request, content_type, body);
        self.send_in_dialog(now, call_key, request, Purpose::Info);
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

    /// A call's session timer: its interval and whether we refresh (for tests and records).
    pub fn session_timer(&self, key: CallKey) -> Option<(Duration, bool)> {
        self.calls.get(&key)?.timer.map(|t| (t.interval, t.we_refresh))
    }
}
