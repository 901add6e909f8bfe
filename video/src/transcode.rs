//! The video transcoders the engine's codec adaptation runs (VP8/VP9/AV1 -> H.264 for RTMP, MoQ
//! and HLS viewers of a browser; H.264 and the others -> VP8 for a WebRTC viewer without H.264;
//! H.264 with B-frames -> H.264 without, for WebRTC viewers, whose decoders take none),
//! the routes they are registered under, and the process-wide bound on how many run at once
//! (`video.max_transcodes`, counted by the `junction_video_transcodes` gauge).
//!
//! A transcoder decodes the simulcast layer its viewers want (the best any of them prefers, as
//! the engine picks it), fits the picture inside `video.max_width`x`video.max_height`, and
//! encodes it with no frame of delay. Moved below the top layer (WebRTC viewers, which take any
//! size), it encodes each layer at its own size from the layer's first keyframe; moved to the
//! top layer, that layer's first keyframe sets the size for good, and a layer the publisher
//! falls back to is scaled to it, so that players that cannot take a size change mid-stream
//! (CMAF init segments) never see one (see [`LayerMove`]).
//! Keyframes are mapped both ways: a viewer's keyframe request reaches the publisher (for the
//! layer the transcoder reads: the engine routes a variant's requests to its original), a
//! keyframe from the publisher becomes a keyframe out, and a keyframe goes out at least every
//! `video.keyframe_interval_s` for players that join between requests (RTMP, HLS). A decoder
//! that loses its place asks the publisher for a keyframe and waits for it instead of encoding
//! garbage.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use ffmpeg_next as ff;
use junction_core::{Codec, CodecParams, MediaFrame, MediaTime, TrackInfo};
use junction_engine::adapt::{AdapterRegistry, FrameTranscoder, LayerMove, TranscodeError};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::codec::{Decoder, Encoded, Encoder, EncoderSettings, Scaler, VideoError, bitrate_for, fitted_size};
use crate::limit::{Limit, Slot};

/// The `[video]` section: the transcoders that give viewers a video codec they can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoConfig {
    /// Video transcoders running at once in this process (one per track and target codec,
    /// shared by its viewers); a viewer needing one more is refused with a
    /// `transcode_unavailable` error [4]. 0 turns video transcoding off.
    pub max_transcodes: usize,
    /// The largest picture a transcoder encodes; larger ones are scaled down, keeping their
    /// aspect ratio [1280 x 720].
    pub max_width: u32,
    pub max_height: u32,
    /// Seconds between the keyframes a transcoder sends when nobody asks for one sooner [2].
    pub keyframe_interval_s: u32,
    /// Grid compositions (the `grid` layout of the HLS and recording outputs, about a third of
    /// a core each at 720p30) running at once; one more fails naming this key [4]. 0 turns
    /// grids off.
    pub max_grids: usize,
}

impl VideoConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let side = 16..=crate::codec::MAX_INPUT_SIDE;
        if !side.contains(&self.max_width) {
            return Err(("video.max_width", format!("must be 16 to {}", crate::codec::MAX_INPUT_SIDE)));
        }
        if !side.contains(&self.max_height) {
            return Err(("video.max_height", format!("must be 16 to {}", crate::codec::MAX_INPUT_SIDE)));
        }
        if !(1..=60).contains(&self.keyframe_interval_s) {
            return Err(("video.keyframe_interval_s", "must be 1 to 60".into()));
        }
        Ok(())
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self { max_transcodes: 4, max_width: 1280, max_height: 720, keyframe_interval_s: 2, max_grids: 4 }
    }
}

/// The codecs a transcoder reads.
const DECODED: [Codec; 4] = [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1];
/// The codecs a transcoder writes: what RTMP/MoQ/HLS players and WebRTC viewers without H.264
/// need.
const ENCODED: [Codec; 2] = [Codec::H264, Codec::Vp8];
/// Frame rate the encoders' rate control plans for.
const NOMINAL_FPS: u32 = 30;
/// Pictures in the encoder whose media time is remembered (the encoders hold none back; this
/// bounds the bookkeeping if one ever did).
const MAX_PENDING: usize = 32;

/// Registers a route for every pair this libavcodec can decode and encode; returns the pairs.
pub fn register_adapters(registry: &mut AdapterRegistry, config: VideoConfig) -> Vec<(Codec, Codec)> {
    let mut registered = Vec::new();
    let limit = Limit::new(config.max_transcodes, "junction_video_transcodes");
    if config.max_transcodes == 0 {
        return registered;
    }
    for from in DECODED.into_iter().filter(|c| crate::codec::can_decode(*c)) {
        // H.264 -> H.264 too: a stream with B-frames re-encoded without them, for WebRTC viewers.
        for to in ENCODED.into_iter().filter(|to| crate::codec::can_encode(*to)) {
            let limit = limit.clone();
            registry.register(
                from,
                to,
                Arc::new(move |info: &TrackInfo| build_transcoder(from, to, info, config, &limit)),
            );
            registered.push((from, to));
        }
    }
    registered
}

fn build_transcoder(
    from: Codec,
    to: Codec,
    track: &TrackInfo,
    config: VideoConfig,
    limit: &Arc<Limit>,
) -> Result<(Box<dyn FrameTranscoder>, CodecParams), TranscodeError> {
    let setup = |reason: String| TranscodeError::Setup { from, to, reason };
    let slot = limit.take().ok_or_else(|| {
        setup(format!("video.max_transcodes ({}) video transcoders are already running", limit.max()))
    })?;
    let decoder = Decoder::new(from).map_err(|err| setup(err.to_string()))?;
    let mut params = CodecParams::for_codec(to);
    if to == Codec::H264 {
        // Constrained baseline (what libx264's baseline profile writes), level 3.1: 720p30.
        params.fmtp = Some("level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into());
    }
    if let (Some(width), Some(height)) = (track.params.width, track.params.height)
        && width >= 2
        && height >= 2
    {
        let (width, height) = fitted_size(width, height, config.max_width, config.max_height);
        (params.width, params.height) = (Some(width), Some(height));
    }
    debug!(track = %track.id, %from, %to, "building video transcoder");
    let transcoder = VideoTranscoder {
        from,
        to,
        config,
        decoder,
        scaler: Scaler::default(),
        encoder: None,
        synced: false,
        resize: Resize::Never,
        encoder_layer: 0,
        wants_keyframe: true,
        last_keyframe: None,
        sequence: 0,
        pending: VecDeque::new(),
        pictures: Vec::new(),
        packets: Vec::new(),
        _slot: slot,
    };
    Ok((Box::new(transcoder), params))
}

/// One track's decoder, scaler and encoder.
struct VideoTranscoder {
    from: Codec,
    to: Codec,
    config: VideoConfig,
    decoder: Decoder,
    scaler: Scaler,
    /// Opened at the first picture, at its fitted size; later pictures are scaled to it.
    encoder: Option<Encoder>,
    /// Whether the decoder has a keyframe to decode from.
    synced: bool,
    /// Which keyframes of another layer than the encoder's reopen it at their own size.
    resize: Resize,
    /// The simulcast layer of the frame the encoder was opened at.
    encoder_layer: u8,
    wants_keyframe: bool,
    /// Media time of the last keyframe sent.
    last_keyframe: Option<MediaTime>,
    sequence: i64,
    /// Pictures handed to the encoder: sequence number, media time, and the arrival and capture
    /// time of the frame that made the decoder let the picture out (with B-frames, a later frame
    /// than the picture's own, as its arrival the instant the picture could be sent on).
    pending: VecDeque<(i64, MediaTime, Instant, Instant)>,
    pictures: Vec<ff::frame::Video>,
    packets: Vec<Encoded>,
    _slot: Slot,
}

impl VideoTranscoder {
    fn keyframe_due(&self, time: MediaTime) -> bool {
        let Some(last) = self.last_keyframe else { return true };
        let elapsed = time.rebase(last.rate).ticks.wrapping_sub(last.ticks);
        // A timestamp that went backwards (a new publisher session) also starts afresh.
        elapsed >= u64::from(self.config.keyframe_interval_s) * u64::from(last.rate) || elapsed > 1 << 62
    }

    fn encoder_for(&mut self, width: u32, height: u32) -> Result<&mut Encoder, VideoError> {
        if self.encoder.is_none() {
            let (width, height) = fitted_size(width, height, self.config.max_width, self.config.max_height);
            let settings = EncoderSettings {
                width,
                height,
                bitrate_bps: bitrate_for(width, height),
                fps: NOMINAL_FPS,
                keyframe_interval: self.config.keyframe_interval_s.max(1) * NOMINAL_FPS * 2,
            };
            debug!(from = %self.from, to = %self.to, width, height, "opening video encoder");
            self.encoder = Some(Encoder::new(self.to, settings)?);
        }
        Ok(self.encoder.as_mut().expect("opened above"))
    }

    fn decode_error(&mut self, err: VideoError) -> TranscodeError {
        self.synced = false;
        self.wants_keyframe = true;
        TranscodeError::Decode { codec: self.from, reason: err.to_string() }
    }
}

impl FrameTranscoder for VideoTranscoder {
    fn transcode(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        if !self.synced {
            if !frame.keyframe {
                // Asked again on every frame until one comes: the engine rate-limits requests.
                self.wants_keyframe = true;
                return Ok(());
            }
            self.synced = true;
        }
        if frame.keyframe && self.resize.take_at(frame.layer) && frame.layer != self.encoder_layer {
            // The next picture opens an encoder at its own size.
            self.encoder = None;
        }
        let mut pictures = std::mem::take(&mut self.pictures);
        let pts = i64::try_from(frame.time.ticks).unwrap_or(i64::MAX);
        if let Err(err) = self.decoder.decode(&frame.payload, pts, &mut pictures) {
            pictures.clear();
            self.pictures = pictures;
            return Err(self.decode_error(err));
        }
        let mut packets = std::mem::take(&mut self.packets);
        let mut result = Ok(());
        for picture in pictures.drain(..) {
            // A picture carries its own frame's time: with B-frames it is not the frame just fed.
            let time = picture
                .pts()
                .and_then(|pts| u64::try_from(pts).ok())
                .map_or(frame.time, |ticks| MediaTime { ticks, rate: frame.time.rate });
            if self.encoder.is_none() {
                self.encoder_layer = frame.layer;
            }
            let keyframe = picture.is_key() || self.keyframe_due(time);
            let size = self.encoder_for(picture.width(), picture.height()).map(|encoder| encoder.settings());
            let step = size.and_then(|EncoderSettings { width, height, .. }| {
                let mut scaled = self.scaler.scale(picture, width, height)?;
                let encoder = self.encoder.as_mut().expect("opened above");
                encoder.encode(&mut scaled, self.sequence, keyframe, &mut packets)
            });
            if let Err(err) = step {
                result = Err(TranscodeError::Encode { codec: self.to, reason: err.to_string() });
                break;
            }
            self.pending.push_back((self.sequence, time, frame.arrival, frame.captured));
            if self.pending.len() > MAX_PENDING {
                self.pending.pop_front();
            }
            self.sequence += 1;
        }
        self.pictures = pictures;
        for packet in packets.drain(..) {
            while self.pending.front().is_some_and(|(sequence, ..)| *sequence < packet.sequence) {
                self.pending.pop_front();
            }
            let Some(&(_, time, arrival, captured)) = self.pending.front() else { continue };
            if packet.keyframe {
                self.last_keyframe = Some(time);
            }
            out.push(MediaFrame::video(self.to, time, packet.keyframe, arrival, packet.payload).captured_at(captured));
        }
        self.packets = packets;
        result
    }

    fn wants_keyframe(&mut self) -> bool {
        std::mem::take(&mut self.wants_keyframe)
    }

    fn input_changed(&mut self, to: LayerMove) {
        self.resize = match to {
            LayerMove::ToTop(top) => Resize::AtLayer(top),
            LayerMove::BelowTop => Resize::EachLayer,
        };
    }
}

/// When a transcoder reopens its encoder at the size of the layer it reads (see [`LayerMove`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resize {
    /// The size it started with is kept.
    Never,
    /// Once, at the first keyframe of this layer; then never.
    AtLayer(u8),
    /// At the first keyframe of each layer it moves to.
    EachLayer,
}

impl Resize {
    /// Whether a keyframe of `layer` may set the encoder's size; a one-time move is used up.
    fn take_at(&mut self, layer: u8) -> bool {
        match *self {
            Resize::AtLayer(at) if at == layer => {
                *self = Resize::Never;
                true
            }
            Resize::EachLayer => true,
            Resize::Never | Resize::AtLayer(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ff::format::Pixel;
    use junction_core::{MediaKind, PeerId, TrackId, TrackSource};

    fn track(codec: Codec) -> TrackInfo {
        TrackInfo {
            id: TrackId::new("TR_test").unwrap(),
            peer: PeerId::new("pub").unwrap(),
            name: "camera".into(),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            codec,
            params: CodecParams { width: Some(320), height: Some(192), ..CodecParams::for_codec(codec) },
            layers: Vec::new(),
            muted: false,
        }
    }

    /// `count` VP8 frames of a bar moving right, keyframes where `keyframes` says.
    fn vp8_frames(count: i64, keyframes: &[i64]) -> Vec<MediaFrame> {
        vp8_frames_sized(count, keyframes, (320, 192))
    }

    /// [`vp8_frames`] at another picture size.
    fn vp8_frames_sized(count: i64, keyframes: &[i64], (width, height): (u32, u32)) -> Vec<MediaFrame> {
        let settings = EncoderSettings { width, height, bitrate_bps: 500_000, fps: 30, keyframe_interval: 1000 };
        let mut encoder = Encoder::new(Codec::Vp8, settings).unwrap();
        let mut packets = Vec::new();
        for n in 0..count {
            let mut picture = ff::frame::Video::new(Pixel::YUV420P, width, height);
            let stride = picture.stride(0);
            for (i, px) in picture.data_mut(0).iter_mut().enumerate() {
                *px = if (i % stride).abs_diff(n as usize * 8 % width as usize) < 12 { 235 } else { 16 };
            }
            picture.data_mut(1).fill(128);
            picture.data_mut(2).fill(128);
            encoder.encode(&mut picture, n, keyframes.contains(&n), &mut packets).unwrap();
        }
        let start = Instant::now();
        packets
            .into_iter()
            .map(|p| {
                let time = MediaTime::new(1_000 + p.sequence as u64 * 3_000, 90_000);
                MediaFrame::video(Codec::Vp8, time, p.keyframe, start, p.payload)
            })
            .collect()
    }

    fn has_nal(payload: &Bytes, kind: u8) -> bool {
        junction_core::h264::annexb_nals(payload).any(|nal| junction_core::h264::nal_type(nal) == kind)
    }

    #[test]
    fn vp8_becomes_h264_keyframe_for_keyframe_with_times_kept_and_the_limit_holds() {
        let mut registry = AdapterRegistry::default();
        let config = VideoConfig { max_transcodes: 1, keyframe_interval_s: 60, ..VideoConfig::default() };
        let routes = register_adapters(&mut registry, config);
        assert!(routes.contains(&(Codec::Vp8, Codec::H264)) && routes.contains(&(Codec::H264, Codec::Vp8)));
        let (to, factory) = registry.route(Codec::Vp8, &[Codec::H264]).unwrap();
        assert_eq!(to, Codec::H264);
        let (mut transcoder, params) = factory(&track(Codec::Vp8)).unwrap();
        assert_eq!((params.width, params.height), (Some(320), Some(192)));
        assert!(params.fmtp.as_deref().unwrap().contains("packetization-mode=1"));
        let refused = factory(&track(Codec::Vp8)).err().unwrap();
        assert!(refused.to_string().contains("video.max_transcodes (1)"), "{refused}");

        let frames = vp8_frames(40, &[0, 25]);
        let mut out = Vec::new();
        // Joining mid-stream: frames before a keyframe are skipped, and a keyframe is asked for.
        transcoder.transcode(&frames[5], &mut out).unwrap();
        assert!(out.is_empty() && transcoder.wants_keyframe());
        for frame in &frames {
            transcoder.transcode(frame, &mut out).unwrap();
        }
        assert!(!transcoder.wants_keyframe());
        assert_eq!(out.len(), 40);
        for (input, output) in frames.iter().zip(&out) {
            assert_eq!((output.codec, output.time), (Codec::H264, input.time));
            assert_eq!(output.keyframe, input.keyframe, "keyframes map one to one at {:?}", input.time);
        }
        assert!(has_nal(&out[0].payload, 7) && has_nal(&out[0].payload, 5), "SPS and IDR lead");
        assert!(has_nal(&out[25].payload, 7) && has_nal(&out[25].payload, 5));
        assert!(!has_nal(&out[10].payload, 5));

        // The H.264 decodes, and the bar still moves.
        let mut decoder = Decoder::new(Codec::H264).unwrap();
        let mut pictures = Vec::new();
        for frame in &out {
            decoder.decode(&frame.payload, frame.time.ticks as i64, &mut pictures).unwrap();
        }
        let bar = |picture: &ff::frame::Video| {
            let row = &picture.data(0)[96 * picture.stride(0)..96 * picture.stride(0) + 320];
            row.iter().enumerate().max_by_key(|(_, v)| **v).map(|(i, _)| i).unwrap()
        };
        assert!(pictures.len() >= 39);
        assert!(bar(&pictures[30]).abs_diff(bar(&pictures[10])) > 100, "the bar moved");

        drop(transcoder);
        assert!(factory(&track(Codec::Vp8)).is_ok(), "a stopped transcoder frees its slot");
    }

    #[test]
    fn a_keyframe_goes_out_every_interval_and_garbage_asks_for_a_keyframe() {
        let mut registry = AdapterRegistry::default();
        let config = VideoConfig { keyframe_interval_s: 1, ..VideoConfig::default() };
        register_adapters(&mut registry, config);
        let (_, factory) = registry.route(Codec::Vp8, &[Codec::H264]).unwrap();
        let (mut transcoder, _) = factory(&track(Codec::Vp8)).unwrap();
        let frames = vp8_frames(70, &[0]);
        let mut out = Vec::new();
        for frame in &frames {
            transcoder.transcode(frame, &mut out).unwrap();
        }
        let keyframes: Vec<usize> = out.iter().enumerate().filter(|(_, f)| f.keyframe).map(|(i, _)| i).collect();
        assert_eq!(keyframes, vec![0, 30, 60], "one a second at 30 frames/s");

        let garbage =
            MediaFrame::video(Codec::Vp8, frames[69].time, false, frames[69].arrival, Bytes::from_static(&[0xff; 7]));
        let _ = transcoder.transcode(&garbage, &mut out);
        let after = out.len();
        if transcoder.wants_keyframe() {
            // Lost its place: nothing more until a keyframe.
            transcoder.transcode(&frames[10], &mut out).unwrap();
            assert_eq!(out.len(), after);
        }
    }

    /// The picture sizes H.264 `frames` decode to, in order.
    fn decoded_sizes(frames: &[MediaFrame]) -> Vec<(u32, u32)> {
        let mut decoder = Decoder::new(Codec::H264).unwrap();
        let mut pictures = Vec::new();
        for frame in frames {
            decoder.decode(&frame.payload, frame.time.ticks as i64, &mut pictures).unwrap();
        }
        pictures.iter().map(|p| (p.width(), p.height())).collect()
    }

    #[test]
    fn a_transcoder_follows_the_layers_its_viewers_move_it_to_and_keeps_its_size_otherwise() {
        let mut registry = AdapterRegistry::default();
        register_adapters(&mut registry, VideoConfig { keyframe_interval_s: 60, ..VideoConfig::default() });
        let (_, factory) = registry.route(Codec::Vp8, &[Codec::H264]).unwrap();
        // Ten frames of a simulcast publisher's layer, from a keyframe, with times that carry on
        // after `segment` earlier ones (the engine's subscription rebases them across a switch).
        let layer = |layer: u8, segment: u64| -> Vec<MediaFrame> {
            let size = [(160, 96), (240, 144), (320, 192)][usize::from(layer)];
            vp8_frames_sized(10, &[0], size)
                .into_iter()
                .map(|mut f| {
                    f.time.ticks += segment * 30_000;
                    f.with_layer(layer)
                })
                .collect()
        };
        // The transcoder reads the layers in `read` one after another (ten frames each), told of
        // `moves` after the first; returns the picture sizes it encoded, one per layer read.
        let run = |read: &[u8], moves: &[LayerMove]| {
            let (mut transcoder, _) = factory(&track(Codec::Vp8)).unwrap();
            let mut out = Vec::new();
            for (segment, l) in read.iter().enumerate() {
                if segment == 1 {
                    moves.iter().for_each(|to| transcoder.input_changed(*to));
                }
                for frame in layer(*l, segment as u64) {
                    transcoder.transcode(&frame, &mut out).unwrap();
                }
            }
            assert_eq!(out.len(), 10 * read.len());
            assert!(out.iter().step_by(10).all(|f| f.keyframe), "each layer starts with a keyframe out");
            let sizes = decoded_sizes(&out);
            assert!(sizes.chunks(10).all(|c| c.iter().all(|s| *s == c[0])), "{sizes:?}");
            sizes.iter().step_by(10).copied().collect::<Vec<_>>()
        };
        // The viewers asked for a lower layer: they get its own size.
        assert_eq!(run(&[2, 0], &[LayerMove::BelowTop]), [(320, 192), (160, 96)]);
        // The publisher stopped its top layer: the stream keeps the size it started with.
        assert_eq!(run(&[2, 0], &[]), [(320, 192), (320, 192)]);
        // Below the top, every layer read gets its own size: frames of the middle layer still
        // queued from a first move, then the lowest one the viewers moved on to.
        assert_eq!(run(&[2, 1, 0], &[LayerMove::BelowTop, LayerMove::BelowTop]), [(320, 192), (240, 144), (160, 96)]);
        // Up to the top from the lowest: lower frames still queued keep the size, the top layer
        // sets it, and a fallback after it keeps it.
        assert_eq!(run(&[0, 1, 2, 1], &[LayerMove::ToTop(2)]), [(160, 96), (160, 96), (320, 192), (320, 192)]);
    }
}
