//! One WebRTC session: the task that bridges a str0m `Rtc` and the peer's engine endpoint
//! (`task.rs`), and the handle signalling code keeps to steer it.
//!
//! What the peer's receiving m-lines carry is a policy: nothing (ingest only), a viewer's fixed
//! m-lines following the room's newest tracks (`viewer.rs`, WHEP), or every subscription on an
//! m-line of its own, renegotiating for more (`room.rs`, browsers in a call).

pub(crate) mod assign;
mod egress;
pub(crate) use egress::SendPacing;
mod h264_fixup;
mod ingest;
mod request;
mod room;
mod sender_clock;
pub(crate) mod signals;
pub(crate) mod simulcast;
mod task;
mod timeline;
mod viewer;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use junction_core::{CloseReason, ContractError, MediaKind, PeerId, RoomId, SessionId, TrackId};
use junction_engine::Endpoint;
use str0m::media::{MediaKind as WireKind, Mid};
use str0m::{Candidate, IceCreds, Rtc};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use self::signals::{SignalSender, TrackLabel};
use crate::driver::MuxHandle;
use crate::error::SessionError;
use crate::fanout_packets::FanoutPackets;
use crate::sdp::{MediaLine, SdpLimits};
use crate::udp_mux::SessionKey;

pub(crate) use self::egress::INITIAL_ESTIMATE_BPS;
pub use self::request::{PeerReply, PeerRequest};

/// What the session does with the peer's media, decided by the signalling surface.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    /// The surface's name for logs (`whip`, `whep`, `webrtc`).
    pub label: &'static str,
    /// Publish what the peer sends as tracks of its room.
    pub publish: bool,
    pub egress: EgressPolicy,
    /// Where [`SessionSignal`]s go ([`SessionEvent`]s among them), if anyone listens.
    pub signals: Option<SignalSender>,
    /// The peer's names and sources for the m-lines it sends on.
    pub labels: Vec<TrackLabel>,
}

impl SessionSpec {
    pub fn new(label: &'static str, publish: bool, egress: EgressPolicy) -> Self {
        Self { label, publish, egress, signals: None, labels: Vec::new() }
    }

    /// Sends [`SessionSignal`]s (and the events among them) to `signals`; a surface that stops
    /// reading them (the queue fills up) ends the session.
    pub fn with_signals(mut self, signals: SignalSender) -> Self {
        self.signals = Some(signals);
        self
    }

    pub fn with_labels(mut self, labels: Vec<TrackLabel>) -> Self {
        self.labels = labels;
        self
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
    /// Every track the peer is subscribed to (auto-subscribe, or its signalling layer's
    /// `subscribe`) gets an m-line; when none is idle the session sends
    /// [`SessionSignal::Offer`] and waits for [`SessionHandle::accept_answer`].
    Room,
}

impl EgressPolicy {
    pub fn viewer(identity: Option<PeerId>) -> Self {
        EgressPolicy::Viewer { identity }
    }
}

/// What a session tells its signalling layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// ICE and DTLS are up.
    Connected,
    /// m-line `mid` now carries `track` (the peer can label its remote track).
    Sending { mid: String, track: TrackId },
    /// m-line `mid` stopped carrying `track`.
    Stopped { mid: String, track: TrackId },
    /// The session ended.
    Closed { reason: CloseReason },
}

/// A session's ICE username fragment and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceCredentials {
    pub ufrag: String,
    pub pwd: String,
}

enum Command {
    Candidate(Candidate),
    RestartIce {
        remote: IceCreds,
        candidates: Vec<Candidate>,
        reply: oneshot::Sender<IceCredentials>,
    },
    AcceptOffer {
        sdp: String,
        labels: Vec<TrackLabel>,
        reply: oneshot::Sender<Result<String, SessionError>>,
    },
    AcceptAnswer {
        sdp: String,
        reply: oneshot::Sender<Result<(), SessionError>>,
    },
    Close,
    Leave(CloseReason),
    Request {
        request: PeerRequest,
        reply: oneshot::Sender<Result<PeerReply, ContractError>>,
    },
    ChannelSend {
        label: String,
        binary: bool,
        data: Vec<u8>,
    },
    /// Tests only: panic inside the session task, as a bug would.
    #[cfg(test)]
    Crash,
}

/// Steers a running session. Cheap to clone; dropping it does not end the session.
#[derive(Clone)]
pub struct SessionHandle {
    /// Boxed: a channel allocates its first block of 32 slots when it is made, and a `Command`
    /// is 200 bytes (6.4 KB per idle session inline, 256 bytes boxed).
    commands: mpsc::Sender<Box<Command>>,
    done: CancellationToken,
    room: RoomId,
    peer: PeerId,
    session: SessionId,
    limits: SdpLimits,
    /// Remote candidates of the current ICE session (the offer's and the trickled ones).
    candidates: Arc<AtomicUsize>,
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

    async fn send(&self, command: Command) -> Result<(), SessionError> {
        self.commands.send(Box::new(command)).await.map_err(|_| SessionError::Closed)
    }

    /// Adds a trickled remote candidate (`candidate:...`, with or without `a=`); refused past
    /// `webrtc.max_remote_candidates` for the ICE session.
    pub async fn add_remote_candidate(&self, line: &str) -> Result<(), SessionError> {
        let candidate = parse_candidate(line)?;
        let limit = self.limits.max_candidates;
        if self.candidates.fetch_add(1, Ordering::Relaxed) >= limit {
            self.candidates.fetch_sub(1, Ordering::Relaxed);
            return Err(SessionError::TooManyCandidates { count: limit + 1, limit });
        }
        self.send(Command::Candidate(candidate)).await
    }

    /// Restarts ICE with the peer's new credentials (and candidates); returns ours.
    pub async fn restart_ice(
        &self,
        ufrag: &str,
        pwd: &str,
        candidates: &[&str],
    ) -> Result<IceCredentials, SessionError> {
        let limit = self.limits.max_candidates;
        if candidates.len() > limit {
            return Err(SessionError::TooManyCandidates { count: candidates.len(), limit });
        }
        let candidates = candidates.iter().map(|c| parse_candidate(c)).collect::<Result<Vec<_>, _>>()?;
        self.candidates.store(candidates.len(), Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let remote = IceCreds { ufrag: ufrag.to_owned(), pass: pwd.to_owned() };
        self.send(Command::RestartIce { remote, candidates, reply }).await?;
        answer.await.map_err(|_| SessionError::Closed)
    }

    /// Answers a new offer from the peer (it added or removed tracks); returns the answer.
    /// New sending m-lines publish, new receiving ones carry subscriptions.
    pub async fn accept_offer(&self, sdp: &str) -> Result<String, SessionError> {
        self.limits.check(sdp)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::AcceptOffer { sdp: sdp.to_owned(), labels: Vec::new(), reply }).await?;
        answer.await.map_err(|_| SessionError::Closed)?
    }

    /// [`SessionHandle::accept_offer`], with the peer's `labels` for the m-lines it sends on.
    pub async fn accept_labelled_offer(&self, sdp: &str, labels: Vec<TrackLabel>) -> Result<String, SessionError> {
        self.limits.check(sdp)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::AcceptOffer { sdp: sdp.to_owned(), labels, reply }).await?;
        answer.await.map_err(|_| SessionError::Closed)?
    }

    /// Ends the session; the endpoint leaves its room for `reason`.
    pub fn leave(&self, reason: CloseReason) {
        if let Err(mpsc::error::TrySendError::Full(command)) = self.commands.try_send(Box::new(Command::Leave(reason)))
        {
            // Never lost: a peer nobody holds any more must still leave its room.
            let commands = self.commands.clone();
            tokio::spawn(async move {
                let _ = commands.send(command).await;
            });
        }
    }

    /// Carries out a request for the peer's endpoint in the session task, in one hop (a
    /// subscription or a layer choice also holds the layer on the peer's m-line); the outer
    /// error says the session is over, the inner one is the engine's answer.
    pub async fn request(&self, request: PeerRequest) -> Result<Result<PeerReply, ContractError>, SessionError> {
        let (reply, result) = oneshot::channel();
        self.send(Command::Request { request, reply }).await?;
        result.await.map_err(|_| SessionError::Closed)
    }

    /// Writes a message on the peer's data channel `label` (dropped if it is not open).
    pub async fn send_on_channel(&self, label: &str, binary: bool, data: Vec<u8>) -> Result<(), SessionError> {
        self.send(Command::ChannelSend { label: label.to_owned(), binary, data }).await
    }

    /// Applies the peer's answer to the session's last [`SessionSignal::Offer`].
    pub async fn accept_answer(&self, sdp: &str) -> Result<(), SessionError> {
        self.limits.check(sdp)?;
        let (reply, answer) = oneshot::channel();
        self.send(Command::AcceptAnswer { sdp: sdp.to_owned(), reply }).await?;
        answer.await.map_err(|_| SessionError::Closed)?
    }

    /// Tests only: makes the session task panic, as a bug would.
    #[cfg(test)]
    pub(crate) async fn crash(&self) {
        let _ = self.send(Command::Crash).await;
    }

    /// Ends the session; the endpoint leaves its room.
    pub fn close(&self) {
        let _ = self.commands.try_send(Box::new(Command::Close));
    }

    pub fn is_closed(&self) -> bool {
        self.done.is_cancelled()
    }

    /// Completes when the session has ended (and the endpoint has left its room).
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
    pub(crate) pwd: String,
    pub(crate) mux: MuxHandle,
    pub(crate) ice_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// Whether video is paced, and how long it may wait in the pacer before frames are shed.
    pub(crate) pacing: SendPacing,
    /// Video frames packetised once for all their subscribers.
    pub(crate) packets: FanoutPackets,
    pub(crate) limits: SdpLimits,
    /// Remote candidates the offer carried.
    pub(crate) offered_candidates: usize,
    pub(crate) shutdown: CancellationToken,
    /// The peer's endpoint: the session owns it, reads its room events, leaves when it ends.
    pub(crate) endpoint: Endpoint,
    pub(crate) spec: SessionSpec,
}

pub(crate) fn spawn(parts: Parts) -> SessionHandle {
    let (rpc, media) = parts.endpoint.split();
    let (room, peer, session) = (rpc.room().clone(), rpc.peer().clone(), rpc.session());
    let (key, inbox) = parts.mux.register(&parts.ufrag, &parts.pwd);
    let (commands_tx, commands) = mpsc::channel(64);
    let done = CancellationToken::new();
    let span = info_span!("session", %room, %peer, %session, transport = parts.spec.label);
    let task = Box::new(task::Session::new(task::Setup {
        rtc: parts.rtc,
        lines: parts.lines,
        key,
        mux: parts.mux.clone(),
        inbox,
        commands,
        rpc,
        media,
        ice_timeout: parts.ice_timeout,
        connect_timeout: parts.connect_timeout,
        pacing: parts.pacing,
        packets: parts.packets,
        shutdown: parts.shutdown,
        spec: parts.spec,
    }));
    let guard = Guard { done: done.clone(), mux: parts.mux, key };
    tokio::spawn(
        async move {
            let _guard = guard;
            task.run().await;
        }
        .instrument(span),
    );
    SessionHandle {
        commands: commands_tx,
        done,
        room,
        peer,
        session,
        limits: parts.limits,
        candidates: Arc::new(AtomicUsize::new(parts.offered_candidates)),
    }
}

pub(crate) fn wire_kind(kind: MediaKind) -> WireKind {
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
