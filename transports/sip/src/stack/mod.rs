//! The SIP stack's driver: the one task that owns the [`UserAgent`] and the SIP sockets. It
//! reads a datagram or a TCP message, feeds it to the user agent, acts on the user agent's
//! events (admitting calls, starting call tasks, recording states) and sends what the user
//! agent wants sent — the loop is the only place with SIP I/O. Call tasks and the REST API
//! reach it through [`Command`]s.
//!
//! Everything but the socket I/O runs under a panic guard, one input at a time ([`recover`]):
//! a bug hit by one message costs that message, not the service.

mod inbound;
pub(crate) use inbound::identity_for;
mod outbound;
mod recover;
mod register;
mod settle;
pub(crate) mod tcp;
pub(crate) mod tls;
pub use register::{RegistrationBook, RegistrationStatus};
mod transfer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use junction_audio::mixer::Mixer;
use junction_core::{PeerId, RoomId};
use junction_engine::Engine;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::admission::Directory;
use crate::call::{CallSettings, Entry};
use crate::calls::{CallBook, CallState};
use crate::config::SipConfig;
use crate::digest::Nonces;
use crate::media::ports::{PortRange, RtpSockets};
use crate::media::srtp::Crypto;
use crate::message::{Peer, Transport};
use crate::sdp::{MediaEncryption, Negotiated, SdpOrigin};
use crate::transaction::{TimerConfig, Transmit};
use crate::ua::{CallKey, EndReason, Locals, UaEvent, UserAgent};

pub use crate::messages::{CallEnd, Command, DialError, DialRequest, ToCall, TransferError, TransferTarget};

/// How often registrations are compared with the trunks (the API and other nodes change
/// trunks in the directory; the stack notices within this).
const REGISTRATION_SYNC: std::time::Duration = std::time::Duration::from_secs(2);

/// The stack's record of a live call.
struct Live {
    id: String,
    room: RoomId,
    identity: PeerId,
    /// Where its signalling goes: a TCP connection a live call uses is never closed as idle,
    /// and inbound calls count against their source's share of `sip.max_calls_per_source`.
    signalling: Peer,
    inbound: bool,
    /// The call task's inbox, once it runs.
    task: Option<mpsc::Sender<ToCall>>,
    /// What a call's task starts with, until the media is settled: a call we placed until it
    /// is answered (or gets an early answer), a late-offer call until the ACK's answer.
    pending: Option<Pending>,
    /// Our RTP address, for the SDP of re-INVITE answers.
    local_rtp: SocketAddr,
    origin: SdpOrigin,
    media: Option<Negotiated>,
    /// The trunk's SRTP policy, for re-INVITEs.
    encryption: MediaEncryption,
    /// The trunk an inbound call came over, and its caller's user part: a REFER's target is
    /// routed by that trunk's dispatch rules as a call to it would be.
    admitted: Option<(String, String)>,
    /// The target of a REFER we sent, while it runs.
    transferring: Option<String>,
}

/// A call whose task waits for the far end's SDP answer.
struct Pending {
    sockets: RtpSockets,
    /// Where the call stands with the room: already joined (or waiting for its PIN) for a call
    /// we admitted; `None` for a call we placed, which joins when answered.
    entry: Option<Entry>,
    name: Option<String>,
    metadata: serde_json::Value,
    /// The SRTP key our offer carried, which the answer must accept.
    offered: Option<Crypto>,
}

/// What the stack shares with its start function.
pub(crate) struct Parts {
    pub timers: TimerConfig,
    pub udp: Arc<UdpSocket>,
    pub tcp_gate: Arc<tcp::TcpGate>,
    pub tcp_events: mpsc::Sender<tcp::TcpEvent>,
    pub tls_connector: Option<tokio_rustls::TlsConnector>,
    pub engine: Engine,
    pub mixer: Mixer,
    pub directory: Directory,
    pub book: CallBook,
    pub ports: PortRange,
    pub config: SipConfig,
    pub commands_tx: mpsc::Sender<Command>,
    pub advertised: SocketAddr,
    pub locals: Locals,
    pub registrations: RegistrationBook,
}

/// One thing the driver loop got.
enum Input {
    /// Time to bring registrations in line with the trunks.
    Sync,
    Datagram {
        len: usize,
        from: SocketAddr,
    },
    Tcp(tcp::TcpEvent),
    Command(Command),
    Timer,
}

pub(crate) struct Stack {
    ua: UserAgent,
    timers: TimerConfig,
    udp: Arc<UdpSocket>,
    tcp: tcp::Connections,
    engine: Engine,
    mixer: Mixer,
    directory: Directory,
    book: CallBook,
    nonces: Nonces,
    ports: PortRange,
    config: SipConfig,
    settings: CallSettings,
    commands_tx: mpsc::Sender<Command>,
    advertised: SocketAddr,
    /// Our addresses per transport (for a fresh user agent after a panic).
    locals: Locals,
    /// Registrations: the trunk each was started from (a changed trunk starts over), the
    /// trunks whose registrar is being resolved, and the states the API shows.
    registered: HashMap<String, crate::admission::Trunk>,
    resolving: std::collections::HashSet<String>,
    registrations: RegistrationBook,
    live: HashMap<CallKey, Live>,
    by_id: HashMap<String, CallKey>,
    /// What the synchronous part of an input wants sent; the loop sends it.
    outbox: Vec<Transmit>,
    panics: recover::PanicPolicy,
}

impl Stack {
    pub(crate) fn new(parts: Parts, shutdown: CancellationToken) -> Self {
        let settings = CallSettings {
            rtp_timeout: std::time::Duration::from_secs(parts.config.rtp_timeout_s),
            pin_attempts: parts.config.pin_attempts,
            pin_timeout: std::time::Duration::from_secs(parts.config.pin_timeout_s),
        };
        Self {
            ua: UserAgent::with_limits(parts.timers, parts.config.ua_limits(), parts.locals),
            locals: parts.locals,
            registered: HashMap::new(),
            resolving: std::collections::HashSet::new(),
            registrations: parts.registrations,
            timers: parts.timers,
            udp: parts.udp,
            tcp: tcp::Connections::new(parts.tcp_gate, parts.tcp_events, parts.tls_connector, shutdown),
            engine: parts.engine,
            mixer: parts.mixer,
            directory: parts.directory,
            book: parts.book,
            nonces: Nonces::new(parts.config.max_nonces),
            ports: parts.ports,
            config: parts.config,
            settings,
            commands_tx: parts.commands_tx,
            advertised: parts.advertised,
            live: HashMap::new(),
            by_id: HashMap::new(),
            outbox: Vec::new(),
            panics: recover::PanicPolicy::default(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut tcp_in: mpsc::Receiver<tcp::TcpEvent>,
        mut commands: mpsc::Receiver<Command>,
        shutdown: CancellationToken,
    ) {
        // One byte more than the largest message accepted: a larger datagram shows as too
        // large instead of being cut to fit.
        let mut buf = vec![0u8; self.config.max_message_bytes + 1];
        let mut sync = tokio::time::interval(REGISTRATION_SYNC);
        loop {
            let deadline = self.ua.poll_timeout();
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let input = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.udp.recv_from(&mut buf) => match received {
                    Ok((len, from)) => Input::Datagram { len, from },
                    // Errors here are ICMP reports about earlier sends; the socket is fine.
                    Err(_) => continue,
                },
                Some(event) = tcp_in.recv() => Input::Tcp(event),
                Some(command) = commands.recv() => Input::Command(command),
                _ = timer => Input::Timer,
                _ = sync.tick() => Input::Sync,
            };
            let datagram = buf.as_slice();
            let handled = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.handle(input, datagram);
                self.drain();
            }));
            if let Err(payload) = handled {
                self.recover(payload.as_ref());
            }
            self.flush().await;
            self.export_gauges();
        }
        self.stop_all().await;
    }

    /// One input, synchronously: everything the stack decides happens here.
    fn handle(&mut self, input: Input, buf: &[u8]) {
        let now = Instant::now();
        match input {
            Input::Datagram { len, from } => {
                if len > self.config.max_message_bytes {
                    metrics::counter!("junction_sip_oversize_dropped_total", "transport" => "udp").increment(1);
                    debug!(%from, len, "SIP datagram larger than sip.max_message_bytes dropped");
                    return;
                }
                self.ua.receive(now, buf.get(..len).unwrap_or_default(), Peer::udp(from));
            }
            Input::Tcp(event) => {
                let live = &self.live;
                let in_use = |peer| live.values().any(|l| l.signalling == peer);
                if let Some((from, bytes)) = self.tcp.on_event(event, in_use) {
                    self.ua.receive(now, &bytes, from);
                }
            }
            Input::Command(command) => self.on_command(command),
            Input::Timer => self.ua.handle_timeout(now),
            Input::Sync => self.sync_registrations(),
        }
    }

    /// Acts on the user agent's events and queues what it wants sent, until both are drained.
    fn drain(&mut self) {
        loop {
            let mut busy = false;
            while let Some(event) = self.ua.poll_event() {
                busy = true;
                self.on_ua_event(event);
            }
            while let Some(transmit) = self.ua.poll_transmit() {
                busy = true;
                self.outbox.push(transmit);
            }
            if !busy {
                return;
            }
        }
    }

    /// Sends what the last input queued.
    async fn flush(&mut self) {
        for transmit in std::mem::take(&mut self.outbox) {
            self.send(transmit).await;
        }
    }

    async fn send(&mut self, transmit: Transmit) {
        match transmit.to.transport {
            Transport::Udp => {
                if let Err(err) = self.udp.send_to(&transmit.bytes, transmit.to.addr).await {
                    debug!(to = %transmit.to, "SIP send failed: {err}");
                }
            }
            Transport::Tcp | Transport::Tls => self.tcp.send(transmit.to, transmit.bytes),
        }
    }

    fn export_gauges(&self) {
        let (servers, clients) = self.ua.transaction_counts();
        metrics::gauge!("junction_sip_calls").set(self.live.len() as f64);
        metrics::gauge!("junction_sip_transactions", "side" => "server").set(servers as f64);
        metrics::gauge!("junction_sip_transactions", "side" => "client").set(clients as f64);
        metrics::gauge!("junction_sip_tcp_connections").set(self.tcp.open() as f64);
        metrics::gauge!("junction_sip_digest_nonces").set(self.nonces.outstanding() as f64);
    }

    async fn stop_all(&mut self) {
        let stopped = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let keys: Vec<CallKey> = self.live.keys().copied().collect();
            for key in keys {
                self.ua.hangup(Instant::now(), key);
                self.finish(key, CallEnd::Shutdown);
            }
            // Providers stop sending calls to a server that is going away.
            for trunk in self.ua.registered_trunks() {
                self.ua.unregister(Instant::now(), &trunk);
            }
            self.drain();
        }));
        if let Err(payload) = stopped {
            self.recover(payload.as_ref());
        }
        self.flush().await;
        info!("SIP stack stopped");
    }

    fn on_ua_event(&mut self, event: UaEvent) {
        match event {
            UaEvent::Incoming { call, request, head, from } => self.incoming(call, &request, &head, from),
            UaEvent::Confirmed { call, initial, sdp } => self.confirmed(call, initial, &sdp),
            UaEvent::Progress { call, code } => {
                if let Some(live) = self.live.get(&call) {
                    debug!(call = %live.id, code, "far end progress");
                    self.book.transition(&live.id, CallState::Ringing, Some(code), None);
                }
            }
            UaEvent::EarlyMedia { call, sdp } => self.early_media(call, &sdp),
            UaEvent::Answered { call, sdp } => self.answered(call, &sdp),
            UaEvent::Failed { call, code, reason } => {
                if let Some(live) = self.live.remove(&call) {
                    info!(room = %live.room, call = %live.id, code, %reason, "call failed");
                    self.by_id.remove(&live.id);
                    self.book.transition(&live.id, CallState::Failed, Some(code), Some(reason));
                    // A call that had early media has a task (and a place in the room) to end.
                    if let Some(task) = live.task {
                        let _ = task.try_send(ToCall::Stop(CallEnd::Failed(format!("far end answered {code}"))));
                    }
                }
            }
            UaEvent::Offer { call, sdp } => self.reoffer(call, &sdp),
            UaEvent::Alive { call } => self.tell(call, ToCall::Alive),
            UaEvent::Info { call, content_type, body } => {
                if let Some(digit) = crate::media::dtmf::info_digit(content_type.as_deref(), &body) {
                    self.tell(call, ToCall::Digit(digit));
                }
            }
            UaEvent::Refer { call, refer_to } => self.referred(call, &refer_to),
            UaEvent::Registration { trunk, state } => self.registration_changed(&trunk, &state),
            UaEvent::TransferProgress { call, code } => self.transfer_progress(call, code),
            UaEvent::Ended { call, reason } => {
                let end = match reason {
                    EndReason::RemoteBye => CallEnd::RemoteHangup,
                    EndReason::Cancelled => CallEnd::Cancelled,
                    EndReason::NoAck => CallEnd::NoAck,
                    EndReason::Unreachable => CallEnd::Unreachable,
                    EndReason::SessionExpired => CallEnd::SessionExpired,
                };
                self.finish(call, end);
            }
        }
    }

    /// Records the end of a call, stops its task and forgets it.
    fn finish(&mut self, call: CallKey, end: CallEnd) {
        let Some(live) = self.live.remove(&call) else { return };
        self.by_id.remove(&live.id);
        info!(room = %live.room, peer = %live.identity, call = %live.id, reason = %end.describe(), "call ended");
        self.book.transition(&live.id, CallState::Ended, None, Some(end.describe()));
        if let Some(task) = live.task {
            let _ = task.try_send(ToCall::Stop(end));
        }
    }

    /// What a call's task is started with from the stack.
    fn call_services(&self) -> crate::call::CallServices {
        crate::call::CallServices {
            engine: self.engine.clone(),
            mixer: self.mixer.clone(),
            book: self.book.clone(),
            settings: self.settings,
            to_stack: self.commands_tx.clone(),
        }
    }

    fn tell(&self, call: CallKey, message: ToCall) {
        if let Some(task) = self.live.get(&call).and_then(|l| l.task.as_ref()) {
            let _ = task.try_send(message);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { request, reply } => {
                let _ = reply.send(self.dial(*request));
            }
            Command::HangUp { id, reply } => {
                let key = self.by_id.get(&id).copied();
                if let Some(key) = key {
                    self.ua.hangup(Instant::now(), key);
                    self.finish(key, CallEnd::ApiHangup);
                }
                let _ = reply.send(key.is_some());
            }
            Command::CallEnded { key, reason } => {
                // The task ended on its own (PIN, RTP timeout, room closed): hang up over SIP.
                if self.live.contains_key(&key) {
                    self.ua.hangup(Instant::now(), key);
                    self.finish(key, reason);
                }
            }
            Command::Ping { key } => self.ua.ping(Instant::now(), key),
            Command::Resolved { trunk, addr } => self.resolved(*trunk, addr),
            Command::Transfer { id, to, reply } => {
                let _ = reply.send(self.transfer(&id, to));
            }
            Command::Digits { id, digits, reply } => {
                let key = self.by_id.get(&id).copied();
                let up = key.is_some_and(|key| self.live.get(&key).is_some_and(|l| l.task.is_some()));
                if let (Some(key), true) = (key, up) {
                    self.tell(key, ToCall::Digits(digits));
                }
                let _ = reply.send(up);
            }
            Command::InfoDigit { key, digit } => {
                let body = format!("Signal={digit}\r\nDuration=160\r\n").into_bytes();
                self.ua.info(Instant::now(), key, "application/dtmf-relay", body);
            }
            #[cfg(test)]
            Command::Crash => panic!("a bug in the SIP stack"),
        }
    }
}
