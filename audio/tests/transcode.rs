//! Real codec adaptation through the engine: an AAC track (as an RTMP publisher sends it) seen by
//! two subscribers that only take Opus (browsers). They share one transcoded variant and hear
//! the publisher's tone; the variant stops with its last subscriber.

// The engine test helpers (an engine on a manual clock, joins), shared rather than copied.
#[path = "../../engine/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use junction_audio::codec::aac::AacEncoder;
use junction_audio::codec::opus::OpusDecoder;
use junction_audio::codec::{AudioDecoder, AudioEncoder, default_adapters, tone};
use junction_core::{Codec, CodecParams, EndpointEvent, MediaFrame, MediaTime, PublishRequest};
use junction_engine::{Clock, EngineConfig};
use support::*;

const TONE_HZ: f64 = 440.0;

#[tokio::test]
async fn opus_subscribers_share_one_aac_to_opus_variant_and_hear_the_tone() {
    let (engine, clock) = engine_with(EngineConfig::default(), default_adapters());
    let publisher = join(&engine, "r", "rtmp").endpoint;
    let mut encoder = AacEncoder::new(44_100, 2, 128_000).unwrap();
    let params = CodecParams {
        clock_rate: 44_100,
        channels: 2,
        config: Some(encoder.audio_specific_config()),
        ..CodecParams::default()
    };
    let track = publisher.rpc.publish(PublishRequest::new("audio", Codec::Aac).with_params(params)).unwrap();

    let browser =
        |name: &str| join_with(&engine, "r", name, |r| r.accept_codecs = vec![Codec::Opus, Codec::Vp8]).endpoint;
    let mut viewers = [browser("a"), browser("b")];
    assert_eq!(engine.stats().variants, 1, "one transcoder shared by both viewers");
    for viewer in &mut viewers {
        let subscribed = events(viewer).into_iter().find_map(|e| match e {
            EndpointEvent::Subscribed { codec, params, .. } => Some((codec, params)),
            _ => None,
        });
        let (codec, params) = subscribed.expect("subscribed");
        assert_eq!(
            (codec, params.clock_rate, params.fmtp.as_deref()),
            (Codec::Opus, 48_000, Some("minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1"))
        );
    }

    // Two seconds of tone, stamped from 10 s like a stream already running.
    let start = 10 * 44_100;
    let pcm = tone::sine(TONE_HZ, 0.5, 44_100, 2, 44_100 * 2);
    let frames = pcm.chunks_exact(1024 * 2).enumerate().map(|(i, chunk)| {
        let time = MediaTime::new(start + i as u64 * 1024, 44_100);
        MediaFrame::audio(Codec::Aac, time, clock.now(), encoder.encode(chunk).unwrap())
    });
    let sent = frames.map(|frame| track.send(frame).unwrap()).count();
    assert_eq!(sent, 86);

    // 86 AAC frames are 88064 samples, 95852 at 48 kHz: less the Opus lookahead dropped at the
    // start (312), the resampler's filter delay (240) and its unfilled 10 ms chunk still held,
    // that is 98 whole Opus frames.
    let mut received = [Vec::new(), Vec::new()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received.iter().any(|r| r.len() < 98) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (viewer, frames) in viewers.iter_mut().zip(&mut received) {
            frames.extend(frames_of(&media(viewer), track.id()));
        }
    }
    // Nothing more comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for (viewer, frames) in viewers.iter_mut().zip(&mut received) {
        frames.extend(frames_of(&media(viewer), track.id()));
    }
    let [a, b] = received;
    assert_eq!(a.len(), 98);
    assert!(a.iter().zip(&b).all(|(x, y)| x.payload == y.payload && x.time == y.time), "both got the same frames");
    assert_eq!(a[0].time, MediaTime::new(start, 44_100).rebase(48_000), "Opus starts where the AAC started");
    assert!(a.windows(2).all(|w| w[1].time.ticks - w[0].time.ticks == 960));

    let mut decoder = OpusDecoder::new(2).unwrap();
    let mut decoded = Vec::new();
    for frame in &a {
        assert_eq!(frame.codec, Codec::Opus);
        decoder.decode(&frame.payload, &mut decoded).unwrap();
    }
    let found = tone::dominant_frequency(&decoded, 2, 48_000).unwrap();
    assert!((found - TONE_HZ).abs() < 2.0, "heard {found} Hz");

    drop(viewers);
    assert_eq!(engine.stats().variants, 0, "the variant stops with its last subscriber");
}
