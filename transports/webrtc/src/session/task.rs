//! The session task: the canonical sans-I/O loop around one str0m `Rtc`. Drain `poll_output`
//! (sending datagrams, handling events) until str0m names its next timeout; then wait for
//! exactly one thing — a datagram from the UDP driver, a frame or feedback from the engine, a
//! room event, a command from the handle, or the timeout — and feed it in.
//!
//! It ends when the peer leaves (DTLS close, the handle's `close`), does not complete ICE and
//! DTLS within the connect timeout, goes silent or stays disconnected for the ICE timeout, is
//! kicked or replaced, or the server shuts down. A panic inside the loop is contained
//! ([`supervise::contain`]): the session ends with an error like any other way out — DTLS
//! close_notify to the peer, `Closed` to the signalling surface, its routes freed — and an owned
//! endpoint leaves its room on every way out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use junction_core::{CloseReason, EndpointEvent, MediaOut, PeerId, SubscribeOptions};
use junction_engine::{EndpointMedia, EndpointRpc, SubscribedTrack, supervise};
use str0m::bwe::BweKind;
use str0m::change::SdpOffer;
use str0m::channel::ChannelId;
use str0m::media::Mid;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, IceCreds, Input, Output, Rtc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace};

use super::assign::{Assignment, RoomTrack};
use super::egress::{Egress, EgressLine, LineChange, SendPacing};
use super::ingest::{Ingest, IngestLine};
use super::room::RoomEgress;
use super::signals::{SessionSignal, Signals};
use super::viewer::Viewer;
use super::{Command, EgressPolicy, IceCredentials, SessionEvent, SessionSpec, wire_kind};
use crate::driver::{Datagram, MuxHandle, Via};
use crate::error::SessionError;
use crate::fanout_packets::FanoutPackets;
use crate::ice_tcp::TcpLink;
use crate::sdp::{self, MediaLine};
use crate::send_batch::Lane;
use crate::udp_mux::SessionKey;

enum Policy {
    Nothing,
    Viewer(Viewer),
    Room(RoomEgress),
}

pub(crate) struct Setup {
    pub(crate) rtc: Rtc,
    pub(crate) lines: Vec<(Mid, MediaLine)>,
    pub(crate) key: SessionKey,
    pub(crate) mux: MuxHandle,
    pub(crate) inbox: mpsc::Receiver<Datagram>,
    pub(crate) commands: mpsc::Receiver<Box<Command>>,
    pub(crate) rpc: EndpointRpc,
    pub(crate) media: EndpointMedia,
    pub(crate) ice_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pacing: SendPacing,
    pub(crate) packets: FanoutPackets,
    pub(crate) shutdown: CancellationToken,
    pub(crate) spec: SessionSpec,
}

pub(crate) struct Session {
    rtc: Rtc,
    key: SessionKey,
    mux: MuxHandle,
    inbox: mpsc::Receiver<Datagram>,
    commands: mpsc::Receiver<Box<Command>>,
    rpc: EndpointRpc,
    media: EndpointMedia,
    ingest: Ingest,
    egress: Egress,
    policy: Policy,
    signals: Signals,
    /// The surface stopped reading its signals: the session ends.
    signals_lost: bool,
    /// Open data channels by id, with their labels.
    channels: HashMap<ChannelId, String>,
    ice_timeout: Duration,
    /// The surface's name (`whip`, `whep`, `webrtc`), for the panic count.
    label: &'static str,
    /// ICE and DTLS must be up by then (`None` once they are).
    connect_by: Option<Instant>,
    connect_timeout: Duration,
    /// When the last datagram arrived from the peer.
    last_heard: Instant,
    disconnected_since: Option<Instant>,
    /// The ICE-TCP connections the peer reached this session over, by remote address, oldest
    /// first (at most [`TCP_LINKS_PER_SESSION`]).
    tcp_links: Vec<(SocketAddr, TcpLink)>,
    /// The connection's last measured round trip (str0m's peer stats), for streams that have
    /// no round trip of their own.
    rtt: Option<Duration>,
    shutdown: CancellationToken,
}

/// What a session whose task panicked tells its peer and surface (the details are in the log).
const PANIC_MESSAGE: &str = "the media session failed (internal error)";
/// ICE-TCP connections one session keeps a way back on (a peer opens one per local candidate
/// it tries; the oldest is forgotten first).
const TCP_LINKS_PER_SESSION: usize = 4;
/// Outputs taken from str0m while closing: the close_notify and RTCP BYE, with room to spare.
const CLOSE_OUTPUTS: usize = 64;

impl Session {
    pub(crate) fn new(setup: Setup) -> Session {
        let Setup {
            rtc,
            lines,
            key,
            mux,
            inbox,
            commands,
            rpc,
            media,
            ice_timeout,
            connect_timeout,
            pacing,
            packets,
            shutdown,
            spec,
        } = setup;
        let usable = |l: &&(Mid, MediaLine)| !l.1.codecs.is_empty();
        let ingest_lines = lines
            .iter()
            .filter(usable)
            .filter(|(_, l)| l.peer_sends)
            .map(|(mid, l)| IngestLine::new(*mid, wire_kind(l.kind), l.layers.clone()))
            .collect();
        let egress_lines = match spec.egress {
            EgressPolicy::Nothing => Vec::new(),
            _ => lines
                .iter()
                .filter(usable)
                .filter(|(_, l)| l.peer_receives)
                .map(|(mid, l)| EgressLine::new(*mid, l.kind, l.codecs.clone()))
                .collect(),
        };
        let policy = match &spec.egress {
            EgressPolicy::Nothing => Policy::Nothing,
            EgressPolicy::Viewer { identity } => Policy::Viewer(Viewer::new(room_tracks(&rpc, identity.clone()))),
            EgressPolicy::Room => Policy::Room(RoomEgress::new(current_subscriptions(&rpc))),
        };
        let mut ingest = Ingest::new(ingest_lines, spec.publish);
        ingest.label(spec.labels.clone());
        Session {
            rtc,
            key,
            mux,
            inbox,
            commands,
            rpc,
            media,
            ingest,
            egress: Egress::new(egress_lines, pacing, packets),
            policy,
            signals: Signals::new(spec.signals),
            signals_lost: false,
            channels: HashMap::new(),
            ice_timeout,
            label: spec.label,
            connect_by: Some(Instant::now() + connect_timeout),
            connect_timeout,
            last_heard: Instant::now(),
            disconnected_since: None,
            tcp_links: Vec::new(),
            rtt: None,
            shutdown,
        }
    }

    /// Runs the session to its end. The session comes boxed: an `async fn` keeps an argument
    /// it takes by value twice in its future (the argument and the moved-in local), and the
    /// spawned block held it a third time; a `Session` is 10.8 KB (str0m's `Rtc` 10 KB of it),
    /// which made each idle session's task 37 KB instead of 14.
    pub(crate) async fn run(mut self: Box<Self>) {
        metrics::gauge!("junction_webrtc_sessions").increment(1.0);
        info!("session started");
        let looped = supervise::contain(self.label, async {
            self.apply_policy();
            self.run_until_closed().await
        })
        .await;
        let reason = looped.unwrap_or_else(|_| CloseReason::Error { message: PANIC_MESSAGE.into() });
        info!(reason = reason.as_str(), "session ended");
        if reason != CloseReason::TransportTimeout {
            // Best effort: DTLS close_notify and RTCP BYE tell the peer at once. After a panic
            // str0m may be in any state, so a second panic here only loses the goodbye.
            let goodbye = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.close_transmits()));
            for (proto, destination, payload) in goodbye.unwrap_or_default() {
                self.transmit(proto, destination, payload).await;
            }
        }
        self.emit(SessionEvent::Closed { reason: reason.clone() });
        self.rpc.leave(reason);
    }

    /// Closes the `Rtc` and takes what it wants sent, without handling its events.
    fn close_transmits(&mut self) -> Vec<(Protocol, SocketAddr, Vec<u8>)> {
        let mut transmits = Vec::new();
        if !self.rtc.is_alive() || self.rtc.close().is_err() {
            return transmits;
        }
        for _ in 0..CLOSE_OUTPUTS {
            match self.rtc.poll_output() {
                Ok(Output::Transmit(transmit)) => {
                    transmits.push((transmit.proto, transmit.destination, transmit.contents.into()))
                }
                Ok(Output::Event(_)) => {}
                Ok(Output::Timeout(_)) | Err(_) => break,
            }
        }
        transmits
    }

    async fn run_until_closed(&mut self) -> CloseReason {
        // Made once for the session, not on every turn of the loop (every datagram and frame):
        // a fresh `cancelled()` takes the token's lock and registers a waiter, and a fresh
        // `sleep_until` a timer, only to drop both a moment later.
        let shutdown = self.shutdown.clone().cancelled_owned();
        let wake = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(shutdown, wake);
        loop {
            let timeout = match self.drain().await {
                Ok(timeout) => timeout,
                Err(reason) => return reason,
            };
            self.report_line_changes();
            if !self.rtc.is_alive() {
                return CloseReason::Left;
            }
            if self.signals_lost {
                info!("the signalling surface stopped reading the session's signals");
                return CloseReason::Overloaded;
            }
            let now = Instant::now();
            if timeout <= now {
                // Time moves on even while datagrams and frames keep every branch below busy.
                if let Err(reason) = self.feed(Input::Timeout(now)) {
                    return reason;
                }
                continue;
            }
            if let Some(connect_by) = self.connect_by
                && now >= connect_by
            {
                info!(timeout_s = self.connect_timeout.as_secs(), "ICE and DTLS did not complete in time");
                return CloseReason::TransportTimeout;
            }
            let mut deadline = self.last_heard + self.ice_timeout;
            if let Some(since) = self.disconnected_since {
                deadline = deadline.min(since + self.ice_timeout);
            }
            if let Some(connect_by) = self.connect_by {
                deadline = deadline.min(connect_by);
            }
            if now >= deadline {
                info!(timeout_s = self.ice_timeout.as_secs(), "peer silent or disconnected for the ICE timeout");
                return CloseReason::TransportTimeout;
            }
            let wake_at = tokio::time::Instant::from_std(timeout.min(deadline));
            if wake.deadline() != wake_at {
                wake.as_mut().reset(wake_at);
            }
            tokio::select! {
                _ = &mut shutdown => return CloseReason::ServerShutdown,
                Some(command) = self.commands.recv() => {
                    // Boxed: commands are rare, and their future (1.9 KB: it drains str0m and
                    // sends) would otherwise sit in every idle session's task.
                    if let Some(reason) = Box::pin(self.on_command(*command)).await {
                        return reason;
                    }
                }
                event = self.rpc.next_event() => match event {
                    None => return CloseReason::Left,
                    Some(EndpointEvent::Closed { reason }) => return reason,
                    Some(event) => {
                        self.signal(SessionSignal::Room(event.clone()));
                        self.on_room_event(event);
                    }
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
                _ = &mut wake => {}
            }
        }
    }

    /// Drains str0m's output until it names its next timeout.
    async fn drain(&mut self) -> Result<Instant, CloseReason> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => return Ok(at),
                Ok(Output::Transmit(transmit)) => {
                    self.transmit(transmit.proto, transmit.destination, transmit.contents.into()).await
                }
                Ok(Output::Event(event)) => self.on_rtc_event(event)?,
                Err(err) => return Err(CloseReason::Error { message: format!("WebRTC: {err}") }),
            }
        }
    }

    fn feed(&mut self, input: Input) -> Result<(), CloseReason> {
        self.rtc.handle_input(input).map_err(|err| CloseReason::Error { message: format!("WebRTC: {err}") })
    }

    fn emit(&mut self, event: SessionEvent) {
        self.signal(SessionSignal::Event(event));
    }

    /// Tells a surface that listens for signals (see [`SessionSignal`]).
    fn signal(&mut self, signal: SessionSignal) {
        if !self.signals.send(signal) {
            self.signals_lost = true;
        }
    }

    fn report_line_changes(&mut self) {
        for change in self.egress.take_changes() {
            self.emit(match change {
                LineChange::Sending { mid, track } => SessionEvent::Sending { mid: mid.to_string(), track },
                LineChange::Stopped { mid, track } => SessionEvent::Stopped { mid: mid.to_string(), track },
            });
        }
    }

    /// Makes the sending m-lines match the policy; a room session may need to renegotiate.
    fn apply_policy(&mut self) {
        match &mut self.policy {
            Policy::Nothing => {}
            Policy::Viewer(viewer) => viewer.reassign(&mut self.egress, &mut self.rtc, &self.rpc, &self.media),
            Policy::Room(room) => {
                if let Some((id, sdp)) = room.place(&mut self.egress, &mut self.rtc, &self.rpc, &self.media) {
                    let tracks = room.offered();
                    self.signal(SessionSignal::Offer { id, sdp, tracks });
                }
            }
        }
    }

    /// Sends one packet the way its peer address was reached: the shared UDP socket (in the
    /// urgent lane unless it is video RTP), or the ICE-TCP connection from that address.
    async fn transmit(&mut self, proto: Protocol, destination: SocketAddr, payload: Vec<u8>) {
        if proto == Protocol::Udp {
            let lane = Lane::of(&payload, |pt| self.egress.is_audio_pt(pt));
            return self.mux.send(destination, payload, lane).await;
        }
        let Some(at) = self.tcp_links.iter().position(|(addr, _)| *addr == destination) else {
            trace!(%destination, "no ICE-TCP connection from that address (any more)");
            return;
        };
        if !self.tcp_links[at].1.send(payload) {
            self.tcp_links.remove(at);
        }
    }

    fn on_datagram(&mut self, datagram: Datagram) -> Result<(), CloseReason> {
        self.last_heard = self.last_heard.max(datagram.at);
        let Ok(contents) = datagram.payload[..].try_into() else {
            trace!(source = %datagram.source, "datagram that is not STUN, DTLS, RTP or RTCP");
            return Ok(());
        };
        let (proto, destination) = match datagram.via {
            Via::Udp => (Protocol::Udp, self.mux.local_candidate(datagram.source, false)),
            Via::Tcp(link) => {
                self.keep_tcp_link(datagram.source, link);
                (Protocol::Tcp, self.mux.local_candidate(datagram.source, true))
            }
        };
        let receive = Receive { proto, source: datagram.source, destination, contents };
        self.feed(Input::Receive(datagram.at, receive))
    }

    /// Remembers the way back to an ICE-TCP peer address (a new connection from it replaces a
    /// closed one).
    fn keep_tcp_link(&mut self, source: SocketAddr, link: TcpLink) {
        if let Some(at) = self.tcp_links.iter().position(|(addr, _)| *addr == source) {
            if self.tcp_links[at].1.is_closed() {
                self.tcp_links[at].1 = link;
            }
            return;
        }
        if self.tcp_links.len() >= TCP_LINKS_PER_SESSION {
            self.tcp_links.remove(0);
        }
        self.tcp_links.push((source, link));
    }

    fn on_rtc_event(&mut self, event: Event) -> Result<(), CloseReason> {
        match event {
            Event::Connected => {
                info!("connected");
                self.connect_by = None;
                self.egress.on_connected(&self.media);
                self.emit(SessionEvent::Connected);
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
            Event::MediaData(data) => {
                self.ingest.on_media(&mut self.rtc, &self.rpc, data);
                for (mid, track) in self.ingest.take_published() {
                    self.signal(SessionSignal::Published { mid: mid.to_string(), track });
                }
            }
            Event::ChannelOpen(id, label) => {
                debug!(%label, "data channel open");
                self.channels.insert(id, label.clone());
                self.signal(SessionSignal::ChannelOpen { label });
            }
            Event::ChannelData(data) => {
                if let Some(label) = self.channels.get(&data.id).cloned() {
                    self.signal(SessionSignal::ChannelData { label, binary: data.binary, data: data.data });
                }
            }
            Event::ChannelClose(id) => {
                if let Some(label) = self.channels.remove(&id) {
                    self.signal(SessionSignal::ChannelClosed { label });
                }
            }
            Event::KeyframeRequest(request) => self.egress.on_keyframe_request(request.mid, &self.media),
            Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
                self.egress.on_estimate(estimate.as_u64(), &self.rpc, &self.media);
            }
            Event::PeerStats(stats) => self.rtt = stats.rtt.or(self.rtt),
            Event::MediaIngressStats(stats) => self.ingest.on_stats(&stats, self.rtt),
            Event::MediaEgressStats(stats) => self.egress.on_stats(&stats, self.rtt, &self.media),
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
                self.mux.add_ufrag(self.key, &local.ufrag, &local.pass);
                for candidate in candidates {
                    if let Err(reason) = self.drain().await {
                        return Some(reason);
                    }
                    self.rtc.add_remote_candidate(candidate);
                }
                info!("ICE restarted");
                let _ = reply.send(IceCredentials { ufrag: local.ufrag, pwd: local.pass });
            }
            Command::AcceptOffer { sdp, labels, reply } => {
                self.ingest.label(labels);
                let answer = self.accept_offer(&sdp);
                let _ = reply.send(answer);
                if let Err(reason) = self.drain().await {
                    return Some(reason);
                }
                self.apply_policy();
            }
            Command::AcceptAnswer { sdp, reply } => {
                let result = match &mut self.policy {
                    Policy::Room(room) => room.on_answer(&sdp, &mut self.egress, &mut self.rtc, &self.rpc, &self.media),
                    _ => Err(SessionError::OfferRefused("this session never sends offers".into())),
                };
                let _ = reply.send(result);
                if let Err(reason) = self.drain().await {
                    return Some(reason);
                }
                // More subscriptions may have arrived while the offer was out.
                self.apply_policy();
            }
            Command::Close => return Some(CloseReason::Left),
            #[cfg(test)]
            Command::Crash => panic!("injected session panic"),
            Command::Leave(reason) => return Some(reason),
            Command::Request { request, reply } => {
                let held = request.held_layer();
                let result = request.apply(&self.rpc);
                if let (Ok(_), Some((track, forced))) = (&result, held) {
                    self.egress.force_layer(&track, forced, &self.rpc);
                }
                let _ = reply.send(result);
            }
            Command::ChannelSend { label, binary, data } => {
                let id = self.channels.iter().find(|(_, l)| **l == label).map(|(id, _)| *id);
                if let Some(mut channel) = id.and_then(|id| self.rtc.channel(id))
                    && let Err(err) = channel.write(binary, &data)
                {
                    debug!(%label, "data channel write failed: {err}");
                }
            }
        }
        None
    }

    /// A new offer from the peer: new receiving m-lines publish, new sending ones become
    /// available to the policy, m-lines the peer stopped are let go.
    fn accept_offer(&mut self, sdp: &str) -> Result<String, SessionError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|err| SessionError::BadSdp(err.to_string()))?;
        if let Policy::Room(room) = &mut self.policy
            && let Some(id) = room.abandon_offer()
        {
            // Marked before the answer goes back: the abandoned offer may still be queued for
            // the surface, which must not pass it on once the peer has this answer.
            self.signals.withdraw(id);
        }
        let before = self.rtc.direct_api().local_ice_credentials();
        let answer =
            self.rtc.sdp_api().accept_offer(offer).map_err(|err| SessionError::OfferRefused(err.to_string()))?;
        // An offer with new ICE credentials restarts ICE (the browser's `restartIce()`): our
        // answer carries new ones too, and the socket must route checks for them to us.
        let local = self.rtc.direct_api().local_ice_credentials();
        if local.ufrag != before.ufrag {
            info!("ICE restarted by the peer's offer");
            self.mux.add_ufrag(self.key, &local.ufrag, &local.pass);
        }
        for section in sdp::offer_sections(sdp) {
            let mid = Mid::from(section.mid.as_str());
            let Some(media) = self.rtc.media(mid) else { continue };
            if media.disabled() {
                self.ingest.stop(mid, &self.rpc);
                if let Some(index) = self.egress.line_of(mid) {
                    self.egress.detach(index);
                }
                continue;
            }
            let line = sdp::describe(&self.rtc, media, &section);
            if line.peer_sends && !self.ingest.has(mid) {
                self.ingest.add(IngestLine::new(mid, wire_kind(line.kind), line.layers.clone()));
            }
            if line.peer_receives && !self.egress.has_mid(mid) && !matches!(self.policy, Policy::Nothing) {
                self.egress.add_line(EgressLine::new(mid, line.kind, line.codecs.clone()));
            }
        }
        Ok(answer.to_sdp_string())
    }

    fn on_room_event(&mut self, event: EndpointEvent) {
        match &mut self.policy {
            Policy::Nothing => {}
            Policy::Viewer(viewer) => {
                viewer.on_room_event(&event, &mut self.egress, &mut self.rtc, &self.rpc, &self.media)
            }
            Policy::Room(room) => {
                room.on_room_event(&event, &mut self.egress);
                self.apply_policy();
            }
        }
        if let EndpointEvent::SubscriptionFailed { track, reason } = event {
            debug!(%track, "subscription failed: {reason}");
        }
    }

    fn on_media(&mut self, item: MediaOut) {
        match item {
            MediaOut::Frame { track, frame } => self.egress.write(&mut self.rtc, &self.media, &track, frame),
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

/// The room's tracks a viewer may be shown, oldest publisher first so the newest wins.
fn room_tracks(rpc: &EndpointRpc, identity: Option<PeerId>) -> Assignment {
    let mut assignment = Assignment::new(identity);
    let mut peers = rpc.snapshot().peers;
    peers.retain(|p| p.info.identity != *rpc.peer());
    peers.sort_by_key(|p| p.info.joined_at_ms);
    for peer in peers {
        for track in peer.tracks {
            assignment.add(RoomTrack { id: track.id, peer: track.peer, kind: track.kind });
        }
    }
    assignment
}

/// The peer's subscriptions when the session starts (a room session of a peer that joined
/// before it negotiated media).
fn current_subscriptions(rpc: &EndpointRpc) -> Vec<SubscribedTrack> {
    let snapshot = rpc.snapshot();
    let Some(me) = snapshot.peers.iter().find(|p| p.info.identity == *rpc.peer()) else { return Vec::new() };
    // Subscribing again to a subscribed track only reports how it is delivered.
    me.subscriptions.iter().filter_map(|track| rpc.subscribe(track, SubscribeOptions::default()).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, R>(_async_fn: fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// An idle session's memory is mostly its task: the task's future must hold the session by
    /// its box (an `async fn` taking the 10.8 KB session by value keeps it twice: 26 KB) and no
    /// kilobytes of locals across its awaits (2.8 KB when this was written).
    #[test]
    fn an_idle_session_task_stays_small() {
        let run = future_size::<Box<Session>, _>(Session::run);
        assert!(run <= 4096, "the session task's future is {run} bytes");
    }
}
