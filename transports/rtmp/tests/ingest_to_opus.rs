//! Real ffmpeg publishes H.264 + AAC (a 660 Hz sine) to the RTMP listener running in-process on
//! an engine with the codec adapters; a subscriber that accepts only Opus and H.264 — what a
//! WebRTC/WHEP viewer declares — receives the H.264 as published and the audio through the
//! engine's AAC->Opus variant. The Opus is decoded and the tone found, so the transcode is real.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use junction_audio::codec::opus::OpusDecoder;
use junction_audio::codec::{AudioDecoder, default_adapters, tone};
use junction_auth::{Authority, IngressKind};
use junction_core::{Codec, EndpointEvent, MediaFrame, MediaOut, PeerId, RoomId, TransportKind};
use junction_engine::{Engine, EngineConfig, JoinRequest, SystemClock};
use junction_rtmp::RtmpConfig;
use tokio_util::sync::CancellationToken;

const TONE_HZ: f64 = 660.0;

#[tokio::test]
async fn ffmpeg_aac_reaches_an_opus_subscriber_as_the_same_tone() {
    let engine = Engine::with_parts(EngineConfig::default(), Arc::new(SystemClock), default_adapters());
    let authority = Authority::new("ingest-to-opus-test-key");
    let shutdown = CancellationToken::new();
    let config = RtmpConfig { listen: ([127, 0, 0, 1], 0).into(), ..RtmpConfig::default() };
    let listener = junction_rtmp::listen(engine.clone(), authority.clone(), config, shutdown.clone()).await.unwrap();
    let room = RoomId::new("stage").unwrap();
    let ingress = authority.ingress().create(IngressKind::Rtmp, room.clone(), PeerId::new("obs").unwrap(), None);

    let viewer = JoinRequest {
        accept_codecs: vec![Codec::Opus, Codec::H264],
        ..JoinRequest::new(room, PeerId::new("viewer").unwrap(), TransportKind::Internal)
    };
    let (mut rpc, mut media) = engine.join(viewer).unwrap().endpoint.split();

    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={TONE_HZ}:sample_rate=44100")])
        .args(["-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-tune", "zerolatency"])
        .args(["-g", "30", "-c:a", "aac", "-f", "flv"])
        .arg(format!("{}/{}", listener.url(), ingress.stream_key))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg (apt-get install ffmpeg)");

    let mut video: Vec<MediaFrame> = Vec::new();
    let mut opus: Vec<MediaFrame> = Vec::new();
    let mut codecs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut publisher_gone = false;
    while !publisher_gone {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => panic!("no end of stream after 30 s"),
            event = rpc.next_event() => match event.expect("events") {
                EndpointEvent::Subscribed { codec, params, .. } => codecs.push((codec, params)),
                EndpointEvent::PeerLeft { peer, .. } if peer.as_str() == "obs" => publisher_gone = true,
                _ => {}
            },
            Some(item) = media.recv() => if let MediaOut::Frame { frame, .. } = item {
                match frame.codec {
                    Codec::Opus => opus.push(frame),
                    Codec::H264 => video.push(frame),
                    other => panic!("a {other} frame reached an Opus/H.264 subscriber"),
                }
            },
        }
    }
    assert!(ffmpeg.wait().await.unwrap().success(), "ffmpeg publish failed");

    let received: Vec<Codec> = codecs.iter().map(|(c, _)| *c).collect();
    assert!(received.contains(&Codec::Opus) && received.contains(&Codec::H264), "{received:?}");
    assert!(video.len() >= 90, "{} video frames", video.len());
    assert!(video.iter().any(|f| f.keyframe));
    let video_times: Vec<u64> = video.iter().map(|f| f.time.ticks).collect();
    assert!(video_times.windows(2).all(|w| w[0] < w[1]), "without B-frames, times increase");

    assert!(opus.len() >= 150, "{} Opus frames (20 ms each) for 4 s", opus.len());
    assert!(opus.iter().all(|f| f.time.rate == 48_000));
    let opus_times: Vec<u64> = opus.iter().map(|f| f.time.ticks).collect();
    assert!(opus_times.windows(2).all(|w| w[0] < w[1]), "Opus times increase");
    let channels = codecs.iter().find(|(c, _)| *c == Codec::Opus).map_or(2, |(_, p)| p.channels.max(1));
    let mut decoder = OpusDecoder::new(channels).unwrap();
    let mut pcm = Vec::new();
    for frame in &opus {
        decoder.decode(&frame.payload, &mut pcm).unwrap();
    }
    let found = tone::dominant_frequency(&pcm, channels, 48_000).expect("audible Opus");
    assert!((found - TONE_HZ).abs() < 2.0, "the Opus carries {found} Hz");

    // The Opus timeline continues the AAC one, which shares the video's clock.
    let start_gap_ms = (opus[0].time.as_micros() as i64 - video[0].time.as_micros() as i64) / 1000;
    println!("RTMP->Opus: first Opus frame at {start_gap_ms} ms of the video's media time");
    assert!(start_gap_ms.abs() <= 100, "audio and video timelines {start_gap_ms} ms apart");
    shutdown.cancel();
}
