//! One WebRTC session: the task that owns a str0m `Rtc` and the peer's engine endpoint, and the
//! handle signalling code keeps to steer it.
//!
//! The task is the canonical sans-I/O loop: drain `poll_output` (sending datagrams, handling
//! events) until str0m names its next timeout; then wait for exactly one thing — a datagram
//! from the UDP driver, a frame or feedback from the engine, a room event, a command from the
//! handle, or the timeout — and feed it in. It ends when the peer leaves (DTLS close, DELETE),
//! goes silent for the ICE timeout, is kicked or replaced, or the server shuts down; every way
//! out drops the endpoint, which takes the peer out of its room.

pub(crate) mod assign;
mod egress;
mod h264_fixup;
mod ingest;
pub(crate) mod simulcast;
mod timeline;

use std::time::{Duration, Instant};

use junction_core::{CloseReason, EndpointEvent, MediaKind, MediaOut, PeerId, RoomId, SessionId};
use junction_endpoint::{EndpointMedia, EndpointRpc, Joined};
use str0m::bwe::BweKind;
use str0m::media::{MediaKind as WireKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, trace};

use self::assign::{Assignment, RoomTrack};
use self::egress::{Egress, EgressLine};
use self::ingest::{Ingest, IngestLine};
use crate::driver::{Datagram, MuxHandle};
use crate::error::SessionError;
use crate::negotiate::MediaLine;
use crate::udp_mux::SessionKey;

pub(crate) use self::egress::INITIAL_ESTIMATE_BPS;

/// What the session does with the peer's media, decided by the signalling surface.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The surface's name for logs (`whip`, `whep`, `webrtc`).
    pub label: &'static str,
    /// Publish what the peer sends as tracks of its room.
    pub publish: bool,
    pub egress: EgressPolicy,
}

impl SessionSpec {
    pub fn new(label: &'static str, publish: bool, egress: EgressPolicy) -> Self {
        Self { label, publish, egress }
    }
}

/// Which room tracks the peer's receiving m-lines carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Nothing (an ingest-only session).
    Nothing,
    /// The m-lines are fixed by the offer; each shows the newest track of its kind in the room
    /// (only `identity`'s, when set), following publishers as they come, go and reconnect.
    /// The session subscribes by itself: join with `auto_subscribe: false`.
    Viewer { identity: Option<PeerId> },
}

impl EgressPolicy {
    pub fn viewer(identity: Option<PeerId>) -> Self {
        EgressPolicy::Viewer { identity }
    }
}

/// A session's ICE username fragment and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

enum Command {
    Candidate(Candidate),
    RestartIce { remote: IceCreds, candidates: Vec<Candidate>, reply: oneshot::Sender<IceCredentials> },
    Close,
}

/// Steers a running session. Dropping it does not end the session.
#[derive(Clone)]
pub struct SessionHandle {
    commands: mpsc::Sender<Command>,
    done: CancellationToken,
    room: RoomId,
    peer: PeerId,
    session: SessionId,
}

impl SessionHandle {
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    pub fn peer(&self) -> &PeerId {
        &self.peer
    }

    /// The engine's session id of the peer.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without `a=`).
    pub async fn add_remote_candidate(&self, line: &str) -> Result<(), SessionError> {
        let candidate = parse_candidate(line)?;
        self.commands.send(Command::Candidate(candidate)).await.map_err(|_| SessionError::Closed)
    }

    /// Restarts ICE with the peer's new credentials (and candidates); returns ours.
    pub async fn restart_ice(
        &self,
        ufrag: &str,
        pwd: &str,
        candidates: &[&str],
    ) -> Result<IceCredentials, SessionError> {
        let candidates = candidates.iter().map(|c| parse_candidate(c)).collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        let remote = IceCreds { ufrag: ufrag.to_owned(), pass: pwd.to_owned() };
        self.commands
            .send(Command::RestartIce { remote, candidates, reply })
            .await
            .map_err(|_| SessionError::Closed)?;
        answer.await.map_err(|_| SessionError::Closed)
    }

    /// Ends the session: the peer leaves its room.
    pub fn close(&self) {
        let _ = self.commands.try_send(Command::Close);
    }

    pub fn is_closed(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Completes when the session has ended and its peer has left.
    pub async fn closed(&self) {
        self.done.cancelled().await
    }
}

fn parse_candidate(line: &str) -> Result<Candidate, SessionError> {
    let text = line.trim().trim_start_matches("a=");
    Candidate::from_sdp_string(text).map_err(|err| SessionError::BadCandidate {
        candidate: text.chars().take(200).collect(),
        reason: err.to_string(),
    })
}

/// Everything a session starts from.
pub(crate) struct Parts {
    pub(crate) rtc: Rtc,
    pub(crate) lines: Vec<(Mid, MediaLine)>,
    pub(crate) ufrag: String,
    pub(crate) mux: MuxHandle,
    pub(crate) ice_timeout: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) joined: Joined,
    pub(crate) spec: SessionSpec,
}

pub(crate) fn spawn(parts: Parts) -> SessionHandle {
    let Parts { rtc, lines, ufrag, mux, ice_timeout, shutdown, joined, spec } = parts;
    let Joined { endpoint, peers, mut tracks, .. } = joined;
    let (rpc, media) = endpoint.split();
    let (room, peer, session) = (rpc.room().clone(), rpc.peer().clone(), rpc.session());

    let ingest_lines = lines
        .iter()
        .filter(|(_, l)| l.peer_sends && !l.codecs.is_empty())
        .map(|(mid, l)| IngestLine::new(*mid, wire_kind(l.kind), l.layers.clone()))
        .collect();
    let (egress_lines, mut assignment) = match &spec.egress {
        EgressPolicy::Nothing => (Vec::new(), Assignment::new(None)),
        EgressPolicy::Viewer { identity } => (
            lines
                .iter()
                .filter(|(_, l)| l.peer_receives && !l.codecs.is_empty())
                .map(|(mid, l)| EgressLine::new(*mid, l.kind, l.codecs.clone()))
                .collect(),
            Assignment::new(identity.clone()),
        ),
    };
    // Tracks already in the room, oldest publisher first, so the newest wins.
    let joined_at = |p: &PeerId| peers.iter().find(|info| info.identity == *p).map_or(0, |info| info.joined_at_ms);
    tracks.sort_by_key(|t| joined_at(&t.peer));
    for track in tracks {
        assignment.add(RoomTrack { id: track.id, peer: track.peer, kind: track.kind });
    }

    let (key, inbox) = mux.register(&ufrag);
    let (commands_tx, commands) = mpsc::channel(64);
    let done = CancellationToken::new();
    let span = info_span!("session", %room, %peer, %session, transport = spec.label);
    let task = Session {
        rtc,
        key,
        mux: mux.clone(),
        inbox,
        commands,
        rpc,
        media,
        ingest: Ingest::new(ingest_lines, spec.publish),
        egress: Egress::new(egress_lines, assignment),
        ice_timeout,
        last_heard: Instant::now(),
        disconnected_since: None,
        shutdown,
    };
    let guard = Guard { done: done.clone(), mux, key };
    tokio::spawn(
        async move {
            let _guard = guard;
            task.run().await;
        }
        .instrument(span),
    );
    SessionHandle { commands: commands_tx, done, room, peer, session }
}

fn wire_kind(kind: MediaKind) -> WireKind {
    match kind {
        MediaKind::Audio => WireKind::Audio,
        MediaKind::Video => WireKind::Video,
    }
}

/// Runs when the task ends for any reason, a panic included: frees the session's routes and
/// tells the handle.
struct Guard {
    done: CancellationToken,
    mux: MuxHandle,
    key: SessionKey,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.mux.unregister(self.key);
        self.done.cancel();
        metrics::gauge!("junction_webrtc_sessions").decrement(1.0);
    }
}

struct Session {
    rtc: Rtc,
    key: SessionKey,
    mux: MuxHandle,
    inbox: mpsc::Receiver<Datagram>,
    commands: mpsc::Receiver<Command>,
    rpc: EndpointRpc,
    media: EndpointMedia,
    ingest: Ingest,
    egress: Egress,
    ice_timeout: Duration,
    /// When the last datagram arrived from the peer.
    last_heard: Instant,
    disconnected_since: Option<Instant>,
    shutdown: CancellationToken,
}

impl Session {
    async fn run(mut self) {
        metrics::gauge!("junction_webrtc_sessions").increment(1.0);
        info!("session started");
        self.egress.reassign(&mut self.rtc, &self.rpc, &self.media);
        let reason = self.run_until_closed().await;
        info!(reason = reason.as_str(), "session ended");
        if self.rtc.is_alive() && reason != CloseReason::TransportTimeout {
            // Best effort: DTLS close_notify and RTCP BYE tell the peer at once.
            if self.rtc.close().is_ok() {
                let _ = self.drain().await;
            }
        }
        self.rpc.leave(reason);
    }

    async fn run_until_closed(&mut self) -> CloseReason {
        loop {
            let timeout = match self.drain().await {
                Ok(timeout) => timeout,
                Err(reason) => return reason,
            };
            if !self.rtc.is_alive() {
                return CloseReason::Left;
            }
            let now = Instant::now();
            if timeout <= now {
                // Time moves on even while datagrams and frames keep every branch below busy.
                if let Err(reason) = self.feed(Input::Timeout(now)) {
                    return reason;
                }
                continue;
            }
            let mut deadline = self.last_heard + self.ice_timeout;
            if let Some(since) = self.disconnected_since {
                deadline = deadline.min(since + self.ice_timeout);
            }
            if now >= deadline {
                info!(timeout_s = self.ice_timeout.as_secs(), "peer silent or disconnected for the ICE timeout");
                return CloseReason::TransportTimeout;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return CloseReason::ServerShutdown,
                Some(command) = self.commands.recv() => {
                    if let Some(reason) = self.on_command(command).await {
                        return reason;
                    }
                }
                event = self.rpc.next_event() => match event {
                    None => return CloseReason::Left,
                    Some(EndpointEvent::Closed { reason }) => return reason,
                    Some(event) => self.on_room_event(event),
                },
                item = self.media.recv() => match item {
                    Some(item) => self.on_media(item),
                    None => return self.closed_reason(),
                },
                Some(datagram) = self.inbox.recv() => {
                    if let Err(reason) = self.on_datagram(datagram) {
                        return reason;
                    }
                }
                _ = tokio::time::sleep_until(timeout.min(deadline).into()) => {}
            }
        }
    }

    /// Drains str0m's output until it names its next timeout.
    async fn drain(&mut self) -> Result<Instant, CloseReason> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Ok(at),
                Ok(Output::Transmit(transmit)) => self.mux.send(transmit.destination, &transmit.contents).await,
                Ok(Output::Event(event)) => self.on_rtc_event(event)?,
                Err(err) => return Err(CloseReason::Error { message: format!("WebRTC: {err}") }),
            }
        }
    }

    fn feed(&mut self, input: Input) -> Result<(), CloseReason> {
        self.rtc.handle_input(input).map_err(|err| CloseReason::Error { message: format!("WebRTC: {err}") })
    }

    fn on_datagram(&mut self, datagram: Datagram) -> Result<(), CloseReason> {
        self.last_heard = self.last_heard.max(datagram.at);
        let Ok(contents) = datagram.payload[..].try_into() else {
            trace!(source = %datagram.source, "datagram that is not STUN, DTLS, RTP or RTCP");
            return Ok(());
        };
        let receive =
            Receive { proto: Protocol::Udp, source: datagram.source, destination: self.mux.advertised, contents };
        self.feed(Input::Receive(datagram.at, receive))
    }

    fn on_rtc_event(&mut self, event: Event) -> Result<(), CloseReason> {
        match event {
            Event::Connected => {
                info!("connected");
                self.egress.on_connected(&self.media);
            }
            Event::IceConnectionStateChange(state) => {
                debug!(?state, "ICE state");
                match state {
                    IceConnectionState::Disconnected => {
                        self.disconnected_since.get_or_insert_with(Instant::now);
                    }
                    IceConnectionState::Connected | IceConnectionState::Completed => self.disconnected_since = None,
                    _ => {}
                }
            }
            Event::MediaData(data) => self.ingest.on_media(&mut self.rtc, &self.rpc, data),
            Event::KeyframeRequest(request) => self.egress.on_keyframe_request(request.mid, &self.media),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.egress.on_estimate(estimate.as_u64(), &self.rpc, &self.media);
            }
            Event::Closed => return Err(CloseReason::Left),
            _ => {}
        }
        Ok(())
    }

    async fn on_command(&mut self, command: Command) -> Option<CloseReason> {
        match command {
            Command::Candidate(candidate) => self.rtc.add_remote_candidate(candidate),
            Command::RestartIce { remote, candidates, reply } => {
                let local = IceCreds::new();
                let mut api = self.rtc.direct_api();
                api.set_local_ice_credentials(local.clone());
                api.set_remote_ice_credentials(remote);
                self.mux.add_ufrag(self.key, &local.ufrag);
                for candidate in candidates {
                    if let Err(reason) = self.drain().await {
                        return Some(reason);
                    }
                    self.rtc.add_remote_candidate(candidate);
                }
                info!("ICE restarted");
                let _ = reply.send(IceCredentials { ufrag: local.ufrag, pwd: local.pass });
            }
            Command::Close => return Some(CloseReason::Left),
        }
        None
    }

    fn on_room_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::TrackPublished(track) => {
                self.egress.assignment().add(RoomTrack { id: track.id, peer: track.peer, kind: track.kind });
                self.egress.reassign(&mut self.rtc, &self.rpc, &self.media);
            }
            EndpointEvent::TrackUnpublished { track, .. } => {
                self.egress.assignment().remove(&track);
                self.egress.on_unsubscribed(&track);
                self.egress.reassign(&mut self.rtc, &self.rpc, &self.media);
            }
            EndpointEvent::Unsubscribed { track } => {
                self.egress.on_unsubscribed(&track);
                self.egress.reassign(&mut self.rtc, &self.rpc, &self.media);
            }
            EndpointEvent::SubscriptionFailed { track, reason } => debug!(%track, "subscription failed: {reason}"),
            _ => {}
        }
    }

    fn on_media(&mut self, item: MediaOut) {
        match item {
            MediaOut::Frame { track, frame } => self.egress.write(&mut self.rtc, &track, frame),
            MediaOut::KeyframeRequest { track, layer } => self.ingest.on_keyframe_request(&mut self.rtc, &track, layer),
            MediaOut::BitrateHint { track, bps } => self.ingest.on_bitrate_hint(&mut self.rtc, &track, bps),
        }
    }

    /// Why the engine closed the session, once its media half has ended.
    fn closed_reason(&mut self) -> CloseReason {
        while let Some(event) = self.rpc.try_next_event() {
            if let EndpointEvent::Closed { reason } = event {
                return reason;
            }
        }
        CloseReason::Left
    }
}
