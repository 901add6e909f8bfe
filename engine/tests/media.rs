//! Simulcast layer selection and codec adaptation, driven through the engine's public API.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use junction_core::{
    Codec, CodecParams, LayerInfo, LayerPreference, MediaFrame, MediaTime, PublishRequest, SubscribeOptions,
};
use junction_engine::{AdapterRegistry, Clock, FrameTranscoder, LayerMove, TranscodeError};
use support::*;

fn layers() -> Vec<LayerInfo> {
    ["q", "h", "f"]
        .iter()
        .map(|rid| LayerInfo { rid: rid.to_string(), width: None, height: None, max_bitrate: None })
        .collect()
}

/// Frames of three layers, each with its own timestamp base, as simulcast encoders send them.
fn simulcast_frame(layer: u8, seq: u64, keyframe: bool, at: std::time::Instant) -> MediaFrame {
    let base = [1_000_000u64, 5_000_000, 9_000_000][layer as usize];
    MediaFrame::video(
        Codec::Vp8,
        MediaTime::new(base + seq * 3000, 90_000),
        keyframe,
        at,
        Bytes::from(format!("L{layer}#{seq}")),
    )
    .with_layer(layer)
}

#[test]
fn simulcast_subscribers_switch_layers_on_keyframes_with_continuous_timestamps() {
    let (engine, clock) = engine();
    let publisher = join(&engine, "r", "pub").endpoint;
    let track = publisher.rpc.publish(PublishRequest::new("cam", Codec::Vp8).with_layers(layers())).unwrap();
    let mut viewer = join(&engine, "r", "viewer").endpoint;
    let mut low = join_with(&engine, "r", "low", |r| r.auto_subscribe = false).endpoint;
    low.rpc
        .subscribe(track.id(), SubscribeOptions { layer: LayerPreference::AtMost(0), ..Default::default() })
        .unwrap();

    let send_all = |seq: u64, key: bool| {
        for layer in 0..3 {
            track.send(simulcast_frame(layer, seq, key, clock.now())).unwrap();
        }
        clock.advance(FRAME);
    };
    for seq in 0..30 {
        send_all(seq, seq % 10 == 0);
    }
    let top = frames_of(&media(&mut viewer), track.id());
    assert_eq!(top.len(), 30);
    assert!(top.iter().all(|f| f.layer == 2));
    let bottom = frames_of(&media(&mut low), track.id());
    assert!(bottom.iter().all(|f| f.layer == 0) && bottom.len() == 30);

    // The viewer drops to the middle layer: it keeps the top layer until the middle layer's
    // next keyframe, then switches, and its timestamps carry on without a jump.
    viewer.rpc.set_layer(track.id(), LayerPreference::AtMost(1)).unwrap();
    for seq in 30..50 {
        send_all(seq, seq % 10 == 5);
    }
    let frames = frames_of(&media(&mut viewer), track.id());
    let layers_seen: Vec<u8> = frames.iter().map(|f| f.layer).collect();
    let switch = layers_seen.iter().position(|l| *l == 1).expect("switched");
    assert!(layers_seen[..switch].iter().all(|l| *l == 2));
    assert!(layers_seen[switch..].iter().all(|l| *l == 1));
    assert!(frames[switch].keyframe, "switched on a keyframe");
    assert_eq!(frames.len(), 20, "no frame lost across the switch");
    let ticks: Vec<u64> = top.iter().chain(frames.iter()).map(|f| f.time.ticks).collect();
    for pair in ticks.windows(2) {
        // Across the switch the step follows arrival times (33 ms here), so allow 1 ms of slack.
        assert!(pair[1].abs_diff(pair[0] + 3000) <= 90, "timestamps continue across the switch: {pair:?}");
    }

    // When the middle layer stops (publisher lost bandwidth), the viewer falls back to the
    // lowest layer at its next keyframe.
    for seq in 50..120 {
        track.send(simulcast_frame(0, seq, seq % 10 == 0, clock.now())).unwrap();
        track.send(simulcast_frame(2, seq, seq % 10 == 0, clock.now())).unwrap();
        clock.advance(FRAME);
    }
    let after = frames_of(&media(&mut viewer), track.id());
    assert_eq!(after.last().map(|f| f.layer), Some(0), "fell back to a layer being sent");
}

/// Pretends to transcode AAC into Opus: rewrites the payload and counts its instances.
struct FakeAacToOpus {
    frames: u64,
}

impl FrameTranscoder for FakeAacToOpus {
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        if frame.payload.is_empty() {
            return Err(TranscodeError::Decode { codec: Codec::Aac, reason: "empty".into() });
        }
        let time = MediaTime::new(self.frames * 960, 48_000);
        self.frames += 1;
        let payload = Bytes::from(format!("opus({})", String::from_utf8_lossy(&frame.payload)));
        out.push(MediaFrame::audio(Codec::Opus, time, frame.arrival, payload));
        Ok(())
    }
}

/// A registry whose AAC->Opus route builds `make()`; with the count of transcoders built.
fn aac_to_opus(
    make: impl Fn() -> Box<dyn FrameTranscoder> + Send + Sync + 'static,
) -> (AdapterRegistry, Arc<AtomicUsize>) {
    let created = Arc::new(AtomicUsize::new(0));
    let counter = created.clone();
    let mut adapters = AdapterRegistry::default();
    adapters.register(
        Codec::Aac,
        Codec::Opus,
        Arc::new(move |_info| {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok((make(), CodecParams::for_codec(Codec::Opus)))
        }),
    );
    (adapters, created)
}

#[tokio::test]
async fn one_transcoder_per_track_and_codec_is_shared_and_released() {
    let (adapters, created) = aac_to_opus(|| Box::new(FakeAacToOpus { frames: 0 }));
    let (engine, clock) = engine_with(unhurried(), adapters);
    let publisher = join(&engine, "r", "rtmp").endpoint;
    let track = publisher.rpc.publish(PublishRequest::new("audio", Codec::Aac)).unwrap();

    let browser =
        |name: &str| join_with(&engine, "r", name, |r| r.accept_codecs = vec![Codec::Opus, Codec::Vp8]).endpoint;
    let mut a = browser("a");
    let mut b = browser("b");
    let mut native = join(&engine, "r", "player").endpoint;
    assert_eq!(created.load(Ordering::SeqCst), 1, "one transcoder for both browsers");
    assert_eq!(engine.stats().variants, 1);
    assert_eq!(track.subscriber_count(), 3);

    for seq in 0..5u64 {
        let frame = MediaFrame::audio(
            Codec::Aac,
            MediaTime::new(seq * 1024, 44_100),
            clock.now(),
            Bytes::from(format!("aac{seq}")),
        );
        track.send(frame).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for browser in [&mut a, &mut b] {
        let frames = frames_of(&media(browser), track.id());
        assert_eq!(frames.len(), 5);
        assert!(frames.iter().all(|f| f.codec == Codec::Opus));
        assert_eq!(frames[4].payload, "opus(aac4)");
    }
    let raw = frames_of(&media(&mut native), track.id());
    assert!(raw.iter().all(|f| f.codec == Codec::Aac) && raw.len() == 5, "codec-agnostic peers get the original");

    drop(a);
    assert_eq!(engine.stats().variants, 1, "still used by b");
    b.rpc.unsubscribe(track.id()).unwrap();
    assert_eq!(engine.stats().variants, 0, "released with its last subscriber");
    assert_eq!(track.subscriber_count(), 1);

    // A later browser starts a fresh transcoder; unpublishing stops it.
    let _c = browser("c");
    assert_eq!(created.load(Ordering::SeqCst), 2);
    publisher.rpc.unpublish(track.id()).unwrap();
    assert_eq!(engine.stats().variants, 0);
    assert_eq!(engine.stats().subscriptions, 0);
}

/// Transcodes like [`FakeAacToOpus`] until it meets a frame saying `boom`, where it panics (a
/// codec library's bug on a crafted frame).
struct PanickingTranscoder(FakeAacToOpus);

impl FrameTranscoder for PanickingTranscoder {
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        assert!(frame.payload != "boom", "a codec library bug");
        self.0.transcode(frame, out)
    }
}

#[tokio::test]
async fn a_transcoder_that_panics_ends_its_variant_and_its_subscribers_are_told() {
    let (adapters, created) = aac_to_opus(|| Box::new(PanickingTranscoder(FakeAacToOpus { frames: 0 })));
    let (engine, clock) = engine_with(unhurried(), adapters);
    let publisher = join(&engine, "r", "rtmp").endpoint;
    let track = publisher.rpc.publish(PublishRequest::new("audio", Codec::Aac)).unwrap();
    let browser =
        |name: &str| join_with(&engine, "r", name, |r| r.accept_codecs = vec![Codec::Opus, Codec::Vp8]).endpoint;
    let mut a = browser("a");
    let mut native = join(&engine, "r", "player").endpoint;
    let send = |payload: &str, seq: u64| {
        let frame = MediaFrame::audio(
            Codec::Aac,
            MediaTime::new(seq * 1024, 44_100),
            clock.now(),
            Bytes::from(payload.to_owned()),
        );
        track.send(frame).unwrap();
    };
    send("aac0", 0);
    send("boom", 1);
    send("aac2", 2);
    let told = async {
        loop {
            let failed = events(&mut a).into_iter().find_map(|e| match e {
                junction_core::EndpointEvent::SubscriptionFailed { track, reason } => Some((track, reason)),
                _ => None,
            });
            if let Some(failed) = failed {
                return failed;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (failed_track, reason) = tokio::time::timeout(Duration::from_secs(5), told).await.expect("told in time");
    assert_eq!(&failed_track, track.id());
    assert!(reason.contains("panicked") && reason.contains("a codec library bug"), "{reason}");
    assert_eq!(engine.stats().variants, 0);
    assert_eq!(engine.stats().subscriptions, 1, "only the native player's is left");
    let before = frames_of(&media(&mut a), track.id());
    assert_eq!(before.len(), 1, "the frame before the panic was delivered");

    // The engine goes on: the native player still gets every frame, and a later browser is
    // told at once instead of starting a transcoder that fails again.
    send("aac3", 3);
    assert_eq!(frames_of(&media(&mut native), track.id()).len(), 4);
    let mut c = browser("c");
    let refused = events(&mut c).into_iter().any(|e| {
        matches!(e, junction_core::EndpointEvent::SubscriptionFailed { reason, .. } if reason.contains("failed earlier"))
    });
    assert!(refused, "the failed route is not retried");
    assert_eq!(created.load(Ordering::SeqCst), 1);
}

/// Pretends to transcode VP8 into H.264: each output frame names the input layer it came from
/// (`h264(L2#7)`), and every `input_changed` call is recorded.
struct FakeVp8ToH264 {
    moves: Arc<parking_lot::Mutex<Vec<LayerMove>>>,
}

impl FrameTranscoder for FakeVp8ToH264 {
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        let payload = Bytes::from(format!("h264({})", String::from_utf8_lossy(&frame.payload)));
        out.push(MediaFrame::video(Codec::H264, frame.time, frame.keyframe, frame.arrival, payload));
        Ok(())
    }

    fn input_changed(&mut self, to: LayerMove) {
        self.moves.lock().push(to);
    }
}

/// The input layers named by a fake transcoder's output frames, in order.
fn transcoded_layers(frames: &[MediaFrame]) -> Vec<u8> {
    frames.iter().map(|f| f.payload[6] - b'0').collect()
}

#[tokio::test]
async fn a_transcoded_variant_reads_the_simulcast_layer_its_viewers_want() {
    let moves = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut adapters = AdapterRegistry::default();
    let recorded = moves.clone();
    adapters.register(
        Codec::Vp8,
        Codec::H264,
        Arc::new(move |_info| {
            Ok((Box::new(FakeVp8ToH264 { moves: recorded.clone() }) as _, CodecParams::for_codec(Codec::H264)))
        }),
    );
    let (engine, clock) = engine_with(unhurried(), adapters);
    let mut publisher = join(&engine, "r", "tab").endpoint;
    let track = publisher.rpc.publish(PublishRequest::new("cam", Codec::Vp8).with_layers(layers())).unwrap();
    let h264_only = |name: &str| {
        join_with(&engine, "r", name, |r| {
            r.auto_subscribe = false;
            r.accept_codecs = vec![Codec::H264];
        })
        .endpoint
    };
    let only_h264 = SubscribeOptions { codecs: vec![Codec::H264], ..Default::default() };
    let settle = || tokio::time::sleep(Duration::from_millis(30));
    let mut seq = 0;
    let mut send = |frames: u64, keyframe_every: u64| {
        for _ in 0..frames {
            for layer in 0..3 {
                track.send(simulcast_frame(layer, seq, seq % keyframe_every == 0, clock.now())).unwrap();
            }
            clock.advance(FRAME);
            seq += 1;
        }
    };

    // A small tile: the variant's first viewer wants the lowest layer, so that is what the
    // transcoder decodes, and the publisher is not asked for more.
    let mut small = h264_only("small");
    small
        .rpc
        .subscribe(track.id(), SubscribeOptions { layer: LayerPreference::AtMost(0), ..only_h264.clone() })
        .unwrap();
    let asked = keyframe_requests(&media(&mut publisher));
    assert_eq!(asked, vec![(track.id().clone(), 0)], "a keyframe of the layer the transcoder reads");
    for _ in 0..10 {
        send(1, 10);
        settle().await;
    }
    let frames = frames_of(&media(&mut small), track.id());
    assert!(frames.iter().all(|f| f.codec == Codec::H264) && frames.len() == 10, "{frames:?}");
    assert_eq!(transcoded_layers(&frames), vec![0; 10]);

    // An RTMP-like player joins the variant wanting the best: the transcoder moves up at the top
    // layer's next keyframe (asked for), both viewers sharing it.
    let mut best = h264_only("best");
    best.rpc.subscribe(track.id(), only_h264.clone()).unwrap();
    send(1, 10);
    settle().await;
    assert_eq!(engine.stats().variants, 1, "one transcoder for both viewers");
    assert!(
        keyframe_requests(&media(&mut publisher)).contains(&(track.id().clone(), 2)),
        "the top layer's keyframe asked for"
    );
    for _ in 0..12 {
        send(1, 5);
        settle().await;
    }
    let layers_seen = transcoded_layers(&frames_of(&media(&mut best), track.id()));
    let switch = layers_seen.iter().position(|l| *l == 2).expect("moved to the top layer");
    assert!(layers_seen[switch..].iter().all(|l| *l == 2), "{layers_seen:?}");
    assert_eq!(transcoded_layers(&frames_of(&media(&mut small), track.id())).last(), Some(&2));
    assert_eq!(*moves.lock(), [LayerMove::ToTop(2)], "the transcoder was told its input moved up");

    // A viewer's keyframe request through the variant reaches the publisher for the layer the
    // transcoder reads, not the variant's own layer 0.
    clock.advance(Duration::from_secs(1));
    small.media.request_keyframe(track.id()).unwrap();
    assert_eq!(keyframe_requests(&media(&mut publisher)), vec![(track.id().clone(), 2)]);

    // The best viewer leaves: the transcoder goes back down to what the small tile wants.
    best.rpc.unsubscribe(track.id()).unwrap();
    for _ in 0..12 {
        send(1, 5);
        settle().await;
    }
    let layers_seen = transcoded_layers(&frames_of(&media(&mut small), track.id()));
    assert_eq!(layers_seen.last(), Some(&0), "{layers_seen:?}");
    assert_eq!(*moves.lock(), [LayerMove::ToTop(2), LayerMove::BelowTop]);
    assert_eq!(engine.stats().variants, 1);
}

/// The stats reader's stand-in for a bitstream parser: a "picture" as wide as the frame is long.
fn payload_size(_: Codec, keyframe: &[u8]) -> Option<(u32, u32)> {
    Some((keyframe.len() as u32, 1))
}

#[test]
fn room_stats_give_each_layer_its_rate_and_size_and_each_side_its_link() {
    let (engine, clock) = engine();
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let track = publisher.rpc.publish(PublishRequest::new("cam", Codec::Vp8).with_layers(layers())).unwrap();
    let viewer = join_with(&engine, "r", "viewer", |r| r.auto_subscribe = false).endpoint;
    viewer
        .rpc
        .subscribe(track.id(), SubscribeOptions { layer: LayerPreference::AtMost(1), ..Default::default() })
        .unwrap();
    // Two seconds at 25 frames/s; the top layer's frames are 10 bytes longer than the others.
    for seq in 0..50u64 {
        for layer in 0..3 {
            let mut frame = simulcast_frame(layer, seq, seq % 25 == 0, clock.now());
            if layer == 2 {
                frame.payload = Bytes::from(format!("{:>14}", seq));
            }
            track.send(frame).unwrap();
        }
        clock.advance(Duration::from_millis(40));
    }
    track.report_link(2, junction_engine::LinkQuality { loss: Some(0.02), rtt_ms: Some(31.0), jitter_ms: Some(4.5) });
    let quality = junction_engine::LinkQuality { loss: Some(0.1), rtt_ms: Some(80.0), jitter_ms: None };
    viewer.media.report_link(track.id(), quality).unwrap();

    let (room, _) = ids("r", "pub");
    let stats = serde_json::to_value(engine.room_stats(&room, payload_size).unwrap()).unwrap();
    let published = &stats["peers"][0]["tracks"][0];
    assert_eq!(stats["peers"][0]["identity"], "pub", "{stats}");
    let layer_fps: Vec<u64> =
        published["layers"].as_array().unwrap().iter().map(|l| l["fps"].as_u64().unwrap()).collect();
    assert!(layer_fps.iter().all(|fps| (24..=26).contains(fps)), "{stats}");
    assert_eq!(published["fps"], layer_fps[2], "{stats}");
    // The last second's bytes: "L0#25".."L0#49" are 5 bytes each, 14 bytes on the top layer.
    let bps = |l: usize| published["layers"][l]["bitrate_bps"].as_u64().unwrap();
    assert_eq!(bps(2), 14 * 8 * layer_fps[2], "{stats}");
    assert_eq!(published["bitrate_bps"].as_u64().unwrap(), bps(0) + bps(1) + bps(2), "{stats}");
    assert_eq!((published["width"].as_u64(), published["layers"][0]["width"].as_u64()), (Some(14), Some(5)), "{stats}");
    assert_eq!(published["link"]["rtt_ms"], 31.0, "{stats}");
    assert_eq!(published["subscribers"], 1, "{stats}");
    let received = &stats["peers"][1]["subscriptions"][0];
    assert_eq!((received["layer"].as_u64(), received["fps"].as_u64()), (Some(1), Some(layer_fps[1])), "{stats}");
    assert_eq!(received["bitrate_bps"].as_u64(), Some(bps(1)), "{stats}");
    assert_eq!(received["link"]["loss"].as_f64().map(|l| (l * 100.0).round()), Some(10.0), "{stats}");

    // Two quiet seconds later nothing is flowing, and the readings say so.
    clock.advance(Duration::from_secs(2));
    let stats = serde_json::to_value(engine.room_stats(&room, payload_size).unwrap()).unwrap();
    assert_eq!(stats["peers"][0]["tracks"][0]["bitrate_bps"], 0, "{stats}");
    assert_eq!(stats["peers"][1]["subscriptions"][0]["fps"], 0, "{stats}");
    let _ = events(&mut publisher);
}

#[test]
fn an_operator_mute_holds_a_tracks_frames_back_and_unmuting_resumes_on_a_keyframe() {
    let (engine, clock) = engine();
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let track = publish(&publisher, "cam", Codec::Vp8);
    let mut viewer = join(&engine, "r", "viewer").endpoint;
    let _ = events(&mut viewer);
    let (room, _) = ids("r", "pub");
    let send = |seq: u64, key: bool| {
        track.send(video(seq, key, clock.now())).unwrap();
        clock.advance(FRAME);
    };
    for seq in 0..5 {
        send(seq, seq == 0);
    }
    assert_eq!(frames_of(&media(&mut viewer), track.id()).len(), 5);

    let info = engine.mute_track(&room, track.id(), true).unwrap();
    assert!(info.muted);
    for seq in 5..10 {
        send(seq, false);
    }
    assert!(frames_of(&media(&mut viewer), track.id()).is_empty(), "nothing forwarded while muted");
    let muted = |events: Vec<junction_core::EndpointEvent>| {
        events.into_iter().any(|e| matches!(e, junction_core::EndpointEvent::TrackMuted { muted: true, .. }))
    };
    assert!(muted(events(&mut viewer)) && muted(events(&mut publisher)), "everyone, the publisher too, is told");
    let stats = serde_json::to_value(engine.room_stats(&room, payload_size).unwrap()).unwrap();
    assert_eq!(stats["peers"][0]["tracks"][0]["muted_by_operator"], true, "{stats}");

    engine.mute_track(&room, track.id(), false).unwrap();
    assert!(!keyframe_requests(&media(&mut publisher)).is_empty(), "a keyframe is asked for on unmute");
    send(10, false);
    send(11, true);
    send(12, false);
    let frames = frames_of(&media(&mut viewer), track.id());
    assert_eq!(frames.len(), 2, "resumes at the keyframe: {frames:?}");
    assert!(frames[0].keyframe);
    // The publisher's own mute is its own: an operator's unmute does not undo it.
    publisher.rpc.set_muted(track.id(), true).unwrap();
    engine.mute_track(&room, track.id(), true).unwrap();
    assert!(engine.mute_track(&room, track.id(), false).unwrap().muted, "still muted by its publisher");
    let unknown = junction_core::TrackId::new("TR_nope").unwrap();
    assert!(engine.mute_track(&room, &unknown, true).is_err());
}
