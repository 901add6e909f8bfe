//! The room policy against an independent WebRTC stack (the `webrtc` crate): a peer that
//! joined with only its own camera gets the room's other tracks through server-initiated
//! renegotiation — `SessionSignal::Offer`, its answer through `SessionHandle::accept_answer` —
//! and receives their frames unchanged; its own camera is published to the room; an
//! unsubscribed track's m-line is reported stopped; closing the handle releases the peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{Codec, MediaFrame, MediaKind, MediaTime, PeerId, PublishRequest, RoomId, TransportKind};
use junction_engine::{Engine, EngineConfig, JoinRequest};
use junction_webrtc::{
    EgressPolicy, SessionEvent, SessionSignal, SessionSpec, SignalReceiver, WebrtcConfig, signal_channel,
};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

const WAIT: Duration = Duration::from_secs(10);

/// The browser side: state changes and the payloads of every RTP packet received, by mime type.
struct Browser {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    packets: mpsc::UnboundedSender<(String, Bytes)>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Browser {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        let _ = self.gathered.send(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let packets = self.packets.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event {
                    let mime = track.codec(packet.header.ssrc).await.map(|c| c.mime_type).unwrap_or_default();
                    let _ = packets.send((mime.to_ascii_lowercase(), packet.payload.clone()));
                }
            }
        });
    }
}

fn codec(mime: &str, clock_rate: u32, channels: u16) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate,
        channels,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

#[tokio::test]
async fn a_room_session_renegotiates_for_new_tracks_and_publishes_its_own() {
    let engine = Engine::new(EngineConfig::default());
    let shutdown = CancellationToken::new();
    let config = WebrtcConfig { udp_listen: "127.0.0.1:0".parse().unwrap(), ..WebrtcConfig::default() };
    let transport = junction_webrtc::listen(&config, shutdown.clone()).await.expect("media plane");
    let room = RoomId::new("call").unwrap();

    // The browser: VP8 camera out, Opus and VP8 accepted.
    let mut media_engine = MediaEngine::default();
    let vp8 = codec(MIME_TYPE_VP8, 90_000, 0);
    media_engine
        .register_codec(RTCRtpCodecParameters { rtp_codec: vp8.clone(), payload_type: 96 }, RtpCodecKind::Video)
        .unwrap();
    media_engine
        .register_codec(
            RTCRtpCodecParameters { rtp_codec: codec(MIME_TYPE_OPUS, 48_000, 2), payload_type: 111 },
            RtpCodecKind::Audio,
        )
        .unwrap();
    let registry = register_default_interceptors(rtc::interceptor::Registry::new(), &mut media_engine).unwrap();
    let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (packets_tx, mut packets) = mpsc::unbounded_channel();
    let handler = Arc::new(Browser { state: state_tx, gathered: gathered_tx, packets: packets_tx });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(media_engine)
        .with_setting_engine(SettingEngineBuilder::new().with_include_loopback_candidate(true).build())
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_runtime(Arc::new(TokioRuntime))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    let ssrc = rand::random::<u32>();
    let camera = Arc::new(
        TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                "browser".into(),
                "camera".into(),
                "camera".into(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: vp8,
                    ..Default::default()
                }],
            ),
        )
        .unwrap(),
    );
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Sendonly, ..Default::default() };
    pc.add_transceiver_from_track(camera.clone() as Arc<dyn TrackLocal>, Some(init)).await.unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered.wait_for(|g| *g)).await;
    let offer = pc.local_description().await.unwrap().sdp;

    // The signalling layer's three steps, with a room policy and an event channel.
    let negotiated = transport.negotiate(&offer, None).expect("negotiated");
    let mut join = JoinRequest::new(room.clone(), PeerId::new("browser").unwrap(), TransportKind::Webrtc);
    join.accept_codecs = vec![Codec::Opus, Codec::Vp8];
    let joined = engine.join(join).expect("joined");
    let answer = negotiated.answer_sdp().to_owned();
    // The session's signals, as the browser socket reads them; room events and the like are not
    // what this test is about.
    let (signals_tx, mut events) = signal_channel();
    let handle = negotiated
        .start(joined.endpoint, SessionSpec::new("webrtc", true, EgressPolicy::Room).with_signals(signals_tx));
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
    tokio::time::timeout(WAIT, state.wait_for(|s| *s == RTCPeerConnectionState::Connected)).await.unwrap().unwrap();
    let next_event = async |events: &mut SignalReceiver, what: &str| loop {
        let signal = tokio::time::timeout(WAIT, events.recv()).await.unwrap_or_else(|_| panic!("no {what}"));
        match signal.expect("signals") {
            signal @ (SessionSignal::Event(_) | SessionSignal::Offer { .. }) => break signal,
            _ => continue,
        }
    };
    assert!(matches!(next_event(&mut events, "Connected").await, SessionSignal::Event(SessionEvent::Connected)));

    // Another participant publishes Opus and VP8 straight into the engine.
    let other =
        engine.join(JoinRequest::new(room.clone(), PeerId::new("other").unwrap(), TransportKind::Internal)).unwrap();
    let mic = other.endpoint.rpc.publish(PublishRequest::new("mic", Codec::Opus)).unwrap();
    let cam = other.endpoint.rpc.publish(PublishRequest::new("cam", Codec::Vp8)).unwrap();

    // No m-line can carry them: the session offers new ones (one offer outstanding at a time,
    // so possibly in two rounds); the browser answers each.
    let mut sending = Vec::new();
    let mut offers = 0;
    while sending.len() < 2 {
        match next_event(&mut events, "an offer or Sending").await {
            SessionSignal::Offer { sdp, .. } => {
                offers += 1;
                assert!(sdp.contains("a=sendonly"), "{sdp}");
                pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.unwrap();
                let answer = pc.create_answer(None).await.unwrap();
                pc.set_local_description(answer).await.unwrap();
                handle.accept_answer(&pc.local_description().await.unwrap().sdp).await.expect("answer accepted");
            }
            SessionSignal::Event(SessionEvent::Sending { mid, track }) => sending.push((mid, track)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((1..=2).contains(&offers), "{offers} offers");
    assert_eq!(
        pc.local_description().await.unwrap().sdp.matches("m=").count(),
        3,
        "the camera's m-line and two new ones"
    );
    let sent_tracks: Vec<_> = sending.iter().map(|(_, t)| t.clone()).collect();
    assert!(sent_tracks.contains(mic.id()) && sent_tracks.contains(cam.id()), "{sending:?}");

    // Frames of both tracks reach the browser with their payloads intact.
    let start = Instant::now();
    for i in 0..40u8 {
        let now = Instant::now();
        let opus = Bytes::from(vec![0xfc, i, 1, 2, 3, 4]);
        mic.send(MediaFrame::audio(Codec::Opus, MediaTime::new(960 * i as u64, 48_000), now, opus)).unwrap();
        // A VP8 key frame (P bit clear) then inter frames, each one RTP packet.
        let vp8_frame = Bytes::from(vec![if i == 0 || i == 20 { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a, i]);
        cam.send(MediaFrame::video(
            Codec::Vp8,
            MediaTime::new(3000 * i as u64, 90_000),
            i.is_multiple_of(20),
            now,
            vp8_frame,
        ))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut audio, mut video) = (Vec::new(), Vec::new());
    while let Ok(Some((mime, payload))) = tokio::time::timeout(Duration::from_millis(800), packets.recv()).await {
        if mime == "audio/opus" {
            audio.push(payload);
        } else if mime == "video/vp8" {
            video.push(payload);
        }
    }
    assert!(audio.len() >= 30, "{} Opus packets arrived in {:?}", audio.len(), start.elapsed());
    assert!(audio.iter().all(|p| p.len() == 6 && p[0] == 0xfc && p[2..] == [1, 2, 3, 4]), "Opus payloads intact");
    assert!(video.len() >= 15, "{} VP8 packets arrived", video.len());

    // The browser's own camera is a track of the room.
    for i in 0..10 {
        let frame = Bytes::from(vec![if i == 0 { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a, i as u8]);
        camera
            .sample_writer(ssrc, 96)
            .write_sample(&Sample { data: frame, duration: Duration::from_millis(33), ..Sample::new(Instant::now()) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(33)).await;
    }
    let published = tokio::time::timeout(WAIT, async {
        loop {
            let room_now = engine.room(&room).unwrap();
            let browser = room_now.peers.iter().find(|p| p.info.identity.as_str() == "browser").cloned();
            if let Some(tracks) = browser.map(|p| p.tracks).filter(|t| !t.is_empty()) {
                return tracks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the browser's camera published");
    assert_eq!((published[0].codec, published[0].kind), (Codec::Vp8, MediaKind::Video));

    // Unpublishing a track frees its m-line.
    other.endpoint.rpc.unpublish(cam.id()).unwrap();
    loop {
        if let SessionSignal::Event(SessionEvent::Stopped { track, .. }) = next_event(&mut events, "Stopped").await {
            assert_eq!(&track, cam.id());
            break;
        }
    }

    // Glare: the server offers an m-line for a new track, and before the browser sees that
    // offer it sends one of its own. The server yields (its offer is withdrawn, so a signalling
    // layer must not pass it on after the answer), then offers again, and that offer fits.
    let mic2 = other.endpoint.rpc.publish(PublishRequest::new("mic2", Codec::Opus)).unwrap();
    let withdrawn = loop {
        if let SessionSignal::Offer { id, .. } = next_event(&mut events, "the offer for mic2").await {
            break id;
        }
    };
    assert!(!events.offer_withdrawn(withdrawn));
    let own = pc.create_offer(None).await.unwrap();
    pc.set_local_description(own).await.unwrap();
    let answer = handle.accept_offer(&pc.local_description().await.unwrap().sdp).await.expect("the browser's offer");
    pc.set_remote_description(RTCSessionDescription::answer(answer).unwrap()).await.unwrap();
    assert!(events.offer_withdrawn(withdrawn), "the offer the browser's replaced is withdrawn");
    loop {
        match next_event(&mut events, "the offer again").await {
            SessionSignal::Offer { id, sdp, .. } if !events.offer_withdrawn(id) => {
                assert!(id > withdrawn);
                pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap()).await.expect("the offer fits");
                let answer = pc.create_answer(None).await.unwrap();
                pc.set_local_description(answer).await.unwrap();
                handle.accept_answer(&pc.local_description().await.unwrap().sdp).await.expect("answer accepted");
            }
            SessionSignal::Event(SessionEvent::Sending { track, .. }) if &track == mic2.id() => break,
            _ => {}
        }
    }

    handle.close();
    tokio::time::timeout(WAIT, handle.closed()).await.expect("the session ends");
    assert!(matches!(next_event(&mut events, "Closed").await, SessionSignal::Event(SessionEvent::Closed { .. })));
    let peers: Vec<String> = engine.room(&room).unwrap().peers.iter().map(|p| p.info.identity.to_string()).collect();
    assert_eq!(peers, ["other"], "closing the session took the browser out of the room");
    let _ = pc.close().await;
    shutdown.cancel();
}
