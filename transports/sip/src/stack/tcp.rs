//! SIP over TCP and TLS: accepting connections (with the TLS handshake on the TLS listener),
//! framing each stream into messages, writing responses and requests back on the connection
//! they belong to, and opening connections for calls we place over TCP or TLS. Each connection
//! runs in its own task; the stack sees only [`TcpEvent`]s, which name the connection by its
//! [`Peer`] (transport and remote address).
//!
//! Connections are gated ([`TcpGate`]): in total and per remote IP address, counted from
//! accept (or connect) to close, so a sender cannot hold more than its share of sockets. A
//! connection buffers at most one message of `sip.max_message_bytes`, and one that is silent
//! for `sip.tcp_idle_timeout_s` asks the stack whether a call still needs it; if none does,
//! the stack closes it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::message::wire::StreamFramer;
use crate::message::{Peer, Transport};

/// Messages queued for writing on one connection.
const WRITE_QUEUE: usize = 256;
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 4096;
/// Least time between two log lines about refused connections.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);
/// Time a TLS handshake (or a TCP connect) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Host names remembered for TLS connections we open (the name a certificate must carry).
const MAX_TLS_NAMES: usize = 1024;

#[derive(Debug)]
pub(crate) enum TcpEvent {
    Opened {
        peer: Peer,
        writer: mpsc::Sender<Bytes>,
    },
    Message {
        peer: Peer,
        bytes: Vec<u8>,
    },
    /// Nothing came or went for the idle timeout: close unless a call uses the connection.
    Idle {
        peer: Peer,
    },
    Closed {
        peer: Peer,
    },
}

/// The TCP limits of `[sip]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TcpLimits {
    pub total: usize,
    pub per_source: usize,
    pub idle: Duration,
    pub max_message: usize,
}

struct GateState {
    open: usize,
    per_source: HashMap<IpAddr, usize>,
    last_refusal_log: Option<Instant>,
}

/// Counts open connections; a connection holds a [`Slot`] for as long as it lives.
pub(crate) struct TcpGate {
    limits: TcpLimits,
    state: Mutex<GateState>,
}

/// One connection's place in the gate, given back on drop.
pub(crate) struct Slot {
    gate: Arc<TcpGate>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock();
        state.open = state.open.saturating_sub(1);
        if let Some(count) = state.per_source.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.per_source.remove(&self.ip);
            }
        }
    }
}

impl TcpGate {
    pub(crate) fn new(limits: TcpLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            state: Mutex::new(GateState { open: 0, per_source: HashMap::new(), last_refusal_log: None }),
        })
    }

    /// A slot for a connection with `ip`, or `None` past either cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Option<Slot> {
        let mut state = self.state.lock();
        let from_source = state.per_source.get(&ip).copied().unwrap_or(0);
        let scope = if state.open >= self.limits.total {
            "total"
        } else if from_source >= self.limits.per_source {
            "source"
        } else {
            state.open += 1;
            *state.per_source.entry(ip).or_default() += 1;
            return Some(Slot { gate: self.clone(), ip });
        };
        metrics::counter!("junction_sip_tcp_refused_total", "scope" => scope).increment(1);
        if state.last_refusal_log.is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_EVERY) {
            state.last_refusal_log = Some(now);
            let (total, per) = (self.limits.total, self.limits.per_source);
            warn!(%ip, scope, "SIP TCP connections at their cap ({total} in all, {per} per address): closing new ones (logged every {}s)", REFUSAL_LOG_EVERY.as_secs());
        }
        None
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.state.lock().open
    }
}

/// Accepts connections until shutdown; those past the gate are closed at once. With `tls`,
/// each connection's task starts with the server handshake.
pub(crate) async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<TcpGate>,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Some(slot) = gate.admit(addr.ip(), Instant::now()) else {
                        drop(stream);
                        continue;
                    };
                    let peer = if tls.is_some() { Peer::tls(addr) } else { Peer::tcp(addr) };
                    let (writer, queue) = mpsc::channel(WRITE_QUEUE);
                    if events.send(TcpEvent::Opened { peer, writer }).await.is_err() {
                        return;
                    }
                    let connection = Connection { peer, limits: gate.limits, events: events.clone(), _slot: slot };
                    let shutdown = shutdown.clone();
                    match tls.clone() {
                        None => {
                            tokio::spawn(connection.run(stream, queue, shutdown));
                        }
                        Some(acceptor) => {
                            tokio::spawn(async move {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(stream)) => connection.run(stream, queue, shutdown).await,
                                    Ok(Err(err)) => connection.failed(format!("TLS handshake failed: {err}")).await,
                                    Err(_) => connection.failed("TLS handshake timed out".into()).await,
                                }
                            });
                        }
                    }
                }
                Err(err) => {
                    warn!("SIP TCP accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One connection's task.
struct Connection {
    peer: Peer,
    limits: TcpLimits,
    events: mpsc::Sender<TcpEvent>,
    _slot: Slot,
}

impl Connection {
    /// A connection that never got going (connect or handshake failed).
    async fn failed(self, why: String) {
        debug!(peer = %self.peer, "SIP connection not set up: {why}");
        let _ = self.events.send(TcpEvent::Closed { peer: self.peer }).await;
    }

    async fn run<S>(self, stream: S, mut queue: mpsc::Receiver<Bytes>, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let peer = self.peer;
        debug!(%peer, "SIP connection open");
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut framer = StreamFramer::with_max(self.limits.max_message);
        let mut buf = vec![0u8; READ_CHUNK];
        let mut idle_at = tokio::time::Instant::now() + self.limits.idle;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(idle_at) => {
                    // Asked again one period later if a call still holds the connection.
                    idle_at = tokio::time::Instant::now() + self.limits.idle;
                    if self.events.send(TcpEvent::Idle { peer }).await.is_err() {
                        return;
                    }
                }
                outgoing = queue.recv() => match outgoing {
                    Some(bytes) => {
                        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                            break;
                        }
                        idle_at = tokio::time::Instant::now() + self.limits.idle;
                    }
                    None => break,
                },
                read = reader.read(&mut buf) => {
                    let len = match read {
                        Ok(0) | Err(_) => break,
                        Ok(len) => len,
                    };
                    idle_at = tokio::time::Instant::now() + self.limits.idle;
                    framer.push(buf.get(..len).unwrap_or_default());
                    loop {
                        match framer.next_message() {
                            Ok(Some(bytes)) => {
                                if self.events.send(TcpEvent::Message { peer, bytes }).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(err) => {
                                debug!(%peer, "closing a SIP connection: {err}");
                                let _ = self.events.send(TcpEvent::Closed { peer }).await;
                                return;
                            }
                        }
                    }
                }
            }
        }
        debug!(%peer, "SIP connection closed");
        let _ = self.events.send(TcpEvent::Closed { peer }).await;
    }
}

/// The stack's view of the open connections, by peer.
pub(crate) struct Connections {
    writers: HashMap<Peer, mpsc::Sender<Bytes>>,
    gate: Arc<TcpGate>,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
    /// For TLS connections we open; without it, sending over TLS fails.
    connector: Option<TlsConnector>,
    /// The host name to verify for a TLS address we call (its IP address otherwise).
    names: HashMap<SocketAddr, String>,
}

impl Connections {
    pub(crate) fn new(
        gate: Arc<TcpGate>,
        events: mpsc::Sender<TcpEvent>,
        connector: Option<TlsConnector>,
        shutdown: CancellationToken,
    ) -> Self {
        Self { writers: HashMap::new(), gate, events, shutdown, connector, names: HashMap::new() }
    }

    /// Remembers that the TLS server at `addr` is `host` (its certificate must name it).
    pub(crate) fn name(&mut self, addr: SocketAddr, host: &str) {
        if self.names.len() >= MAX_TLS_NAMES {
            self.names.clear();
        }
        self.names.insert(addr, host.to_owned());
    }

    /// Applies a connection event; returns a message to hand to the user agent. `in_use` says
    /// whether a live call signals over a connection (an idle one that none uses is closed).
    pub(crate) fn on_event(&mut self, event: TcpEvent, in_use: impl Fn(Peer) -> bool) -> Option<(Peer, Vec<u8>)> {
        match event {
            TcpEvent::Opened { peer, writer } => {
                self.writers.insert(peer, writer);
                None
            }
            TcpEvent::Idle { peer } => {
                if !in_use(peer) && self.writers.remove(&peer).is_some() {
                    // Dropping the writer ends the connection's task, which closes the socket.
                    debug!(%peer, "closing an idle SIP connection");
                    metrics::counter!("junction_sip_tcp_idle_closed_total").increment(1);
                }
                None
            }
            TcpEvent::Closed { peer } => {
                self.writers.remove(&peer);
                None
            }
            TcpEvent::Message { peer, bytes } => Some((peer, bytes)),
        }
    }

    /// Connections open now (accepted or opened, until their task ends).
    pub(crate) fn open(&self) -> usize {
        self.gate.open()
    }

    /// Writes on the connection to `peer`, opening one if there is none (and the gate has room).
    pub(crate) fn send(&mut self, peer: Peer, bytes: Bytes) {
        if let Some(writer) = self.writers.get(&peer) {
            if writer.try_send(bytes).is_err() {
                debug!(%peer, "SIP connection write queue full or closed; message dropped");
            }
            return;
        }
        let tls = match (peer.transport, &self.connector) {
            (Transport::Tls, Some(connector)) => {
                let name = self.names.get(&peer.addr).cloned().unwrap_or_else(|| peer.addr.ip().to_string());
                let Ok(name) = ServerName::try_from(name.clone()) else {
                    warn!(%peer, name, "not a name a TLS certificate can carry; message dropped");
                    return;
                };
                Some((connector.clone(), name))
            }
            (Transport::Tls, None) => {
                warn!(%peer, "SIP over TLS is not set up (sip.tls_listen); message dropped");
                return;
            }
            _ => None,
        };
        let Some(slot) = self.gate.admit(peer.addr.ip(), Instant::now()) else {
            debug!(%peer, "no room for another SIP connection; message dropped");
            return;
        };
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let _ = writer.try_send(bytes);
        self.writers.insert(peer, writer);
        let connection = Connection { peer, limits: self.gate.limits, events: self.events.clone(), _slot: slot };
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(peer.addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return connection.failed(format!("cannot connect: {err}")).await,
                Err(_) => return connection.failed("connect timed out".into()).await,
            };
            match tls {
                None => connection.run(stream, queue, shutdown).await,
                Some((connector, name)) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, stream)).await {
                        Ok(Ok(stream)) => connection.run(stream, queue, shutdown).await,
                        Ok(Err(err)) => {
                            warn!(%peer, "SIP TLS handshake failed: {err}");
                            connection.failed(format!("TLS handshake failed: {err}")).await
                        }
                        Err(_) => connection.failed("TLS handshake timed out".into()).await,
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_per_address_and_in_all_and_frees_on_drop() {
        let limits = TcpLimits { total: 3, per_source: 2, idle: Duration::from_secs(1), max_message: 1024 };
        let gate = TcpGate::new(limits);
        let now = Instant::now();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = gate.admit(a, now).unwrap();
        let _second = gate.admit(a, now).unwrap();
        assert!(gate.admit(a, now).is_none(), "two per address");
        let _third = gate.admit(b, now).unwrap();
        assert!(gate.admit("192.0.2.3".parse().unwrap(), now).is_none(), "three in all");
        drop(first);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(a, now).is_some(), "a closed connection frees its place");
    }
}
