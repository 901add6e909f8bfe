//! Every route of [`default_adapters`] fed a tone encoded by the toolkit's own encoders, frame by
//! frame, and the output decoded again: the tone, the timestamps and the sync are checked.

use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime, PeerId, TrackId, TrackInfo, TrackSource};

use super::*;
use crate::codec::aac::{AacDecoder, AacEncoder};
use crate::codec::g711::{G711Decoder, G711Encoder};
use crate::codec::opus::{OpusDecoder, OpusEncoder, OpusMode};
use crate::codec::{G711Law, tone};

/// Silence before the tone starts: where sync is measured.
const LEAD_MS: u64 = 200;
const TONE_HZ: f64 = 660.0;

fn track(codec: Codec, params: CodecParams) -> TrackInfo {
    TrackInfo {
        id: TrackId::new("t1").unwrap(),
        peer: PeerId::new("p").unwrap(),
        name: "audio".into(),
        kind: MediaKind::Audio,
        source: TrackSource::Microphone,
        codec,
        params,
        layers: Vec::new(),
        muted: false,
    }
}

/// A source stream as a publisher would send it: `LEAD_MS` of silence then the tone, encoded
/// in `codec`, stamped from `start` (in the codec's clock) with the encoder delay compensated.
struct Source {
    frames: Vec<MediaFrame>,
    params: CodecParams,
    /// Input time (seconds) where the tone starts.
    onset: f64,
}

fn source(codec: Codec, seconds: f64, start_ticks: u64) -> Source {
    let (mut encoder, params): (Box<dyn AudioEncoder>, CodecParams) = match codec {
        Codec::Aac => {
            let encoder = AacEncoder::new(44_100, 2, 128_000).unwrap();
            let params = CodecParams {
                clock_rate: 44_100,
                channels: 2,
                config: Some(encoder.audio_specific_config()),
                ..Default::default()
            };
            (Box::new(encoder), params)
        }
        Codec::Opus => {
            let params =
                CodecParams { fmtp: Some("minptime=10;useinbandfec=1".into()), ..CodecParams::for_codec(codec) };
            (Box::new(OpusEncoder::new(1, OpusMode::Music, None).unwrap()), params)
        }
        Codec::Pcmu | Codec::Pcma => {
            (Box::new(G711Encoder::new(G711Law::from_codec(codec).unwrap())), CodecParams::for_codec(codec))
        }
        _ => unreachable!(),
    };
    let (rate, channels) = (encoder.sample_rate(), encoder.channels());
    let lead = rate as usize * LEAD_MS as usize / 1000;
    let total = (seconds * f64::from(rate)) as usize;
    let mut pcm = vec![0.0; lead * usize::from(channels)];
    pcm.extend(tone::sine(TONE_HZ, 0.5, rate, channels, total - lead));
    // Decoded output lags the encoder's input by its delay: start the input that much later.
    let pcm = &pcm[encoder.delay() * usize::from(channels)..];
    let now = Instant::now();
    let frame = encoder.frame_samples();
    let frames = pcm
        .chunks_exact(frame * usize::from(channels))
        .enumerate()
        .map(|(i, chunk)| {
            let time = MediaTime::new(start_ticks + (i * frame) as u64, rate);
            // Arriving live: each frame when its media time comes, captured a moment before.
            let arrival = now + Duration::from_secs_f64((i * frame) as f64 / f64::from(rate));
            MediaFrame::audio(codec, time, arrival, encoder.encode(chunk).unwrap()).captured_at(arrival - CAPTURE_LEAD)
        })
        .filter(|f| !f.payload.is_empty())
        .collect();
    let onset = start_ticks as f64 / f64::from(rate) + LEAD_MS as f64 / 1000.0;
    Source { frames, params, onset }
}

/// How long before its arrival a source frame was captured (a WebRTC publisher's network delay).
const CAPTURE_LEAD: Duration = Duration::from_millis(30);

fn decoder(codec: Codec, params: &CodecParams) -> Box<dyn AudioDecoder> {
    match codec {
        Codec::Aac => Box::new(AacDecoder::new(params.config.as_ref().unwrap()).unwrap()),
        Codec::Opus => Box::new(OpusDecoder::new(2).unwrap()),
        _ => Box::new(G711Decoder::new(G711Law::from_codec(codec).unwrap())),
    }
}

fn frame_samples(codec: Codec) -> u64 {
    match codec {
        Codec::Opus => 960,
        Codec::Aac => 1024,
        _ => 160,
    }
}

fn run(transcoder: &mut dyn FrameTranscoder, frames: &[MediaFrame]) -> Vec<MediaFrame> {
    let mut out = Vec::new();
    for frame in frames {
        transcoder.transcode(frame, &mut out).unwrap();
    }
    out
}

/// Decodes frames to PCM; checks they are continuous frame-sized steps.
fn decode_continuous(codec: Codec, params: &CodecParams, frames: &[MediaFrame]) -> (Vec<f32>, u8) {
    let mut decoder = decoder(codec, params);
    let step = frame_samples(codec);
    for pair in frames.windows(2) {
        assert_eq!(pair[1].time.ticks - pair[0].time.ticks, step, "{codec} timestamps step by one frame");
    }
    let mut pcm = Vec::new();
    for frame in frames {
        assert_eq!((frame.codec, frame.time.rate), (codec, params.clock_rate));
        decoder.decode(&frame.payload, &mut pcm).unwrap();
    }
    (pcm, decoder.channels())
}

#[test]
fn every_route_keeps_the_tone_the_timeline_and_the_sync() {
    let adapters = default_adapters();
    let routes: Vec<(Codec, Codec)> = adapters.routes().collect();
    assert_eq!(routes.len(), 12);
    for (from, to) in routes {
        // Starting mid-stream at an odd tick: the output must start at the same instant.
        let src = source(from, 1.5, 250_017);
        let (_, factory) = adapters.route(from, &[to]).unwrap();
        let (mut transcoder, params) = factory(&track(from, src.params.clone())).unwrap();
        let out = run(transcoder.as_mut(), &src.frames);
        assert!(!out.is_empty());

        let first_in = src.frames[0].time;
        assert_eq!(out[0].time, first_in.rebase(params.clock_rate), "{from}->{to}: output starts with the input");
        let (pcm, channels) = decode_continuous(to, &params, &out);
        let found = tone::dominant_frequency(&pcm, channels, params.clock_rate).unwrap();
        assert!((found - TONE_HZ).abs() < 3.0, "{from}->{to}: {found} Hz");

        let onset = tone::onset(&pcm, channels, 0.2).unwrap();
        let out_onset =
            out[0].time.ticks as f64 / f64::from(params.clock_rate) + onset as f64 / f64::from(params.clock_rate);
        let offset_ms = (out_onset - src.onset) * 1000.0;
        eprintln!(
            "{from}->{to}: {} frames in, {} out, tone {found:.1} Hz, sync offset {offset_ms:+.2} ms",
            src.frames.len(),
            out.len()
        );
        assert!(offset_ms.abs() < 1.0, "{from}->{to}: audio shifted by {offset_ms:.2} ms");

        // Each output frame carries the instant its media time arrived (what lip sync is built
        // on), not the instant the buffering let it out: never later than that, and earlier by
        // at most one input frame (an output frame inside the input frame that completed it).
        let seconds = |t: MediaTime| t.as_micros() as f64 / 1e6;
        let (first_in_s, first_arrival) = (seconds(first_in), src.frames[0].arrival);
        let input_frame_ms = frame_samples(from) as f64 * 1000.0 / f64::from(src.params.clock_rate);
        for frame in &out {
            let since_first = seconds(frame.time) - first_in_s;
            let due = if since_first >= 0.0 {
                first_arrival + Duration::from_secs_f64(since_first)
            } else {
                first_arrival - Duration::from_secs_f64(-since_first)
            };
            let early_ms = due.saturating_duration_since(frame.arrival).as_secs_f64() * 1000.0;
            let late_ms = frame.arrival.saturating_duration_since(due).as_secs_f64() * 1000.0;
            assert!(
                late_ms < 0.5 && early_ms < input_frame_ms + 0.5,
                "{from}->{to}: arrival {early_ms:.2} ms early, {late_ms:.2} ms late"
            );
            // The capture time moves with it: the same distance before the arrival as the input's.
            let lead = frame.arrival.duration_since(frame.captured);
            assert!(
                lead.abs_diff(CAPTURE_LEAD) < Duration::from_micros(500),
                "{from}->{to}: captured {lead:?} before arrival"
            );
        }
    }
}

#[test]
fn short_gaps_are_concealed_and_the_output_stays_continuous() {
    let src = source(Codec::Pcmu, 2.0, 8_000);
    let (mut transcoder, params) = build_transcoder(Codec::Pcmu, Codec::Opus, &track(Codec::Pcmu, src.params)).unwrap();
    // Two bursts of loss: three packets (60 ms), then two.
    let mut frames = src.frames.clone();
    frames.drain(40..43);
    frames.drain(60..62);
    let out = run(transcoder.as_mut(), &frames);
    let (pcm, channels) = decode_continuous(Codec::Opus, &params, &out);
    let last_in = src.frames.last().unwrap().time;
    let span_in = last_in.ticks + 160 - src.frames[0].time.ticks;
    // Everything but the encoder's trimmed lookahead and the last partial frame is out.
    let span_out = (out.len() as u64 * 960) / 6;
    assert!(span_in - span_out <= 160 + 60, "{span_in} input ticks, {span_out} output");
    assert!((tone::dominant_frequency(&pcm, channels, 48_000).unwrap() - TONE_HZ).abs() < 3.0);
}

#[test]
fn long_gaps_start_a_new_run_and_time_never_goes_back() {
    let src = source(Codec::Aac, 2.0, 0);
    let (mut transcoder, _) = build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, src.params)).unwrap();
    let mut frames = src.frames.clone();
    // A three-second stall after frame 30: timestamps jump.
    for frame in &mut frames[30..] {
        frame.time.ticks += 3 * 44_100;
    }
    // Then the publisher's clock goes back to 0 at frame 60.
    let back = frames[60].time.ticks;
    for frame in &mut frames[60..] {
        frame.time.ticks -= back;
    }
    let out = run(transcoder.as_mut(), &frames);
    let times: Vec<u64> = out.iter().map(|f| f.time.ticks).collect();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "monotonic");
    let jumps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).filter(|d| *d != 960).collect();
    assert_eq!(jumps.len(), 1, "one jump, at the stall: {jumps:?}");
    let resumed = MediaTime::new(frames[30].time.ticks, 44_100).rebase(48_000).ticks;
    assert!(times.contains(&resumed), "the new run starts at the input's new time");
    assert!(jumps[0] > 2 * 48_000);
}

#[test]
fn frames_stamped_far_apart_cannot_make_the_transcoder_generate_audio() {
    // 100 phone packets, each claiming to come 900 ms after the previous one: filling every gap
    // would be 4500 Opus frames; the concealment budget allows the first fill, then each jump
    // starts a new run.
    let src = source(Codec::Pcmu, 2.0, 0);
    let (mut transcoder, _) = build_transcoder(Codec::Pcmu, Codec::Opus, &track(Codec::Pcmu, src.params)).unwrap();
    let mut frames = src.frames[..100].to_vec();
    for (i, frame) in frames.iter_mut().enumerate() {
        frame.time = MediaTime::new(i as u64 * 7_200, 8_000);
    }
    let out = run(transcoder.as_mut(), &frames);
    assert!(out.len() < 400, "{} frames out", out.len());
    assert!(out.windows(2).all(|w| w[1].time.ticks > w[0].time.ticks));
}

#[test]
fn extreme_timestamps_do_not_panic() {
    let src = source(Codec::Pcma, 0.5, 0);
    let (mut transcoder, _) = build_transcoder(Codec::Pcma, Codec::Aac, &track(Codec::Pcma, src.params)).unwrap();
    let mut out = Vec::new();
    for (i, ticks) in [u64::MAX - 10, u64::MAX, 0, u64::MAX / 3, 1, u64::MAX].into_iter().cycle().take(24).enumerate() {
        let mut frame = src.frames[i].clone();
        frame.time = MediaTime { ticks, rate: [8_000, 1, u32::MAX, 0][i % 4] };
        transcoder.transcode(&frame, &mut out).unwrap();
    }
    assert!(out.windows(2).all(|w| w[1].time.ticks >= w[0].time.ticks));
}

#[test]
fn bad_frames_are_errors_and_the_stream_carries_on() {
    let src = source(Codec::Opus, 1.0, 0);
    let (mut transcoder, params) = build_transcoder(Codec::Opus, Codec::Pcma, &track(Codec::Opus, src.params)).unwrap();
    let mut out = Vec::new();
    let mut errors = 0;
    for (i, frame) in src.frames.iter().enumerate() {
        let mut frame = frame.clone();
        if i % 10 == 5 {
            frame.payload = Bytes::from_static(&[0xFF, 0xFF, 0xFF]);
        }
        if i == 7 {
            frame.codec = Codec::Aac;
        }
        if transcoder.transcode(&frame, &mut out).is_err() {
            errors += 1;
        }
    }
    assert_eq!(errors, 6);
    let (pcm, channels) = decode_continuous(Codec::Pcma, &params, &out);
    assert!(out.len() >= 48, "lost frames are concealed, not dropped: {}", out.len());
    assert!((tone::dominant_frequency(&pcm, channels, 8_000).unwrap() - TONE_HZ).abs() < 3.0);
}

#[test]
fn millisecond_timestamps_with_rounding_jitter_are_continuous() {
    // RTMP stamps AAC in milliseconds: 1024 samples at 44.1 kHz are 23.22 ms, rounded.
    let mut src = source(Codec::Aac, 1.0, 0);
    for (i, frame) in src.frames.iter_mut().enumerate() {
        frame.time = MediaTime::new((i as f64 * 1024.0 * 1000.0 / 44_100.0).round() as u64, 1000);
    }
    let (mut transcoder, params) = build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, src.params)).unwrap();
    let out = run(transcoder.as_mut(), &src.frames);
    let (pcm, _) = decode_continuous(Codec::Opus, &params, &out);
    // No concealment was inserted: output duration matches the input's, less the lookahead.
    let input_samples = src.frames.len() * 1024 * 48_000 / 44_100;
    assert!(
        pcm.len() / 2 <= input_samples && input_samples - pcm.len() / 2 < 960 + 312 + 480,
        "{} vs {input_samples}",
        pcm.len() / 2
    );
}

#[test]
fn a_track_without_an_audio_specific_config_uses_its_declared_rate() {
    let mut src = source(Codec::Aac, 0.5, 0);
    src.params.config = None;
    let (mut transcoder, params) = build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, src.params)).unwrap();
    let out = run(transcoder.as_mut(), &src.frames);
    let (pcm, channels) = decode_continuous(Codec::Opus, &params, &out);
    assert!((tone::dominant_frequency(&pcm, channels, 48_000).unwrap() - TONE_HZ).abs() < 3.0);
    let he_aac = CodecParams {
        config: Some(Bytes::from_static(&[0x2B, 0x92, 0x08, 0x00])),
        ..CodecParams::for_codec(Codec::Aac)
    };
    assert!(matches!(
        build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, he_aac)),
        Err(TranscodeError::Setup { .. })
    ));
    assert!(build_transcoder(Codec::H264, Codec::Opus, &track(Codec::H264, CodecParams::default())).is_err());
}

#[test]
fn work_per_input_frame_is_bounded() {
    // The AAC header (an explicit 1 Hz rate): no transcoder is built for it, so no
    // 1024-sample frame can become 49 million samples.
    let one_hz = CodecParams {
        config: Some(Bytes::from_static(&[0x17, 0x80, 0x00, 0x00, 0x88])),
        ..CodecParams::for_codec(Codec::Aac)
    };
    let refused = build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, one_hz));
    assert!(matches!(refused, Err(TranscodeError::Setup { .. })));

    // A G.711 "frame" of 1.25 s is refused before it is resampled and encoded; normal ones pass.
    let (mut transcoder, _) =
        build_transcoder(Codec::Pcmu, Codec::Opus, &track(Codec::Pcmu, CodecParams::for_codec(Codec::Pcmu))).unwrap();
    let mut out = Vec::new();
    let now = Instant::now();
    let huge = MediaFrame::audio(Codec::Pcmu, MediaTime::new(0, 8_000), now, Bytes::from(vec![0xff; 10_000]));
    let err = transcoder.transcode(&huge, &mut out).unwrap_err();
    assert!(err.to_string().contains("more than the 2048 allowed"), "{err}");
    assert!(out.is_empty());
    for i in 0..10u64 {
        let frame = MediaFrame::audio(Codec::Pcmu, MediaTime::new(i * 160, 8_000), now, Bytes::from(vec![0xff; 160]));
        transcoder.transcode(&frame, &mut out).unwrap();
    }
    assert!(!out.is_empty());
}
