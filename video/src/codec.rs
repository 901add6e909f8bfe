//! libavcodec through `ffmpeg-next`: a decoder for every video codec Junction carries (H.264,
//! VP8, VP9, AV1), the two encoders the engine bridges into (H.264 with libx264, VP8 with
//! libvpx), both tuned for real time (no B-frames, no look-ahead: one frame in, one packet out),
//! and the scaler between them. Nothing here is written by hand beyond the glue: the codecs are
//! Debian's libav* and the encoders they link.

use std::sync::OnceLock;

use bytes::Bytes;
use ff::format::Pixel;
use ffmpeg_next as ff;
use junction_core::Codec;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    #[error("libavcodec could not be initialised: {0}")]
    Init(String),
    #[error("this build of libavcodec has no {what} for {codec}")]
    Unavailable { what: &'static str, codec: Codec },
    #[error("{codec} {stage}: {reason}")]
    Codec { codec: Codec, stage: &'static str, reason: String },
    #[error("scaling: {0}")]
    Scaling(String),
    #[error("a {width}x{height} picture is outside what the transcoder takes (2x2 to {max}x{max})")]
    PictureSize { width: u32, height: u32, max: u32 },
}

/// The largest picture side a transcoder decodes (larger pictures are refused, not scaled:
/// decoding one already costs what the cap is there to bound).
pub const MAX_INPUT_SIDE: u32 = 4096;

/// Initialises libavcodec once per process and quiets its logging (a publisher's corrupt frame
/// must not write to the server's stderr; failures reach Junction's own log as errors).
pub fn init() -> Result<(), VideoError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        ff::init().map_err(|err| err.to_string())?;
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        Ok(())
    })
    .clone()
    .map_err(VideoError::Init)
}

fn codec_id(codec: Codec) -> Option<ff::codec::Id> {
    Some(match codec {
        Codec::H264 => ff::codec::Id::H264,
        Codec::Vp8 => ff::codec::Id::VP8,
        Codec::Vp9 => ff::codec::Id::VP9,
        Codec::Av1 => ff::codec::Id::AV1,
        _ => return None,
    })
}

fn encoder_name(codec: Codec) -> Option<&'static str> {
    match codec {
        Codec::H264 => Some("libx264"),
        Codec::Vp8 => Some("libvpx"),
        _ => None,
    }
}

/// Whether this libavcodec can decode `codec`.
pub fn can_decode(codec: Codec) -> bool {
    init().is_ok() && codec_id(codec).and_then(ff::decoder::find).is_some()
}

/// Whether this libavcodec can encode `codec` (H.264 and VP8 only).
pub fn can_encode(codec: Codec) -> bool {
    init().is_ok() && encoder_name(codec).and_then(ff::encoder::find_by_name).is_some()
}

fn codec_error(codec: Codec, stage: &'static str) -> impl Fn(ff::Error) -> VideoError {
    move |err| VideoError::Codec { codec, stage, reason: err.to_string() }
}

/// A decoder for one track: compressed frames in (Annex B for H.264, raw frames for VP8/VP9,
/// OBUs for AV1), pictures out.
pub struct Decoder {
    codec: Codec,
    inner: ff::decoder::Video,
}

impl Decoder {
    pub fn new(codec: Codec) -> Result<Self, VideoError> {
        init()?;
        let found = codec_id(codec).and_then(ff::decoder::find);
        let found = found.ok_or(VideoError::Unavailable { what: "decoder", codec })?;
        let mut context = ff::codec::context::Context::new_with_codec(found);
        // One thread: the transcoding runtime already spreads tracks over the cores, and frame
        // threading would hold pictures back by a frame per thread.
        context.set_threading(ff::codec::threading::Config::count(1));
        let inner = context.decoder().video().map_err(codec_error(codec, "decoder setup"))?;
        Ok(Self { codec, inner })
    }

    /// Decodes one frame stamped `pts`; pushes the pictures it completes onto `out`, each with
    /// its own frame's pts (in presentation order: a stream with B-frames gives them back later
    /// and reordered).
    pub fn decode(&mut self, payload: &[u8], pts: i64, out: &mut Vec<ff::frame::Video>) -> Result<(), VideoError> {
        let mut packet = ff::Packet::copy(payload);
        packet.set_pts(Some(pts));
        self.inner.send_packet(&packet).map_err(codec_error(self.codec, "decoding"))?;
        loop {
            let mut picture = ff::frame::Video::empty();
            if self.inner.receive_frame(&mut picture).is_err() {
                return Ok(());
            }
            let (width, height) = (picture.width(), picture.height());
            if !(2..=MAX_INPUT_SIDE).contains(&width) || !(2..=MAX_INPUT_SIDE).contains(&height) {
                return Err(VideoError::PictureSize { width, height, max: MAX_INPUT_SIDE });
            }
            out.push(picture);
        }
    }
}

/// What an encoder is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub bitrate_bps: u64,
    /// The frame rate rate control plans for (frames are timed by the caller, not by it).
    pub fps: u32,
    /// Frames between keyframes when nobody asks for one sooner.
    pub keyframe_interval: u32,
}

/// One packet out of an encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The sequence number of the picture it encodes (as given to [`Encoder::encode`]).
    pub sequence: i64,
    pub keyframe: bool,
    pub payload: Bytes,
}

/// A real-time encoder: H.264 (libx264, constrained baseline profile so every decoder takes it,
/// Annex B with the parameter sets before each keyframe) or VP8 (libvpx, real-time deadline).
pub struct Encoder {
    codec: Codec,
    settings: EncoderSettings,
    inner: ff::encoder::Video,
}

impl Encoder {
    pub fn new(codec: Codec, settings: EncoderSettings) -> Result<Self, VideoError> {
        init()?;
        let found = encoder_name(codec).and_then(ff::encoder::find_by_name);
        let found = found.ok_or(VideoError::Unavailable { what: "encoder", codec })?;
        let mut context = ff::codec::context::Context::new_with_codec(found);
        context.set_threading(ff::codec::threading::Config::count(1));
        let mut encoder = context.encoder().video().map_err(codec_error(codec, "encoder setup"))?;
        encoder.set_width(settings.width);
        encoder.set_height(settings.height);
        encoder.set_format(Pixel::YUV420P);
        // Pictures are numbered, one tick each: rate control sees a steady frame rate whatever
        // the publisher's timestamps do, and the caller maps numbers back to media time.
        encoder.set_time_base(ff::Rational(1, settings.fps.max(1) as i32));
        encoder.set_frame_rate(Some(ff::Rational(settings.fps.max(1) as i32, 1)));
        encoder.set_bit_rate(settings.bitrate_bps as usize);
        encoder.set_max_bit_rate(settings.bitrate_bps as usize * 3 / 2);
        encoder.set_gop(settings.keyframe_interval.max(1));
        encoder.set_max_b_frames(0);
        let mut options = ff::Dictionary::new();
        match codec {
            Codec::H264 => {
                options.set("preset", "veryfast");
                options.set("tune", "zerolatency");
                options.set("profile", "baseline");
                options.set("forced-idr", "1");
            }
            _ => {
                options.set("deadline", "realtime");
                options.set("cpu-used", "8");
                options.set("lag-in-frames", "0");
                options.set("error-resilient", "default");
            }
        }
        let inner = encoder.open_as_with(found, options).map_err(codec_error(codec, "encoder setup"))?;
        Ok(Self { codec, settings, inner })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Encodes one picture (already at the encoder's size, in YUV 4:2:0) numbered `sequence`,
    /// as a keyframe when `keyframe`; pushes the packets it completes onto `out`.
    pub fn encode(
        &mut self,
        picture: &mut ff::frame::Video,
        sequence: i64,
        keyframe: bool,
        out: &mut Vec<Encoded>,
    ) -> Result<(), VideoError> {
        picture.set_pts(Some(sequence));
        picture.set_kind(if keyframe { ff::picture::Type::I } else { ff::picture::Type::None });
        self.inner.send_frame(picture).map_err(codec_error(self.codec, "encoding"))?;
        let mut packet = ff::Packet::empty();
        while self.inner.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            out.push(Encoded {
                sequence: packet.pts().unwrap_or(sequence),
                keyframe: packet.is_key(),
                payload: Bytes::copy_from_slice(data),
            });
        }
        Ok(())
    }
}

/// Converts decoded pictures to the encoder's size and pixel format (bilinear), rebuilding its
/// context when the input changes (a simulcast layer switch, a publisher changing resolution).
#[derive(Default)]
pub struct Scaler {
    context: Option<ScalerContext>,
}

/// A libswscale context and the conversion it was built for.
struct ScalerContext {
    scaler: SendableScaler,
    /// Input format and size.
    input: (Pixel, u32, u32),
    /// Output size.
    output: (u32, u32),
}

/// An `SwsContext` moved between the transcoding runtime's threads.
struct SendableScaler(ff::software::scaling::Context);

// SAFETY: a libswscale context has no thread affinity; it is owned by one transcoder, which only
// one thread runs at a time (`FrameTranscoder::transcode` takes `&mut self`).
unsafe impl Send for SendableScaler {}

impl Scaler {
    /// `picture` at `width`x`height` in YUV 4:2:0; the picture itself when it already is.
    pub fn scale(
        &mut self,
        picture: ff::frame::Video,
        width: u32,
        height: u32,
    ) -> Result<ff::frame::Video, VideoError> {
        if (picture.format(), picture.width(), picture.height()) == (Pixel::YUV420P, width, height) {
            return Ok(picture);
        }
        self.scale_copy(&picture, width, height)
    }

    /// A copy of `picture` at `width`x`height` in YUV 4:2:0 (the picture stays as it is).
    pub fn scale_copy(
        &mut self,
        picture: &ff::frame::Video,
        width: u32,
        height: u32,
    ) -> Result<ff::frame::Video, VideoError> {
        let input = (picture.format(), picture.width(), picture.height());
        let fresh = self.context.as_ref().is_none_or(|c| c.input != input || c.output != (width, height));
        if fresh {
            let scaler = ff::software::scaling::Context::get(
                input.0,
                input.1,
                input.2,
                Pixel::YUV420P,
                width,
                height,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(|err| VideoError::Scaling(err.to_string()))?;
            self.context = Some(ScalerContext { scaler: SendableScaler(scaler), input, output: (width, height) });
        }
        let Some(context) = self.context.as_mut() else { unreachable!("set above") };
        let mut scaled = ff::frame::Video::empty();
        context.scaler.0.run(picture, &mut scaled).map_err(|err| VideoError::Scaling(err.to_string()))?;
        Ok(scaled)
    }
}

/// The size a picture is encoded at: its own, fitted inside `max_width`x`max_height` with its
/// aspect ratio kept, rounded down to even sides (4:2:0 needs them).
pub fn fitted_size(width: u32, height: u32, max_width: u32, max_height: u32) -> (u32, u32) {
    let scale =
        f64::min(1.0, f64::min(f64::from(max_width) / f64::from(width), f64::from(max_height) / f64::from(height)));
    let even = |side: f64| ((side as u32) & !1).max(2);
    (even(f64::from(width) * scale), even(f64::from(height) * scale))
}

/// A bitrate for real-time video at this size: 0.1 bit per pixel at 30 frames/s (2.8 Mb/s at
/// 720p), within 200 kb/s and 6 Mb/s.
pub fn bitrate_for(width: u32, height: u32) -> u64 {
    (u64::from(width) * u64::from(height) * 3).clamp(200_000, 6_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit_keep_aspect_and_are_even() {
        assert_eq!(fitted_size(1920, 1080, 1280, 720), (1280, 720));
        assert_eq!(fitted_size(640, 480, 1280, 720), (640, 480));
        assert_eq!(fitted_size(1080, 1920, 1280, 720), (404, 720));
        assert_eq!(fitted_size(321, 241, 1280, 720), (320, 240));
        assert_eq!(bitrate_for(1280, 720), 2_764_800);
        assert_eq!(bitrate_for(16, 16), 200_000);
    }

    /// A synthetic moving picture through libx264 and back through the H.264 decoder, and the
    /// same through libvpx's VP8: sizes survive, the first packet is a keyframe, a forced
    /// keyframe is one, and the decoded luma follows the moving bar.
    #[test]
    fn encode_and_decode_round_trip_for_both_encoders() {
        for codec in [Codec::H264, Codec::Vp8] {
            if !can_encode(codec) {
                panic!("libavcodec here has no {codec} encoder: install Debian's libavcodec");
            }
            let settings =
                EncoderSettings { width: 160, height: 96, bitrate_bps: 300_000, fps: 30, keyframe_interval: 300 };
            let mut encoder = Encoder::new(codec, settings).unwrap();
            let mut decoder = Decoder::new(codec).unwrap();
            let mut packets = Vec::new();
            for n in 0..12i64 {
                let mut picture = ff::frame::Video::new(Pixel::YUV420P, 160, 96);
                let stride = picture.stride(0);
                let bar = (n as usize * 10) % 160;
                for (i, px) in picture.data_mut(0).iter_mut().enumerate() {
                    *px = if (i % stride).abs_diff(bar) < 8 { 235 } else { 16 };
                }
                picture.data_mut(1).fill(128);
                picture.data_mut(2).fill(128);
                encoder.encode(&mut picture, n, n == 0 || n == 7, &mut packets).unwrap();
            }
            assert_eq!(packets.len(), 12, "{codec}: one packet per picture");
            assert!(packets[0].keyframe && packets[7].keyframe, "{codec}: forced keyframes");
            assert!(!packets[3].keyframe);
            assert_eq!(packets.iter().map(|p| p.sequence).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
            let mut pictures = Vec::new();
            for packet in &packets {
                decoder.decode(&packet.payload, packet.sequence, &mut pictures).unwrap();
            }
            assert!(pictures.len() >= 11, "{codec}: decoded {}", pictures.len());
            let last = &pictures[pictures.len() - 1];
            assert_eq!((last.width(), last.height()), (160, 96));
            let row = &last.data(0)[40 * last.stride(0)..40 * last.stride(0) + 160];
            let brightest = row.iter().enumerate().max_by_key(|(_, v)| **v).map(|(i, _)| i).unwrap();
            let expected = (pictures.len() - 1 + (12 - pictures.len())) * 10 % 160;
            assert!(brightest.abs_diff(expected) < 10, "{codec}: bar at {brightest}, expected near {expected}");
        }
    }
}
