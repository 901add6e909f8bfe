//! The transaction layer of RFC 3261 §17, sans I/O: it matches requests and responses to
//! transactions, retransmits over UDP (timers A, E, G), absorbs retransmissions it has already
//! answered, generates the ACK of a failed INVITE, and times transactions out (B, F, H) and
//! away (D, I, J, K, and RFC 6026's L and M). Time comes in as `now`; bytes to send come out of
//! [`Transactions::poll_transmit`]; nothing here owns a socket or a clock.
//!
//! The server side is capped ([`TxnLimits`]): in total and per source address. A request past
//! either cap gets a stateless 503 with Retry-After and leaves nothing behind, so a flood of
//! requests with fresh branches costs a bounded table (each entry lingers 64·T1 over UDP).
//!
//! Written by hand: the maintained Rust SIP crates either bundle their own transports and
//! runtimes or leave this layer out, and rsip (our parser) deliberately has none.

mod client;
mod server;

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rsip::{Method, Request, Response};

use crate::message::{Head, Peer, build};

pub use client::ClientState;
pub use server::ServerState;

/// RFC 3261's timer base values (§17.1.1.1, table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: first retransmission interval.
    pub t1: Duration,
    /// Longest retransmission interval of non-INVITE requests and INVITE responses.
    pub t2: Duration,
    /// How long a message may linger in the network.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

impl TimerConfig {
    /// 64·T1: how long a transaction waits for an answer (timers B, F, H, J, L, M).
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// How many server transactions may live at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnLimits {
    pub total: usize,
    /// From one IP address (any port, any transport).
    pub per_source: usize,
}

impl Default for TxnLimits {
    fn default() -> Self {
        Self { total: 10_000, per_source: 500 }
    }
}

/// Seconds a sender refused for overload is asked to wait (Retry-After).
const OVERLOAD_RETRY_AFTER_S: u32 = 10;
/// Least time between two log lines about overload.
const OVERLOAD_LOG_EVERY: Duration = Duration::from_secs(10);

/// Names a server transaction (§17.2.3): the top Via's branch and sent-by, and the method,
/// with ACK folded into INVITE so an ACK finds the INVITE it acknowledges.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerKey {
    pub branch: String,
    pub sent_by: String,
    /// The method's name (rsip's `Method` is not `Hash`).
    pub method: String,
}

/// Names a client transaction (§17.1.3): our branch and the CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub branch: String,
    pub method: String,
}

impl ServerKey {
    fn of(head: &Head, method: Method) -> Self {
        let method = if method == Method::Ack { Method::Invite } else { method };
        ServerKey {
            branch: head.via.branch.clone(),
            sent_by: head.via.sent_by.to_ascii_lowercase(),
            method: method.to_string(),
        }
    }
}

/// Bytes for the transport layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Bytes,
}

/// What the transaction layer hands the layer above (the user agent core).
#[derive(Debug, Clone)]
pub enum TxnEvent {
    /// A new request. `key` is `None` for an ACK that matched no transaction (the ACK of a 2xx,
    /// which belongs to the dialog, not to the INVITE transaction).
    Request { key: Option<ServerKey>, request: Request, head: Head, from: Peer },
    /// A response for one of our client transactions — or a 2xx retransmission for an INVITE
    /// whose transaction is gone (`key: None`), which the dialog answers with its ACK again.
    Response { key: Option<ClientKey>, response: Response, head: Head },
    /// A client transaction got no final response in time (timer B or F).
    Timeout { key: ClientKey },
    /// A server INVITE transaction's failure response was never acknowledged (timer H).
    AckTimeout { key: ServerKey },
}

/// All live transactions of one user agent.
pub struct Transactions {
    timers: TimerConfig,
    limits: TxnLimits,
    servers: HashMap<ServerKey, server::ServerTxn>,
    /// Server transactions per source address, kept in step with `servers`.
    per_source: HashMap<IpAddr, usize>,
    clients: HashMap<ClientKey, client::ClientTxn>,
    transmits: VecDeque<Transmit>,
    /// Requests refused for overload so far.
    refused: u64,
    last_overload_log: Option<Instant>,
}

impl Transactions {
    pub fn new(timers: TimerConfig) -> Self {
        Self::with_limits(timers, TxnLimits::default())
    }

    pub fn with_limits(timers: TimerConfig, limits: TxnLimits) -> Self {
        Self {
            timers,
            limits,
            servers: HashMap::new(),
            per_source: HashMap::new(),
            clients: HashMap::new(),
            transmits: VecDeque::new(),
            refused: 0,
            last_overload_log: None,
        }
    }

    pub fn timers(&self) -> TimerConfig {
        self.timers
    }

    /// A request from the network. Returns it when it is new to the layer above; retransmissions
    /// are answered here with the last response sent.
    pub fn receive_request(&mut self, now: Instant, request: Request, head: Head, from: Peer) -> Option<TxnEvent> {
        let method = request.method;
        let key = ServerKey::of(&head, method);
        if let Some(txn) = self.servers.get_mut(&key) {
            let pass_up = txn.on_retransmission(now, method, &self.timers, &mut self.transmits);
            return pass_up.then_some(TxnEvent::Request { key: None, request, head, from });
        }
        if method == Method::Ack {
            return Some(TxnEvent::Request { key: None, request, head, from });
        }
        let source = from.addr.ip();
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if self.servers.len() >= self.limits.total || from_source >= self.limits.per_source {
            self.refuse_overload(now, &request, from, from_source >= self.limits.per_source);
            return None;
        }
        self.servers.insert(key.clone(), server::ServerTxn::new(method, from));
        *self.per_source.entry(source).or_default() += 1;
        if method == Method::Invite {
            // §17.2.1: a 100 Trying right away stops the client's INVITE retransmissions.
            let trying = build::response(&request, 100, None);
            self.respond(now, &key, trying);
        }
        Some(TxnEvent::Request { key: Some(key), request, head, from })
    }

    /// Sends a response within a server transaction. Unknown (already finished) transactions
    /// are ignored: there is nobody left to answer.
    pub fn respond(&mut self, now: Instant, key: &ServerKey, response: Response) {
        if let Some(txn) = self.servers.get_mut(key) {
            txn.respond(now, response, &self.timers, &mut self.transmits);
        }
    }

    /// Answers a request past a cap with 503 and Retry-After, creating no transaction (its
    /// retransmissions get the same answer, statelessly).
    fn refuse_overload(&mut self, now: Instant, request: &Request, from: Peer, per_source: bool) {
        self.refused += 1;
        let scope = if per_source { "source" } else { "total" };
        metrics::counter!("junction_sip_overload_refused_total", "scope" => scope).increment(1);
        if self.last_overload_log.is_none_or(|at| now.saturating_duration_since(at) >= OVERLOAD_LOG_EVERY) {
            self.last_overload_log = Some(now);
            let (total, per) = (self.limits.total, self.limits.per_source);
            tracing::warn!(from = %from, scope, "SIP transactions at their cap ({total} in all, {per} per source): refusing new requests with 503 (logged every {}s)", OVERLOAD_LOG_EVERY.as_secs());
        }
        let mut response = build::response(request, 503, Some(&build::new_tag()));
        build::add_header(&mut response, build::other("Retry-After", OVERLOAD_RETRY_AFTER_S.to_string()));
        let why = if per_source { "too many transactions from this address" } else { "too many transactions" };
        build::add_header(&mut response, build::warning(why));
        self.transmits.push_back(Transmit { to: from, bytes: encode(&response) });
    }

    pub fn server_state(&self, key: &ServerKey) -> Option<ServerState> {
        self.servers.get(key).map(|t| t.state)
    }

    /// Starts a client transaction for `request` (whose top Via carries a fresh branch).
    pub fn send(&mut self, now: Instant, request: Request, to: Peer) -> Option<ClientKey> {
        let head = Head::of(&request).ok()?;
        let key = ClientKey { branch: head.via.branch.clone(), method: request.method.to_string() };
        let txn = client::ClientTxn::new(now, request, to, &self.timers, &mut self.transmits);
        self.clients.insert(key.clone(), txn);
        Some(key)
    }

    pub fn client_state(&self, key: &ClientKey) -> Option<ClientState> {
        self.clients.get(key).map(|t| t.state)
    }

    pub fn client_request(&self, key: &ClientKey) -> Option<&Request> {
        self.clients.get(key).map(|t| &t.request)
    }

    /// A response from the network.
    pub fn receive_response(&mut self, now: Instant, response: Response, head: Head) -> Option<TxnEvent> {
        let key = ClientKey { branch: head.via.branch.clone(), method: head.cseq_method.to_string() };
        match self.clients.get_mut(&key) {
            Some(txn) => {
                let pass_up = txn.on_response(now, &response, &self.timers, &mut self.transmits);
                pass_up.then_some(TxnEvent::Response { key: Some(key), response, head })
            }
            // A 2xx retransmitted after the INVITE transaction ended still needs its ACK.
            None if head.cseq_method == Method::Invite && (200..300).contains(&response.status_code.code()) => {
                Some(TxnEvent::Response { key: None, response, head })
            }
            None => None,
        }
    }

    /// When [`Transactions::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let servers = self.servers.values().filter_map(|t| t.next_deadline());
        let clients = self.clients.values().filter_map(|t| t.next_deadline());
        servers.chain(clients).min()
    }

    /// Fires every timer due at `now`; returns the timeouts the layer above must know about.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxnEvent> {
        let mut events = Vec::new();
        for (key, txn) in self.servers.iter_mut() {
            if txn.on_timer(now, &self.timers, &mut self.transmits) {
                events.push(TxnEvent::AckTimeout { key: key.clone() });
            }
        }
        for (key, txn) in self.clients.iter_mut() {
            if txn.on_timer(now, &self.timers, &mut self.transmits) {
                events.push(TxnEvent::Timeout { key: key.clone() });
            }
        }
        let per_source = &mut self.per_source;
        self.servers.retain(|_, t| {
            let keep = t.state != ServerState::Terminated;
            if !keep {
                let ip = t.peer.addr.ip();
                let left = per_source.get(&ip).copied().unwrap_or(1).saturating_sub(1);
                if left == 0 {
                    per_source.remove(&ip);
                } else {
                    per_source.insert(ip, left);
                }
            }
            keep
        });
        self.clients.retain(|_, t| t.state != ClientState::Terminated);
        events
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Live transactions (server, client), for tests and metrics.
    pub fn counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// Requests refused for overload so far, and the sources holding server transactions.
    pub fn overload(&self) -> (u64, usize) {
        (self.refused, self.per_source.len())
    }
}

/// Serialises a message once, for sending and resending.
pub(crate) fn encode(message: &impl std::fmt::Display) -> Bytes {
    Bytes::from(message.to_string().into_bytes())
}

#[cfg(test)]
mod tests;
