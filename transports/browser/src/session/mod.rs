//! One signalling session: the state machine behind a browser's WebSocket. It takes client
//! messages, room events and messages relayed from other sessions, and turns them into engine
//! calls and messages for the client, queued in its outbox. It owns no socket and no timer —
//! [`driver`] does the I/O — so it can be driven synchronously in tests.
//!
//! A session outlives its socket: when the socket drops without `leave`, the driver keeps the
//! session (and its room membership, subscriptions and calls) for the reconnect grace period,
//! the outbox collecting what the client misses, and a socket that resumes it gets it all. The
//! outbox holds messages already serialised, so what it holds is counted in bytes (and capped by
//! the driver: `browser.max_outbox_bytes`).
//!
//! A socket takes writes until the kernel learns that its peer is gone, so the last messages
//! written to a dropped socket may never have reached the client. The session counts the
//! messages it wrote (welcomes aside) and keeps the latest [`REPLAY_BYTES`] of them; a resuming
//! client says how many it received (`received=` on the resume URL) and gets the rest again,
//! ahead of what waited in the outbox.

pub mod driver;
mod link;
mod media;
mod room;

use std::collections::VecDeque;
use std::sync::Arc;

use junction_auth::Authority;
use junction_core::{CloseReason, SessionId};
use junction_engine::Engine;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::BrowserConfig;
use crate::error::WireError;
use crate::principal::Principal;
use crate::protocol::{self, ClientMessage, Request, ServerMessage};
use crate::registry::{INBOX_CAPACITY, Inbound, Registry};

pub use link::{RoomInput, RoomPeer};

/// The most recent written messages a session keeps for a resuming client, in bytes of JSON. What
/// a dying socket swallows is the last moment's signalling (a few offers and events); keeping
/// more would cost every idle session of a large room this much memory.
pub const REPLAY_BYTES: usize = 64 * 1024;

/// Why a resuming client cannot have again what it says it missed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("{missing} messages written before the socket dropped are no longer kept (the last {kept} are)")]
    TooOld { missing: u64, kept: usize },
    #[error("the client says it received {received} messages; the session wrote {written}")]
    Impossible { received: u64, written: u64 },
}

/// What every session shares.
pub struct Context {
    pub engine: Engine,
    pub authority: Authority,
    pub registry: Registry,
    pub config: BrowserConfig,
    /// The WebRTC media plane, for SFU rooms (`None` when it is disabled).
    pub webrtc: Option<junction_webrtc::WebrtcTransport>,
}

/// How a session ends: what the client is told, the WebSocket close code, and the reason the
/// room hears.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub reason: &'static str,
    pub close_code: u16,
    /// Why the peer leaves its room (if it is still in one).
    pub leave: CloseReason,
}

impl Ending {
    /// The ending for a room session the engine closed.
    fn from_close(reason: &CloseReason) -> Ending {
        let close_code = match reason {
            CloseReason::Left => 1000,
            CloseReason::ServerShutdown => 1001,
            CloseReason::Overloaded => 4008,
            CloseReason::Replaced => 4009,
            CloseReason::Kicked => 4010,
            CloseReason::RoomDeleted | CloseReason::RoomExpired => 4011,
            CloseReason::TransportTimeout => 4012,
            CloseReason::Error { .. } => 4013,
            CloseReason::CredentialExpired => 4014,
        };
        Ending { reason: reason.as_str(), close_code, leave: reason.clone() }
    }
}

/// Close code of a socket that did not join in time.
pub const CLOSE_JOIN_TIMEOUT: u16 = 4015;
/// RFC 6455's close code for a message too big to process.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// What a request produced, besides messages it queued itself.
enum Reply {
    /// Nothing more; an `ok` goes out if the request carried an `id`.
    Ok,
    /// An `ok` with the number of peers a message reached.
    Delivered(usize),
    /// Its own reply message.
    Message(Box<ServerMessage>),
    /// Its replies are queued already.
    Done,
}

pub struct Session {
    pub id: SessionId,
    resume_key: String,
    principal: Principal,
    ctx: Arc<Context>,
    room: Option<RoomPeer>,
    /// The `welcome` for the socket just attached: written before the outbox, and not counted.
    welcome: Option<String>,
    /// Serialised messages for the client, oldest first, and their total size.
    outbox: VecDeque<String>,
    outbox_bytes: usize,
    /// Messages written to the client's sockets (welcomes aside) since the session began.
    written: u64,
    /// The latest of them, oldest first, for a resuming client: at most `REPLAY_BYTES`.
    replay: VecDeque<String>,
    replay_bytes: usize,
    /// The client software (the socket's User-Agent), told to the engine on join.
    client: Option<String>,
    /// The session joined a room or took part in a direct call (the join deadline is met).
    engaged: bool,
    ending: Option<Ending>,
    /// Why the session ended, for its room, once it has.
    exit: Option<CloseReason>,
}

impl Session {
    /// Registers a new session; the receiver is its inbox (resumed sockets, relayed messages).
    pub fn new(ctx: Arc<Context>, principal: Principal) -> (Session, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        let (id, resume_key) = ctx.registry.register(principal.clone(), tx);
        let session = Session {
            id,
            resume_key,
            principal,
            ctx,
            room: None,
            welcome: None,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            written: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            client: None,
            engaged: false,
            ending: None,
            exit: None,
        };
        (session, rx)
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Names the client software (the socket's User-Agent, already made safe to show).
    pub fn set_client(&mut self, client: Option<String>) {
        self.client = client;
    }

    /// The `welcome` a (re)attached socket gets first, ahead of anything queued for it.
    pub fn welcome(&mut self, resumed: bool) {
        let welcome = ServerMessage::Welcome {
            session: self.id,
            resume_key: self.resume_key.clone(),
            resumed,
            identity: self.principal.identity.clone(),
            room: self.principal.room.clone(),
            anonymous: self.principal.anonymous,
            direct_call: self.ctx.config.allow_direct_call,
            reconnect_grace_s: self.ctx.config.reconnect_grace_s,
            ice_servers: self
                .ctx
                .webrtc
                .as_ref()
                .map(|w| w.ice_servers_for(self.principal.identity.as_str()))
                .unwrap_or_default(),
        };
        self.welcome = Some(welcome.to_json());
    }

    pub fn push(&mut self, message: ServerMessage) {
        let text = message.to_json();
        self.outbox_bytes += text.len();
        self.outbox.push_back(text);
    }

    /// A message relayed from another session; an incoming call meets the join deadline.
    pub fn deliver(&mut self, message: ServerMessage) {
        if matches!(message, ServerMessage::IncomingCall { .. }) {
            self.engaged = true;
        }
        self.push(message);
    }

    /// The next message for the client, as JSON text: the socket's welcome, then the outbox.
    /// It stays queued until [`Session::written`] says the socket took it.
    pub fn peek_outgoing(&self) -> Option<&str> {
        self.welcome.as_deref().or_else(|| self.outbox.front().map(String::as_str))
    }

    /// The message [`Session::peek_outgoing`] gave was written to the socket.
    pub fn written(&mut self) {
        if self.welcome.take().is_some() {
            return;
        }
        let Some(text) = self.outbox.pop_front() else { return };
        self.outbox_bytes -= text.len();
        self.written += 1;
        self.replay_bytes += text.len();
        self.replay.push_back(text);
        while self.replay_bytes > REPLAY_BYTES
            && let Some(old) = self.replay.pop_front()
        {
            self.replay_bytes -= old.len();
        }
    }

    /// Takes the next message for the client as written (tests and fuzzing, which have no socket).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn next_outgoing(&mut self) -> Option<String> {
        let text = self.peek_outgoing()?.to_owned();
        self.written();
        Some(text)
    }

    /// A socket resumed the session, its client having received `received` of the messages
    /// written so far (`None`: a client that does not count): queues its `welcome`, then the
    /// messages it missed ahead of the outbox, or an `error` (`resume_incomplete`) when they are
    /// no longer kept. Returns how many are written again.
    pub fn resume(&mut self, received: Option<u64>) -> Result<usize, ReplayError> {
        let replayed = self.replay_for(received);
        self.welcome(true);
        if let Err(lost) = &replayed {
            // The session goes on; the client knows that what it has may be incomplete.
            self.push(ServerMessage::error(None, None, WireError::new("resume_incomplete", lost.to_string())));
        }
        replayed
    }

    /// Queues again the written messages after the first `received`; returns how many.
    fn replay_for(&mut self, received: Option<u64>) -> Result<usize, ReplayError> {
        let Some(received) = received else { return Ok(0) };
        let missing =
            self.written.checked_sub(received).ok_or(ReplayError::Impossible { received, written: self.written })?;
        if missing > self.replay.len() as u64 {
            return Err(ReplayError::TooOld { missing, kept: self.replay.len() });
        }
        for _ in 0..missing {
            let text = self.replay.pop_back().expect("checked against the replay's length");
            self.replay_bytes -= text.len();
            self.outbox_bytes += text.len();
            self.outbox.push_front(text);
        }
        // Written again when the new socket takes them.
        self.written = received;
        Ok(missing as usize)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Bytes of JSON waiting for the client.
    pub fn outbox_bytes(&self) -> usize {
        self.outbox_bytes
    }

    /// Whether the session joined a room or took part in a direct call.
    pub fn engaged(&self) -> bool {
        self.engaged
    }

    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    fn end(&mut self, ending: Ending, message: Option<String>) {
        if self.ending.is_none() {
            self.push(ServerMessage::Closed { reason: ending.reason, message });
            self.ending = Some(ending);
        }
    }

    /// The server is shutting down.
    pub fn end_for_shutdown(&mut self) {
        self.end(Ending::from_close(&CloseReason::ServerShutdown), None);
    }

    /// The socket neither joined a room nor took part in a call within `browser.join_timeout_s`.
    pub fn end_for_join_timeout(&mut self, timeout_s: u64) {
        tracing::info!(timeout_s, "no join within the deadline; closing the socket");
        let message = format!("no join within {timeout_s} s (browser.join_timeout_s)");
        let ending =
            Ending { reason: "join_timeout", close_code: CLOSE_JOIN_TIMEOUT, leave: CloseReason::TransportTimeout };
        self.end(ending, Some(message));
    }

    /// The client sent a frame over `browser.max_message_bytes`: the socket cannot be read past
    /// it, so the session ends (close 1009) after an `error` saying why.
    pub fn end_for_oversized_frame(&mut self, limit: usize) {
        tracing::info!(limit, "frame over the size limit; closing the socket");
        let message = format!("a frame was larger than {limit} bytes (browser.max_message_bytes)");
        self.push(ServerMessage::error(None, None, WireError::new("message_too_large", message.clone())));
        let ending = Ending {
            reason: "message_too_large",
            close_code: CLOSE_MESSAGE_TOO_BIG,
            leave: CloseReason::Error { message: message.clone() },
        };
        self.end(ending, Some(message));
    }

    /// Handles one text frame from the client.
    pub async fn on_text(&mut self, text: &str) {
        match protocol::parse(text) {
            Ok(request) => self.on_request(request).await,
            Err(err) => self.push(ServerMessage::error(err.id, err.kind, err.error)),
        }
    }

    /// A binary frame: not part of the protocol.
    pub fn on_binary(&mut self) {
        let error = WireError::new("binary_not_supported", "messages are JSON text frames; binary frames are ignored");
        self.push(ServerMessage::error(None, None, error));
    }

    async fn on_request(&mut self, request: Request) {
        let Request { id, kind, message } = request;
        if self.ending.is_some() {
            return;
        }
        let result = match message {
            ClientMessage::Join { room, name, metadata, receive } => {
                self.join(id.clone(), room, name, metadata, receive)
            }
            ClientMessage::Leave {} => {
                self.end(Ending::from_close(&CloseReason::Left), None);
                Ok(Reply::Ok)
            }
            ClientMessage::Ping { data } => Ok(Reply::Message(Box::new(ServerMessage::Pong { id: id.clone(), data }))),
            ClientMessage::Call { to, payload } => match self.check_signal(&payload) {
                Ok(()) => self.call(id.clone(), to, payload),
                Err(err) => Err(err),
            },
            ClientMessage::CallSignal { call, payload } => self
                .check_signal(&payload)
                .and_then(|()| self.ctx.registry.relay_call(&call, self.id, payload))
                .map(|()| Reply::Ok),
            ClientMessage::Hangup { call } => self.ctx.registry.hangup(&call, self.id).map(|()| Reply::Ok),
            ClientMessage::Offer { sdp, tracks } => self.on_offer(id.clone(), sdp, tracks).await,
            room_request => self.room_request(room_request).await,
        };
        match result {
            Ok(Reply::Ok) => self.ack(id, kind, None),
            Ok(Reply::Delivered(n)) => self.ack(id, kind, Some(n)),
            Ok(Reply::Message(message)) => self.push(*message),
            Ok(Reply::Done) => {}
            Err(error) => self.push(ServerMessage::error(id, Some(kind), error)),
        }
    }

    fn ack(&mut self, id: Option<Value>, request: String, delivered: Option<usize>) {
        // A `leave` is answered by `closed`.
        if let Some(id) = id
            && request != "leave"
        {
            self.push(ServerMessage::Ok { id, request, delivered });
        }
    }

    /// Refuses a relayed payload (`signal`, `call`, `call_signal`) over `browser.max_signal_bytes`.
    fn check_signal(&self, payload: &Value) -> Result<(), WireError> {
        let limit = self.ctx.config.max_signal_bytes;
        let size = serde_json::to_string(payload).map_or(usize::MAX, |text| text.len());
        if size > limit {
            let message = format!("the payload is {size} bytes; the limit is {limit} (browser.max_signal_bytes)");
            return Err(WireError::new("limit_exceeded", message));
        }
        Ok(())
    }

    fn call(&mut self, id: Option<Value>, to: SessionId, payload: Value) -> Result<Reply, WireError> {
        if !self.ctx.config.allow_direct_call {
            return Err(WireError::new("direct_call_disabled", "direct calls are disabled on this server"));
        }
        let call = self.ctx.registry.start_call(self.id, to, payload)?;
        self.engaged = true;
        tracing::info!(call = %call, to = %to, "direct call started");
        Ok(Reply::Message(Box::new(ServerMessage::CallStarted { id, call, to })))
    }

    /// Releases everything the session holds: leaves its room for `reason` (unless already out),
    /// hangs up its calls, and leaves the registry.
    pub fn finish(mut self, reason: CloseReason) {
        tracing::info!(reason = reason.as_str(), "session ended");
        self.exit = Some(reason);
    }
}

impl Drop for Session {
    /// However the session ends — `finish`, or its task failing — its peer leaves the room and
    /// the registry forgets it.
    fn drop(&mut self) {
        let reason = self.exit.take().unwrap_or_else(|| CloseReason::Error { message: "session task ended".into() });
        if let Some(peer) = self.room.take() {
            peer.leave(reason);
        }
        self.ctx.registry.remove(self.id, "gone");
    }
}

#[cfg(test)]
mod tests;
