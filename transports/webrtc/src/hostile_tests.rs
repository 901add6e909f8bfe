//! Hostile datagrams through the real session path: a str0m client publishes VP8 through a
//! session of the media plane while its own address (the one the demux bound after its genuine
//! STUN check) and another socket send what an attacker would — the RTP header-extension bomb,
//! truncated and absurd-length RTCP, SRTP with forged tags, STUN with a guessed ufrag or a bad
//! integrity. A viewer in the engine keeps receiving the publisher's frames, byte for byte.
//! Then a panic injected into the session's task ends that session the protocol's way: the
//! client hears DTLS close_notify, the surface gets `Closed`, the peer leaves its room; and a
//! session that never connects is ended at the connect deadline.
//!
//! A unit test of the crate (not under tests/) only so that it can inject that panic
//! ([`SessionHandle::crash`], test builds only); everything else goes through the public API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate as junction_webrtc;
use junction_core::{CloseReason, Codec, MediaOut, PeerId, RoomId, TransportKind};
use junction_engine::{Engine, EngineConfig, JoinRequest};
use junction_webrtc::{
    EgressPolicy, SessionEvent, SessionSignal, SessionSpec, SignalReceiver, WebrtcConfig, WebrtcTransport,
    signal_channel,
};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// The RTP header-extension bomb: a one-byte element of 16 bytes in a one-word block.
const EXTENSION_BOMB: [u8; 20] =
    [0x90, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0x00, 0x01, 0x1f, 0x00, 0x00, 0x00];

/// What the client task reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Connecting,
    Connected,
    /// The server closed the DTLS connection.
    Closed,
}

/// A str0m peer that offers one send-only VP8 m-line and, once connected, sends a frame every
/// 20 ms whose last byte is its index (a keyframe every 10).
struct Client {
    rtc: Rtc,
    socket: Arc<UdpSocket>,
    mid: Mid,
}

impl Client {
    async fn offer() -> (Client, String, str0m::change::SdpPendingOffer) {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let mut rtc = Rtc::builder().clear_codecs().enable_vp8(true).build(Instant::now());
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        (Client { rtc, socket, mid }, offer.to_sdp_string(), pending)
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn run(mut self, state: watch::Sender<ClientState>, stop: CancellationToken) {
        let mut buf = vec![0u8; 2048];
        let mut next_frame = Instant::now();
        let mut index: u32 = 0;
        let local = self.addr();
        loop {
            let timeout = loop {
                match self.rtc.poll_output() {
                    Ok(Output::Timeout(at)) => break at,
                    Ok(Output::Transmit(t)) => {
                        let _ = self.socket.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(Event::Connected)) => {
                        let _ = state.send(ClientState::Connected);
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => return,
                }
            };
            if !self.rtc.is_alive() {
                let _ = state.send(ClientState::Closed);
                return;
            }
            if *state.borrow() == ClientState::Connected && Instant::now() >= next_frame {
                self.send_frame(index);
                index += 1;
                next_frame += Duration::from_millis(20);
                continue;
            }
            let wake = timeout.min(next_frame).max(Instant::now() + Duration::from_millis(1));
            tokio::select! {
                _ = stop.cancelled() => return,
                received = self.socket.recv_from(&mut buf) => {
                    let Ok((len, source)) = received else { continue };
                    let Ok(contents) = buf[..len].try_into() else { continue };
                    let receive = Receive { proto: Protocol::Udp, source, destination: local, contents };
                    if self.rtc.handle_input(Input::Receive(Instant::now(), receive)).is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn send_frame(&mut self, index: u32) {
        let Some(writer) = self.rtc.writer(self.mid) else { return };
        let Some(pt) = writer.payload_params().next().map(|p| p.pt()) else { return };
        // VP8: a keyframe (P bit clear, start code 9d 01 2a) every 10 frames; the index last.
        let mut frame = vec![if index.is_multiple_of(10) { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        frame.extend_from_slice(&index.to_be_bytes());
        let _ = writer.write(pt, Instant::now(), MediaTime::from_90khz(3000 * index as u64), frame);
    }
}

async fn media_plane(config: WebrtcConfig) -> (WebrtcTransport, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = WebrtcConfig { udp_listen: "127.0.0.1:0".parse().unwrap(), ..config };
    (junction_webrtc::listen(&config, shutdown.clone()).await.expect("media plane"), shutdown)
}

/// The indexes of the frames a viewer receives within `window`.
async fn frames_within(viewer: &mut junction_engine::EndpointMedia, window: Duration) -> Vec<u32> {
    let mut indexes = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, viewer.recv()).await {
        if let MediaOut::Frame { frame, .. } = item {
            let payload = &frame.payload[..];
            assert!(
                payload.len() >= 10 && payload[1..6] == [0x02, 0x00, 0x9d, 0x01, 0x2a],
                "frame intact: {payload:02x?}"
            );
            indexes.push(u32::from_be_bytes(payload[payload.len() - 4..].try_into().unwrap()));
        }
    }
    indexes
}

/// What an attacker who knows the media port (and the victim's address) sends.
fn hostile_datagrams() -> Vec<Vec<u8>> {
    let mut datagrams = vec![EXTENSION_BOMB.to_vec()];
    // The bomb with a tag's worth of bytes after it, and with fifteen announced CSRCs.
    datagrams.push([&EXTENSION_BOMB[..], &[0u8; 16]].concat());
    datagrams.push(vec![0x8f, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]);
    // Truncated RTCP and RTCP whose length runs far past the datagram.
    datagrams.push(vec![0x80, 201, 0x00, 0x01, 1, 2, 3]);
    datagrams.push([&[0x80u8, 200, 0xff, 0xff, 1, 2, 3, 4][..], &[0xaa; 30][..]].concat());
    // Well-formed outside, forged inside: SRTP and SRTCP with tags nobody computed.
    datagrams.push([&[0x80u8, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef][..], &[0x55; 60][..]].concat());
    datagrams.push([&[0x80u8, 201, 0x00, 0x01, 1, 2, 3, 4][..], &[0x80, 0, 0, 1][..], &[0x66; 10][..]].concat());
    // A DTLS record whose length runs past the datagram, and plain garbage.
    datagrams.push(vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0x40, 0x00, 1]);
    datagrams.push(vec![0xff; 40]);
    datagrams
}

/// A binding request for `username` (serialised by str0m) whose MESSAGE-INTEGRITY is 20 bytes
/// nobody computed: what an attacker without the session's ICE password can send.
fn forged_check(username: &str) -> Vec<u8> {
    use str0m::ice::{StunMessage, TransId};
    let message = StunMessage::binding_request(username, TransId::new(), true, 1, 1_000, true);
    let mut buf = vec![0u8; 512];
    let len = message.to_bytes(Some(b"unknown"), &mut buf, |_, _| [0x42; 20]).unwrap();
    buf.truncate(len);
    buf
}

fn ice_ufrag(sdp: &str) -> &str {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).expect("a=ice-ufrag")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_dropped_while_the_session_keeps_publishing_and_a_panic_ends_it_cleanly() {
    let engine = Engine::new(EngineConfig::default());
    let (transport, shutdown) = media_plane(WebrtcConfig::default()).await;
    let room = RoomId::new("stage").unwrap();

    let (client, offer, pending) = Client::offer().await;
    let negotiated = transport.negotiate(&offer, None).expect("negotiated");
    let joined =
        engine.join(JoinRequest::new(room.clone(), PeerId::new("cam").unwrap(), TransportKind::Webrtc)).unwrap();
    let answer = negotiated.answer_sdp().to_owned();
    let (signals_tx, mut events) = signal_channel();
    let handle = negotiated
        .start(joined.endpoint, SessionSpec::new("webrtc", true, EgressPolicy::Nothing).with_signals(signals_tx));
    let mut client_rtc = client;
    client_rtc.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let victim = client_rtc.socket.clone();
    let (state_tx, mut state) = watch::channel(ClientState::Connecting);
    let stop = CancellationToken::new();
    tokio::spawn(client_rtc.run(state_tx, stop.clone()));
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ClientState::Connected)).await.expect("connected").unwrap();

    let mut viewer_join = JoinRequest::new(room.clone(), PeerId::new("viewer").unwrap(), TransportKind::Internal);
    viewer_join.accept_codecs = vec![Codec::Vp8];
    // The RPC half stays alive: dropping it would leave the room.
    let (_viewer_rpc, mut viewer) = engine.join(viewer_join).unwrap().endpoint.split();
    let before = frames_within(&mut viewer, Duration::from_secs(1)).await;
    assert!(before.len() >= 10, "the viewer decodes the publisher before the attack: {before:?}");

    // The attack, from the victim's own (bound) address and from a stranger's.
    let media_port = transport.local_addr();
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_ufrag = ice_ufrag(&answer).to_owned();
    let forged = [forged_check(&format!("{server_ufrag}:{}", ice_ufrag(&offer))), forged_check("guessedufrag:x")];
    for _ in 0..50 {
        for datagram in hostile_datagrams().iter().chain(&forged) {
            victim.send_to(datagram, media_port).await.unwrap();
            attacker.send_to(datagram, media_port).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = frames_within(&mut viewer, Duration::from_secs(1)).await;
    assert!(during.len() >= 10, "the publisher kept reaching the viewer: {during:?}");
    assert!(during.windows(2).all(|w| w[1] > w[0]), "in order: {during:?}");
    assert!(during[0] > *before.last().unwrap());
    assert!(!handle.is_closed());
    assert_eq!(next_event(&mut events).await, Some(SessionEvent::Connected));

    // A bug in the session's task ends this session, the protocol's way.
    handle.crash().await;
    tokio::time::timeout(WAIT, handle.closed()).await.expect("the session ended");
    let closed = tokio::time::timeout(WAIT, next_event(&mut events)).await.expect("Closed in time");
    assert!(
        matches!(&closed, Some(SessionEvent::Closed { reason: CloseReason::Error { message } }) if message.contains("internal error")),
        "{closed:?}"
    );
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ClientState::Closed))
        .await
        .expect("the client heard close_notify")
        .unwrap();
    let peers: Vec<String> = engine.room(&room).unwrap().peers.iter().map(|p| p.info.identity.to_string()).collect();
    assert_eq!(peers, ["viewer"], "the panicked session's peer left its room");

    // The media plane serves the next session as before.
    let (client, offer, pending) = Client::offer().await;
    let negotiated = transport.negotiate(&offer, None).expect("negotiated");
    let joined =
        engine.join(JoinRequest::new(room.clone(), PeerId::new("cam2").unwrap(), TransportKind::Webrtc)).unwrap();
    let answer = negotiated.answer_sdp().to_owned();
    let second = negotiated.start(joined.endpoint, SessionSpec::new("webrtc", true, EgressPolicy::Nothing));
    let mut client = client;
    client.rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();
    let (state_tx, mut state) = watch::channel(ClientState::Connecting);
    tokio::spawn(client.run(state_tx, stop.clone()));
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == ClientState::Connected)).await.expect("connected").unwrap();
    let after = frames_within(&mut viewer, Duration::from_secs(1)).await;
    assert!(after.len() >= 10, "a new publisher reaches the viewer: {after:?}");
    second.close();
    stop.cancel();
    shutdown.cancel();
}

/// The next [`SessionEvent`] among a session's signals (the room's events pass by too).
async fn next_event(signals: &mut SignalReceiver) -> Option<SessionEvent> {
    loop {
        if let SessionSignal::Event(event) = signals.recv().await? {
            return Some(event);
        }
    }
}

#[tokio::test]
async fn a_session_that_never_connects_ends_at_the_connect_deadline() {
    let engine = Engine::new(EngineConfig::default());
    let (transport, shutdown) = media_plane(WebrtcConfig { connect_timeout_s: 1, ..WebrtcConfig::default() }).await;
    let (_client, offer, _pending) = Client::offer().await;
    let negotiated = transport.negotiate(&offer, None).expect("negotiated");
    let room = RoomId::new("lobby").unwrap();
    let joined =
        engine.join(JoinRequest::new(room.clone(), PeerId::new("ghost").unwrap(), TransportKind::Webrtc)).unwrap();
    let (signals_tx, mut events) = signal_channel();
    let handle = negotiated
        .start(joined.endpoint, SessionSpec::new("whep", false, EgressPolicy::Nothing).with_signals(signals_tx));
    let started = Instant::now();
    tokio::time::timeout(WAIT, handle.closed()).await.expect("ended by the deadline");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the deadline");
    assert_eq!(next_event(&mut events).await, Some(SessionEvent::Closed { reason: CloseReason::TransportTimeout }));
    assert!(engine.room(&room).is_none_or(|r| r.peers.is_empty()), "the peer left");
    shutdown.cancel();
}
