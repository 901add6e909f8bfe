//! A viewer whose first keyframe is written before its connection is up keeps the frames that
//! follow it: str0m holds what a session writes until SRTP is ready, so connecting must not
//! send the video back to waiting for a keyframe. The publisher here cannot make a keyframe on
//! request (as an RTMP or SRT encoder cannot): before the fix, a WHEP viewer of an RTMP stream
//! that joined just as a keyframe passed lost the rest of that GOP (measured with `junction
//! bench rtmp`: one second of video per viewer). A str0m client plays the viewer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{Codec, MediaFrame, MediaTime, PeerId, PublishRequest, RoomId, TransportKind};
use junction_engine::{Engine, EngineConfig, JoinRequest};
use junction_webrtc::{EgressPolicy, SessionEvent, SessionSignal, SessionSpec, WebrtcConfig, signal_channel};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
/// Frames the publisher sends; only the first is a keyframe.
const FRAMES: u32 = 30;

/// A VP8 frame whose last four bytes are its index (a keyframe has the P bit clear).
fn vp8(index: u32, at: Instant) -> MediaFrame {
    let mut payload = vec![if index == 0 { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    payload.extend_from_slice(&index.to_be_bytes());
    MediaFrame::video(Codec::Vp8, MediaTime::new(u64::from(index) * 3000, 90_000), index == 0, at, Bytes::from(payload))
}

/// Runs a receive-only str0m peer until `stop`, reporting the index of every frame it gets.
async fn run_viewer(mut rtc: Rtc, socket: UdpSocket, frames: mpsc::UnboundedSender<u32>, stop: CancellationToken) {
    let local: SocketAddr = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2048];
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::MediaData(data))) => {
                    if let Some(index) = data.data.len().checked_sub(4).map(|at| &data.data[at..]) {
                        let _ = frames.send(u32::from_be_bytes(index.try_into().unwrap()));
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(_) => return,
            }
        };
        let wake = timeout.max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            _ = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = received else { continue };
                let Ok(contents) = buf[..len].try_into() else { continue };
                let receive = Receive { proto: Protocol::Udp, source, destination: local, contents };
                if rtc.handle_input(Input::Receive(Instant::now(), receive)).is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_after_a_keyframe_written_before_the_connection_is_up_reach_the_viewer() {
    let engine = Engine::new(EngineConfig::default());
    let shutdown = CancellationToken::new();
    let config = WebrtcConfig { udp_listen: "127.0.0.1:0".parse().unwrap(), ..WebrtcConfig::default() };
    let transport = junction_webrtc::listen(&config, shutdown.clone()).await.expect("media plane");
    let room = RoomId::new("stage").unwrap();

    // The publisher: an engine peer that ignores keyframe requests.
    let camera = engine.join(JoinRequest::new(room.clone(), PeerId::new("encoder").unwrap(), TransportKind::Internal));
    let (camera_rpc, _camera_media) = camera.unwrap().endpoint.split();
    let track = camera_rpc.publish(PublishRequest::new("cam", Codec::Vp8)).expect("publish");

    // The viewer's offer and session; its client does not run yet, so nothing connects.
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rtc = Rtc::builder().clear_codecs().enable_vp8(true).build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let negotiated = transport.negotiate(&offer.to_sdp_string(), None).expect("negotiated");
    let mut join = JoinRequest::new(room.clone(), PeerId::new("viewer").unwrap(), TransportKind::Webrtc);
    join.auto_subscribe = false;
    let joined = engine.join(join).unwrap();
    let answer = negotiated.answer_sdp().to_owned();
    let (signals_tx, mut signals) = signal_channel();
    let session = negotiated
        .start(joined.endpoint, SessionSpec::new("whep", false, EgressPolicy::viewer(None)).with_signals(signals_tx));
    rtc.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let sending = tokio::time::timeout(WAIT, async {
        while let Some(signal) = signals.recv().await {
            if let SessionSignal::Event(SessionEvent::Sending { .. }) = signal {
                return true;
            }
        }
        false
    });
    assert!(sending.await.expect("the session picks the camera up"), "the session ended");

    // The keyframe and a few deltas pass while the viewer is still connecting.
    let start = Instant::now();
    for index in 0..5 {
        track.send(vp8(index, start + Duration::from_millis(33) * index)).unwrap();
    }
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    tokio::spawn(run_viewer(rtc, socket, frames_tx, stop.clone()));
    let connected = tokio::time::timeout(WAIT, async {
        while let Some(signal) = signals.recv().await {
            if let SessionSignal::Event(SessionEvent::Connected) = signal {
                return true;
            }
        }
        false
    });
    assert!(connected.await.expect("the viewer connects"), "the session ended");
    for index in 5..FRAMES {
        tokio::time::sleep(Duration::from_millis(20)).await;
        track.send(vp8(index, Instant::now())).unwrap();
    }

    let mut got = Vec::new();
    while let Ok(Some(index)) = tokio::time::timeout(Duration::from_secs(2), frames.recv()).await {
        got.push(index);
        if index == FRAMES - 1 {
            break;
        }
    }
    assert_eq!(got, (0..FRAMES).collect::<Vec<_>>(), "the keyframe and every frame after it, in order");

    stop.cancel();
    session.close();
    shutdown.cancel();
}
