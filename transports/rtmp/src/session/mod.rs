//! One RTMP connection as a sans-I/O state machine around `rml_rtmp`'s handshake and
//! `ServerSession`: bytes and time go in ([`Session::handle_input`], [`Session::handle_timeout`]),
//! bytes to send and [`SessionEvent`]s come out of [`Session::poll_output`]. It owns no socket,
//! no task and no clock, so tests drive it with an `rml_rtmp` client and a synthetic `Instant`.
//!
//! The caller (the connection driver) answers the events that need the engine: a
//! [`SessionEvent::PublishRequested`] or [`SessionEvent::PlayRequested`] is accepted or refused
//! with a NetStream status; a publisher's tracks and frames come out as events, a player's go in
//! through [`Session::play_track`] and [`Session::play_frame`].
//!
//! Bad input ends the session with a [`SessionError`] naming the reason, never the process:
//! handshake and chunk errors, a stall longer than the idle timeout, a client that has not
//! published or played within the handshake deadline, megabytes without a complete message, an
//! AMF message the [`MessageGuard`] refuses (checked before `rml_rtmp` decodes it: its AMF0
//! decoder recurses without a bound, and a stack overflow cannot be caught), and panics inside
//! `rml_rtmp` itself (its AMF data handling indexes unchecked vectors, so a crafted
//! `@setDataFrame` would otherwise take the task down) are all caught here.

mod status;
#[cfg(test)]
mod tests;

pub use status::Status;

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use junction_core::{CodecParams, MediaFrame, MediaKind, PublishRequest};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult};
use rml_rtmp::time::RtmpTimestamp;
use tracing::{debug, trace, warn};

use crate::guard::{AmfLimits, GuardError, MessageGuard};
use crate::ingest::{Ingest, IngestError, IngestEvent};
use crate::path::{self, PlayTarget};
use crate::playback::{FlvTag, Muxer};

/// Largest chunk the server sends (announced to the client when the session starts).
pub(crate) const CHUNK_SIZE: u32 = 4096;
/// Bytes a client may send without completing one message (RTMP messages are under 16 MiB).
const MAX_BYTES_WITHOUT_PROGRESS: usize = 32 << 20;
/// The message stream a publisher's `createStream` gets first (`rml_rtmp` numbers them from 1);
/// its publish requests do not say which stream they came on.
const FIRST_STREAM_ID: u32 = 1;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A connection that is not playing and sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A connection must have completed the handshake, `connect` and an accepted `publish` or
    /// `play` this long after it was opened, or it is closed.
    pub handshake_timeout: Duration,
    /// What one AMF command or data message may hold.
    pub amf_limits: AmfLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            amf_limits: AmfLimits::default(),
        }
    }
}

/// Why a session ended on its own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("malformed RTMP stream: {0}")]
    Protocol(String),
    #[error("malformed RTMP stream (the RTMP library panicked: {0})")]
    LibraryPanic(String),
    #[error("{0} bytes received without a complete RTMP message")]
    NoProgress(usize),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("no publish or play accepted within {0:?} of connecting")]
    HandshakeTimeout(Duration),
    #[error("refused RTMP message: {0}")]
    Guard(GuardError),
    #[error(transparent)]
    Ingest(IngestError),
    #[error("refused with {code}: {description}")]
    Refused { code: &'static str, description: String },
}

/// What the session asks of its caller.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    /// Answer with [`Session::accept_publish`] or [`Session::refuse`].
    PublishRequested {
        request: u32,
        stream_key: String,
    },
    /// Answer with [`Session::accept_play`] or [`Session::refuse`].
    PlayRequested {
        request: u32,
        target: PlayTarget,
    },
    /// Publish this track, replacing the previous one of its kind if any.
    Track(PublishRequest),
    Frame(MediaFrame),
    /// The client ended its publication (`deleteStream`/`closeStream`).
    PublishStopped,
    /// The client ended its playback.
    PlayStopped,
    /// The session is over; send what is queued, then close the connection.
    Closed(SessionError),
}

#[derive(Debug)]
pub enum Output {
    /// Bytes to write to the connection, in order.
    Transmit(Vec<u8>),
    Event(SessionEvent),
}

enum Phase {
    Handshake(Box<Handshake>),
    Active(Box<ServerSession>),
    Closed,
}

enum Role {
    Idle,
    PublishPending { request: u32 },
    Publishing(Box<Ingest>),
    PlayPending { request: u32, stream_id: u32 },
    Playing { stream_id: u32, muxer: Box<Muxer> },
}

pub struct Session {
    config: SessionConfig,
    phase: Phase,
    role: Role,
    /// Checks each message before the `ServerSession` decodes it.
    guard: MessageGuard,
    /// Until a publish or play is accepted: when the connection must be closed.
    handshake_deadline: Option<Instant>,
    last_input: Instant,
    bytes_without_progress: usize,
    /// Access units lost to malformed payloads (logged at powers of two).
    bad_frames: u64,
    outputs: VecDeque<Output>,
}

impl Session {
    pub fn new(now: Instant, config: SessionConfig) -> Session {
        Session {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            role: Role::Idle,
            guard: MessageGuard::new(config.amf_limits),
            handshake_deadline: Some(now + config.handshake_timeout),
            config,
            last_input: now,
            bytes_without_progress: 0,
            bad_frames: 0,
            outputs: VecDeque::new(),
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// When [`Session::handle_timeout`] must be called next: the handshake deadline until a
    /// publish or play is accepted, and the idle deadline except while playing (a player only
    /// listens).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = match (&self.phase, &self.role) {
            (Phase::Closed, _) => return None,
            (_, Role::Playing { .. } | Role::PlayPending { .. }) => None,
            _ => Some(self.last_input + self.config.idle_timeout),
        };
        match (idle, self.handshake_deadline) {
            (Some(idle), Some(handshake)) => Some(idle.min(handshake)),
            (idle, handshake) => idle.or(handshake),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.handshake_deadline.is_some_and(|deadline| now >= deadline) {
            return self.fail(SessionError::HandshakeTimeout(self.config.handshake_timeout));
        }
        let idle = !matches!(self.role, Role::Playing { .. } | Role::PlayPending { .. })
            && now >= self.last_input + self.config.idle_timeout;
        if idle {
            self.fail(SessionError::Idle(self.config.idle_timeout));
        }
    }

    /// Bytes received from the client.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_input = now;
        let handshake = match &mut self.phase {
            Phase::Handshake(handshake) => handshake.process_bytes(bytes),
            Phase::Active(_) => return self.feed(now, bytes),
            Phase::Closed => return,
        };
        match handshake {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => self.transmit(response_bytes),
            Ok(HandshakeProcessResult::Completed { response_bytes, remaining_bytes }) => {
                self.transmit(response_bytes);
                self.start(now, &remaining_bytes);
            }
            Err(err) => self.fail(SessionError::Handshake(err.to_string())),
        }
    }

    /// Ends the session from the caller's side (the peer was kicked, replaced, or the server is
    /// shutting down): nothing more is sent or accepted.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
    }

    pub fn accept_publish(&mut self, request: u32) {
        if !matches!(self.role, Role::PublishPending { request: pending } if pending == request) {
            return;
        }
        self.role = Role::Publishing(Box::default());
        self.handshake_deadline = None;
        self.with_server(|server| server.accept_request(request));
    }

    pub fn accept_play(&mut self, request: u32) {
        let Role::PlayPending { request: pending, stream_id } = self.role else { return };
        if pending != request {
            return;
        }
        self.role = Role::Playing { stream_id, muxer: Box::default() };
        self.handshake_deadline = None;
        self.with_server(|server| server.accept_request(request));
    }

    /// Refuses a pending publish or play request with `status`, then ends the session.
    pub fn refuse(&mut self, status: Status) {
        self.send_final_status(&status);
        self.fail(SessionError::Refused { code: status.code, description: status.description });
    }

    fn send_final_status(&mut self, status: &Status) {
        let stream_id = match self.role {
            Role::PlayPending { stream_id, .. } | Role::Playing { stream_id, .. } => stream_id,
            _ => FIRST_STREAM_ID,
        };
        if matches!(self.phase, Phase::Active(_))
            && let Some(bytes) = status::final_status_bytes(stream_id, status)
        {
            self.transmit(bytes);
        }
    }

    /// Tells a player about something it does not get (a track no codec path reaches) with a
    /// `warning` `onStatus`; playback goes on.
    pub fn play_warning(&mut self, status: &Status) {
        let Role::Playing { stream_id, .. } = self.role else { return };
        if matches!(self.phase, Phase::Active(_))
            && let Some(bytes) = status::warning_status_bytes(stream_id, status)
        {
            self.transmit(bytes);
        }
    }

    /// Sets the player's track of `kind` (its codec parameters), replacing the previous one.
    pub fn play_track(&mut self, kind: MediaKind, params: &CodecParams) {
        if let Role::Playing { muxer, .. } = &mut self.role {
            match kind {
                MediaKind::Video => muxer.set_video(params),
                MediaKind::Audio => muxer.set_audio(params),
            }
        }
    }

    /// Whether the played peer's tracks share one media clock (see [`Muxer::set_shared_clock`]);
    /// called whenever that peer (re)joins.
    pub fn play_shared_clock(&mut self, shared: bool) {
        if let Role::Playing { muxer, .. } = &mut self.role {
            muxer.set_shared_clock(shared);
        }
    }

    /// The player's track of `kind` went away.
    pub fn play_clear(&mut self, kind: MediaKind) {
        if let Role::Playing { muxer, .. } = &mut self.role {
            muxer.clear(kind);
        }
    }

    /// A frame of one of the player's tracks.
    pub fn play_frame(&mut self, frame: &MediaFrame) {
        let Role::Playing { stream_id, muxer } = &mut self.role else { return };
        let stream_id = *stream_id;
        let mut tags = Vec::new();
        muxer.push(frame, &mut tags);
        for FlvTag { kind, timestamp, data } in tags {
            let timestamp = RtmpTimestamp::new(timestamp);
            let Phase::Active(server) = &mut self.phase else { return };
            let packet = match kind {
                MediaKind::Video => server.send_video_data(stream_id, data, timestamp, false),
                MediaKind::Audio => server.send_audio_data(stream_id, data, timestamp, false),
            };
            match packet {
                Ok(packet) => self.transmit(packet.bytes),
                Err(err) => return self.fail(SessionError::Protocol(err.to_string())),
            }
        }
    }

    fn start(&mut self, now: Instant, remaining: &[u8]) {
        let config = ServerSessionConfig { chunk_size: CHUNK_SIZE, ..ServerSessionConfig::new() };
        match ServerSession::new(config) {
            Ok((server, results)) => {
                self.phase = Phase::Active(Box::new(server));
                self.on_results(now, results);
                if !remaining.is_empty() {
                    self.feed(now, remaining);
                }
            }
            Err(err) => self.fail(SessionError::Protocol(err.to_string())),
        }
    }

    fn feed(&mut self, now: Instant, bytes: &[u8]) {
        if !matches!(self.phase, Phase::Active(_)) {
            return;
        }
        if let Err(err) = self.guard.check(bytes) {
            self.send_final_status(&Status::failed(err.to_string()));
            return self.fail(SessionError::Guard(err));
        }
        let Phase::Active(server) = &mut self.phase else { return };
        let results = match catch_unwind(AssertUnwindSafe(|| server.handle_input(bytes))) {
            Ok(Ok(results)) => results,
            Ok(Err(err)) => return self.fail(SessionError::Protocol(err.to_string())),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                return self.fail(SessionError::LibraryPanic(message));
            }
        };
        if results.is_empty() {
            self.bytes_without_progress += bytes.len();
            if self.bytes_without_progress > MAX_BYTES_WITHOUT_PROGRESS {
                return self.fail(SessionError::NoProgress(self.bytes_without_progress));
            }
        } else {
            self.bytes_without_progress = 0;
        }
        self.on_results(now, results);
    }

    /// Runs `f` on the `ServerSession` and queues what it returns.
    fn with_server(
        &mut self,
        f: impl FnOnce(&mut ServerSession) -> Result<Vec<ServerSessionResult>, rml_rtmp::sessions::ServerSessionError>,
    ) {
        let Phase::Active(server) = &mut self.phase else { return };
        match f(server) {
            Ok(results) => self.on_results(self.last_input, results),
            Err(err) => self.fail(SessionError::Protocol(err.to_string())),
        }
    }

    fn on_results(&mut self, now: Instant, results: Vec<ServerSessionResult>) {
        for result in results {
            if self.is_closed() {
                return;
            }
            match result {
                ServerSessionResult::OutboundResponse(packet) => self.transmit(packet.bytes),
                ServerSessionResult::RaisedEvent(event) => self.on_event(now, event),
                ServerSessionResult::UnhandleableMessageReceived(payload) => {
                    trace!(type_id = payload.type_id, "RTMP message ignored");
                }
            }
        }
    }

    fn on_event(&mut self, now: Instant, event: ServerSessionEvent) {
        match event {
            ServerSessionEvent::ConnectionRequested { request_id, app_name } => {
                if path::is_our_app(&app_name) {
                    self.with_server(|server| server.accept_request(request_id));
                } else {
                    let reason = path::PathError::WrongApp(app_name).to_string();
                    self.with_server(|server| {
                        server.reject_request(request_id, "NetConnection.Connect.Rejected", &reason)
                    });
                    self.fail(SessionError::Refused { code: "NetConnection.Connect.Rejected", description: reason });
                }
            }
            ServerSessionEvent::PublishStreamRequested { request_id, app_name, stream_key, .. } => {
                if !matches!(self.role, Role::Idle) {
                    return self.refuse(Status::bad_name("this connection already publishes or plays a stream"));
                }
                match path::publish_key(&app_name, &stream_key) {
                    Ok(stream_key) => {
                        self.role = Role::PublishPending { request: request_id };
                        self.emit(SessionEvent::PublishRequested { request: request_id, stream_key });
                    }
                    Err(err) => self.refuse(Status::bad_name(err.to_string())),
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, app_name, stream_key, stream_id, .. } => {
                if !matches!(self.role, Role::Idle) {
                    return self.refuse(Status::play_failed("this connection already publishes or plays a stream"));
                }
                self.role = Role::PlayPending { request: request_id, stream_id };
                match path::play_target(&app_name, &stream_key) {
                    Ok(target) => self.emit(SessionEvent::PlayRequested { request: request_id, target }),
                    Err(err) => self.refuse(Status::stream_not_found(err.to_string())),
                }
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if matches!(self.role, Role::Publishing(_) | Role::PublishPending { .. }) {
                    self.role = Role::Idle;
                    self.emit(SessionEvent::PublishStopped);
                }
            }
            ServerSessionEvent::PlayStreamFinished { .. } => {
                if matches!(self.role, Role::Playing { .. } | Role::PlayPending { .. }) {
                    self.role = Role::Idle;
                    self.emit(SessionEvent::PlayStopped);
                }
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                if let Role::Publishing(ingest) = &mut self.role {
                    ingest.set_dimensions(metadata.video_width, metadata.video_height);
                }
            }
            ServerSessionEvent::VideoDataReceived { data, timestamp, .. } => {
                self.ingest(|ingest, out| ingest.on_video(timestamp.value, &data, now, out));
            }
            ServerSessionEvent::AudioDataReceived { data, timestamp, .. } => {
                self.ingest(|ingest, out| ingest.on_audio(timestamp.value, &data, now, out));
            }
            ServerSessionEvent::UnhandleableAmf0Command { command_name, .. } => {
                // releaseStream, FCPublish, FCUnpublish, _checkbw, getStreamLength: Flash-era
                // commands ffmpeg and OBS send out of habit; nothing waits for an answer.
                debug!(command = %command_name, "RTMP command ignored");
            }
            ServerSessionEvent::ClientChunkSizeChanged { .. }
            | ServerSessionEvent::ReleaseStreamRequested { .. }
            | ServerSessionEvent::AcknowledgementReceived { .. }
            | ServerSessionEvent::PingResponseReceived { .. } => {}
        }
    }

    fn ingest(&mut self, f: impl FnOnce(&mut Ingest, &mut Vec<IngestEvent>) -> Result<(), IngestError>) {
        let Role::Publishing(ingest) = &mut self.role else { return };
        let mut out = Vec::new();
        let result = f(ingest, &mut out);
        for event in out {
            self.emit(match event {
                IngestEvent::Track(request) => SessionEvent::Track(request),
                IngestEvent::Frame(frame) => SessionEvent::Frame(frame),
            });
        }
        match result {
            Ok(()) => {}
            Err(err) if err.is_fatal() => {
                self.send_final_status(&Status::failed(err.to_string()));
                self.fail(SessionError::Ingest(err));
            }
            Err(err) => {
                self.bad_frames += 1;
                if self.bad_frames.is_power_of_two() {
                    warn!(dropped = self.bad_frames, "media frame dropped: {err}");
                }
            }
        }
    }

    fn transmit(&mut self, bytes: Vec<u8>) {
        if !bytes.is_empty() {
            self.outputs.push_back(Output::Transmit(bytes));
        }
    }

    fn emit(&mut self, event: SessionEvent) {
        self.outputs.push_back(Output::Event(event));
    }

    fn fail(&mut self, error: SessionError) {
        if !self.is_closed() {
            self.phase = Phase::Closed;
            self.emit(SessionEvent::Closed(error));
        }
    }
}
