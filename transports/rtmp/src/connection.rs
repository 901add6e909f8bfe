//! The tokio side of one RTMP connection, and the only place with I/O: it reads the socket into
//! the [`Session`], writes what the session returns, and carries out what the session asks of
//! the engine — a publisher joins its ingress's room and publishes tracks, a player joins as its
//! token's identity and subscribes to one peer's H.264 and AAC tracks. One task per connection
//! owns its `Endpoint`, so however the task ends, the peer leaves the room; a panic inside it is
//! contained ([`supervise::contain`]): the socket and the endpoint go with the task, which closes
//! the connection and releases everything the peer held.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_auth::{Authority, IngressKind};
use junction_core::{
    CloseReason, Codec, ContractError, EndpointEvent, LayerPreference, MediaKind, MediaOut, PeerId, PeerInfo,
    PublishRequest, SubscribeOptions, TrackId, TrackInfo, TransportKind,
};
use junction_engine::gate::ConnectionPermit;
use junction_engine::{DuplicatePolicy, EndpointMedia, EndpointRpc, Engine, JoinRequest, TrackPublisher, supervise};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::config::RtmpConfig;
use crate::metrics::{self, ConnectionGauge, IngestMeter};
use crate::path::PlayTarget;
use crate::session::{Output, Session, SessionError, SessionEvent, Status};

/// A player that cannot take a write for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Media items handled per wake-up before the socket gets its turn.
const MEDIA_BATCH: usize = 64;

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) engine: Engine,
    pub(crate) authority: Authority,
    pub(crate) config: RtmpConfig,
    pub(crate) shutdown: CancellationToken,
}

/// Runs one connection to its end; `permit` is its place under the connection caps.
pub(crate) async fn serve(shared: Arc<Shared>, socket: TcpStream, remote: SocketAddr, permit: ConnectionPermit) {
    let span = info_span!("rtmp", %remote, room = tracing::field::Empty, peer = tracing::field::Empty);
    let session = Session::new(Instant::now(), shared.config.session());
    let connection = Connection {
        shared,
        span: span.clone(),
        session,
        rpc: None,
        media: None,
        link: Link::None,
        gauge: ConnectionGauge::new("connecting"),
        out: Vec::new(),
    };
    // A panic is logged (with room and peer) and counted by `contain`; the socket and the
    // endpoint were owned by the future, so the connection is closed and the peer has left.
    let _ = supervise::contain("rtmp", connection.run(socket)).instrument(span).await;
    drop(permit);
}

/// What a player finds when it joins: the tracks already published, and its target if present.
struct Played {
    tracks: Vec<TrackInfo>,
    target: Option<PeerInfo>,
}

/// How a connection ended.
enum End {
    ClientClosed,
    Session(SessionError),
    Engine(Option<CloseReason>),
    Io(std::io::Error),
    WriteTimeout,
    Shutdown,
}

/// The engine side of the connection, once it publishes or plays.
enum Link {
    None,
    Publisher { video: Option<TrackPublisher>, audio: Option<TrackPublisher>, meter: IngestMeter },
    Player { target: PeerId, video: Option<TrackId>, audio: Option<TrackId> },
}

struct Connection {
    shared: Arc<Shared>,
    span: Span,
    session: Session,
    rpc: Option<EndpointRpc>,
    media: Option<EndpointMedia>,
    link: Link,
    gauge: ConnectionGauge,
    /// Bytes for the client, written once per turn of the loop.
    out: Vec<u8>,
}

/// How long, and how many bytes, a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Reads and discards what the client sends after our FIN, until it closes too (or for at most
/// [`LINGER`] / [`LINGER_BYTES`]). Closing a socket with unread input makes the kernel send a
/// reset, which can destroy our last bytes — the `NetStream.Failed` saying why — before the
/// client reads them; a publisher is usually mid-stream when it is refused.
async fn linger(reader: &mut tokio::net::tcp::OwnedReadHalf) {
    let drain = async {
        let mut scratch = vec![0u8; 16 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Whether a socket error is the client going away rather than the network failing.
fn is_hang_up(err: &std::io::Error) -> bool {
    matches!(err.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
}

async fn next_event(rpc: &mut Option<EndpointRpc>) -> Option<EndpointEvent> {
    match rpc {
        Some(rpc) => rpc.next_event().await,
        None => std::future::pending().await,
    }
}

async fn next_media(media: &mut Option<EndpointMedia>) -> Option<MediaOut> {
    match media {
        Some(media) => media.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

impl Connection {
    async fn run(mut self, socket: TcpStream) {
        let (mut reader, mut writer) = socket.into_split();
        let mut buffer = Vec::with_capacity(64 * 1024);
        let mut batch = Vec::with_capacity(MEDIA_BATCH);
        let end = loop {
            let ended = self.drain();
            if let Err(end) = self.flush(&mut writer).await {
                break end;
            }
            if let Some(end) = ended {
                break end;
            }
            let shutdown = self.shared.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => break End::Shutdown,
                read = reader.read_buf(&mut buffer) => match read {
                    Ok(0) => break End::ClientClosed,
                    Err(err) if is_hang_up(&err) => break End::ClientClosed,
                    Ok(_) => {
                        self.session.handle_input(Instant::now(), &buffer);
                        buffer.clear();
                    }
                    Err(err) => break End::Io(err),
                },
                event = next_event(&mut self.rpc) => match event {
                    Some(EndpointEvent::Closed { reason }) => break End::Engine(Some(reason)),
                    Some(event) => self.on_engine_event(event),
                    None => break End::Engine(None),
                },
                item = next_media(&mut self.media) => match item {
                    Some(item) => {
                        batch.push(item);
                        if let Some(media) = &mut self.media {
                            media.drain_into(&mut batch, MEDIA_BATCH);
                        }
                        for item in batch.drain(..) {
                            self.on_media(item);
                        }
                    }
                    None => self.media = None,
                },
                _ = sleep_until(self.session.poll_timeout()) => self.session.handle_timeout(Instant::now()),
            }
        };
        self.finish(end, &mut writer).await;
        linger(&mut reader).await;
    }

    /// Takes the session's outputs: bytes into the write buffer, events to the engine. Returns
    /// how the session ended, if it did.
    fn drain(&mut self) -> Option<End> {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Transmit(bytes) => self.out.extend_from_slice(&bytes),
                Output::Event(SessionEvent::Closed(err)) => return Some(End::Session(err)),
                Output::Event(event) => self.on_session_event(event),
            }
        }
        None
    }

    async fn flush(&mut self, writer: &mut OwnedWriteHalf) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&self.out)).await;
        self.out.clear();
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) if is_hang_up(&err) => Err(End::ClientClosed),
            Ok(Err(err)) => Err(End::Io(err)),
            Err(_) => Err(End::WriteTimeout),
        }
    }

    async fn finish(mut self, end: End, writer: &mut OwnedWriteHalf) {
        self.session.close();
        let reason = match &end {
            End::ClientClosed => {
                info!("connection closed by the client");
                CloseReason::Left
            }
            End::Session(SessionError::Refused { code, description }) => {
                info!(code, "closing after refusal: {description}");
                CloseReason::Left
            }
            End::Session(err @ (SessionError::Idle(_) | SessionError::HandshakeTimeout(_))) => {
                warn!("closing stalled connection: {err}");
                CloseReason::TransportTimeout
            }
            End::Session(err) => {
                warn!("closing connection: {err}");
                CloseReason::Error { message: err.to_string() }
            }
            End::Engine(reason) => {
                let said = reason.as_ref().map_or("session ended", CloseReason::as_str);
                info!(reason = said, "closing connection: the server ended the session");
                CloseReason::Left
            }
            End::Io(err) => {
                info!("connection lost: {err}");
                CloseReason::TransportTimeout
            }
            End::WriteTimeout => {
                warn!("client took no data for {WRITE_TIMEOUT:?}, closing");
                CloseReason::TransportTimeout
            }
            End::Shutdown => CloseReason::ServerShutdown,
        };
        self.leave(reason);
        if !self.out.is_empty() {
            let _ = tokio::time::timeout(Duration::from_secs(1), writer.write_all(&self.out)).await;
        }
        let _ = writer.shutdown().await;
    }

    /// Leaves the room (if in one) and forgets the engine side.
    fn leave(&mut self, reason: CloseReason) {
        self.media = None;
        self.link = Link::None;
        if let Some(rpc) = self.rpc.take()
            && !rpc.is_closed()
        {
            rpc.leave(reason);
        }
    }

    fn on_session_event(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::PublishRequested { request, stream_key } => match self.join_publisher(&stream_key) {
                Ok(()) => self.session.accept_publish(request),
                Err(status) => self.refuse(status),
            },
            SessionEvent::PlayRequested { request, target } => match self.join_player(&target) {
                Ok(played) => {
                    self.session.accept_play(request);
                    if let Some(peer) = &played.target {
                        self.target_joined(peer);
                    }
                    for track in &played.tracks {
                        self.consider_track(track);
                    }
                }
                Err(status) => self.refuse(status),
            },
            SessionEvent::Track(request) => self.publish_track(request),
            SessionEvent::Frame(frame) => {
                if let Link::Publisher { video, audio, meter } = &mut self.link {
                    let kind = frame.codec.kind();
                    let publisher = if kind == MediaKind::Video { video } else { audio };
                    if let Some(publisher) = publisher {
                        meter.frame(kind, frame.payload.len());
                        if let Err(err) = publisher.send(frame) {
                            debug!("frame not forwarded: {err}");
                        }
                    }
                }
            }
            SessionEvent::PublishStopped => {
                info!("publisher stopped publishing");
                self.leave(CloseReason::Left);
                self.gauge = ConnectionGauge::new("connecting");
            }
            SessionEvent::PlayStopped => {
                info!("player stopped playing");
                self.leave(CloseReason::Left);
                self.gauge = ConnectionGauge::new("connecting");
            }
            SessionEvent::Closed(_) => {}
        }
    }

    fn refuse(&mut self, status: Status) {
        warn!(code = status.code, "refused: {}", status.description);
        metrics::refused(status.code);
        self.session.refuse(status);
    }

    fn joined(&mut self, rpc: EndpointRpc, media: EndpointMedia) {
        self.span.record("room", rpc.room().as_str());
        self.span.record("peer", rpc.peer().as_str());
        self.rpc = Some(rpc);
        self.media = Some(media);
    }

    /// Resolves the stream key and joins its room as the ingress's identity.
    fn join_publisher(&mut self, stream_key: &str) -> Result<(), Status> {
        let credential = self
            .shared
            .authority
            .resolve(stream_key, IngressKind::Rtmp)
            .and_then(|credential| credential.require_publish())
            .map_err(|err| Status::bad_name(err.to_string()))?;
        let request = JoinRequest {
            name: credential.name,
            metadata: credential.metadata,
            grants: credential.grants,
            auto_subscribe: false,
            on_duplicate: self.shared.config.on_duplicate.into(),
            credential: credential.session,
            ..JoinRequest::new(credential.room, credential.identity, TransportKind::Rtmp)
        };
        let joined = self.shared.engine.join(request).map_err(|err| match err {
            ContractError::IdentityTaken { .. } => Status::bad_name(format!("this stream key is already live ({err})")),
            other => Status::failed(other.to_string()),
        })?;
        let (rpc, media) = joined.endpoint.split();
        let meter = IngestMeter::new();
        self.joined(rpc, media);
        self.link = Link::Publisher { video: None, audio: None, meter };
        self.gauge = ConnectionGauge::new("publish");
        info!(replaced = joined.replaced.is_some(), "publishing");
        Ok(())
    }

    /// Checks the player's token and joins the room.
    fn join_player(&mut self, target: &PlayTarget) -> Result<Played, Status> {
        let token = target
            .token
            .as_deref()
            .ok_or_else(|| Status::play_failed("playback needs ?token=<client token with the subscribe grant>"))?;
        let credential = self
            .shared
            .authority
            .resolve_token(token)
            .and_then(|credential| credential.for_room(&target.room))
            .and_then(|credential| credential.require_subscribe())
            .map_err(|err| Status::play_failed(err.to_string()))?;
        if credential.identity == target.identity {
            return Err(Status::play_failed("a token cannot play its own identity"));
        }
        let request = JoinRequest {
            name: credential.name,
            metadata: credential.metadata,
            grants: credential.grants,
            auto_subscribe: false,
            accept_codecs: vec![Codec::H264, Codec::Aac],
            on_duplicate: DuplicatePolicy::Replace,
            credential: credential.session,
            ..JoinRequest::new(credential.room, credential.identity, TransportKind::Rtmp)
        };
        let joined = self.shared.engine.join(request).map_err(|err| match err {
            ContractError::RoomNotFound { .. } => Status::stream_not_found(err.to_string()),
            other => Status::play_failed(other.to_string()),
        })?;
        let (rpc, media) = joined.endpoint.split();
        self.joined(rpc, media);
        self.link = Link::Player { target: target.identity.clone(), video: None, audio: None };
        self.gauge = ConnectionGauge::new("play");
        info!(target = %target.identity, "playing");
        let present = joined.peers.into_iter().find(|p| p.identity == target.identity);
        Ok(Played { tracks: joined.tracks, target: present })
    }

    /// The played peer (re)joined: a fresh clock, shared by its tracks when it publishes over
    /// RTMP or SRT (Junction's ingest puts audio and video on one timeline: FLV's, or the
    /// transport stream's PTS).
    fn target_joined(&mut self, peer: &PeerInfo) {
        self.session.play_shared_clock(matches!(peer.transport, TransportKind::Rtmp | TransportKind::Srt));
    }

    fn publish_track(&mut self, request: PublishRequest) {
        let (Link::Publisher { video, audio, .. }, Some(rpc)) = (&mut self.link, &self.rpc) else { return };
        let slot = if request.codec.kind() == MediaKind::Video { video } else { audio };
        if let Some(previous) = slot.take() {
            // The encoder changed its configuration: subscribers move to the new track.
            let _ = rpc.unpublish(previous.id());
        }
        let codec = request.codec;
        match rpc.publish(request) {
            Ok(publisher) => {
                info!(track = %publisher.id(), %codec, "track published");
                *slot = Some(publisher);
            }
            Err(err) => self.refuse(Status::failed(err.to_string())),
        }
    }

    /// Subscribes a player to `track` if it belongs to its target and fills an empty slot.
    fn consider_track(&mut self, track: &TrackInfo) {
        let (Link::Player { target, video, audio }, Some(rpc)) = (&mut self.link, &self.rpc) else { return };
        if track.peer != *target {
            return;
        }
        let (slot, codec) = match track.kind {
            MediaKind::Video => (video, Codec::H264),
            MediaKind::Audio => (audio, Codec::Aac),
        };
        if slot.is_some() {
            return;
        }
        let options = SubscribeOptions { codecs: vec![codec], layer: LayerPreference::Highest };
        match rpc.subscribe(&track.id, options) {
            Ok(subscribed) => {
                debug!(track = %track.id, codec = %subscribed.codec, "playing track");
                *slot = Some(track.id.clone());
                self.session.play_track(track.kind, &subscribed.params);
            }
            Err(err) => {
                warn!(track = %track.id, codec = %track.codec, "cannot play track: {err}");
                let status = Status {
                    code: "NetStream.Play.Failed",
                    description: format!("{} track {} ({}) cannot be played: {err}", track.kind, track.id, track.codec),
                };
                self.session.play_warning(&status);
            }
        }
    }

    /// A played track went away: its slot frees up, and another track of the target may fill it.
    fn forget_track(&mut self, track: &TrackId) {
        let Link::Player { target, video, audio } = &mut self.link else { return };
        let kind = if video.as_ref() == Some(track) {
            *video = None;
            MediaKind::Video
        } else if audio.as_ref() == Some(track) {
            *audio = None;
            MediaKind::Audio
        } else {
            return;
        };
        let target = target.clone();
        self.session.play_clear(kind);
        let others: Vec<TrackInfo> = self.rpc.as_ref().map_or_else(Vec::new, |rpc| {
            let snapshot = rpc.snapshot();
            snapshot.peers.into_iter().filter(|p| p.info.identity == target).flat_map(|p| p.tracks).collect()
        });
        for other in others.iter().filter(|t| t.id != *track) {
            self.consider_track(other);
        }
    }

    fn on_engine_event(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::PeerJoined(peer) => {
                if matches!(&self.link, Link::Player { target, .. } if *target == peer.identity) {
                    self.target_joined(&peer);
                }
            }
            EndpointEvent::TrackPublished(track) => self.consider_track(&track),
            EndpointEvent::TrackUnpublished { track, .. } | EndpointEvent::Unsubscribed { track } => {
                self.forget_track(&track)
            }
            // The engine could not keep serving it (its transcoder failed): another track of
            // the target may take the slot.
            EndpointEvent::SubscriptionFailed { track, reason } => {
                warn!(track = %track, "played track lost: {reason}");
                self.session.play_warning(&Status {
                    code: "NetStream.Play.Failed",
                    description: format!("track {track} lost: {reason}"),
                });
                self.forget_track(&track)
            }
            _ => {}
        }
    }

    fn on_media(&mut self, item: MediaOut) {
        match item {
            MediaOut::Frame { track, frame } => {
                if let Link::Player { video, audio, .. } = &self.link
                    && (video.as_ref() == Some(&track) || audio.as_ref() == Some(&track))
                {
                    self.session.play_frame(&frame);
                }
            }
            // An RTMP encoder cannot be asked for a keyframe; its GOP length decides.
            MediaOut::KeyframeRequest { .. } | MediaOut::BitrateHint { .. } => {}
        }
    }
}
