//! What a Junction track is in CMAF: which codecs a CMAF track carries (H.264, VP8, VP9, AV1,
//! Opus, AAC), a track's decoder configuration from its codec parameters or from a keyframe
//! (an H.264 SPS/PPS, a VP8/VP9 frame header, an AV1 sequence header), its timescale and
//! nominal sample duration, and a frame's payload as an MP4 sample. Shared by every CMAF
//! output: MoQ broadcasts and recordings.

use bytes::Bytes;
use junction_core::h264::{self, AvcConfig, NAL_AUD};
use junction_core::{Codec, CodecParams};

use crate::TrackCodec;

/// Video codecs a CMAF track carries as published.
pub const CARRIED_VIDEO: [Codec; 4] = [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1];
/// Audio codecs a CMAF track carries as published; G.711 is transcoded by the engine.
pub const CARRIED_AUDIO: [Codec; 2] = [Codec::Opus, Codec::Aac];

/// The decoder configuration a video keyframe gives a track in `codec`, if it carries one.
pub fn video_config(codec: Codec, keyframe: &[u8], params: &CodecParams) -> Option<TrackCodec> {
    match codec {
        Codec::H264 => {
            let (Some(sps), Some(pps)) = junction_core::h264::parameter_sets(keyframe) else { return None };
            h264_config(sps, pps, params)
        }
        Codec::Vp8 => {
            let (width, height) = crate::vp8_keyframe_size(keyframe)?;
            Some(TrackCodec::Vp8 { config: crate::vp8_config(width, height), width, height })
        }
        Codec::Vp9 => {
            let (config, width, height) = crate::vp9_keyframe_config(keyframe)?;
            Some(TrackCodec::Vp9 { config, width, height })
        }
        Codec::Av1 => {
            let (config, width, height) = crate::av1_sequence_config(keyframe)?;
            Some(TrackCodec::Av1 { config, width, height })
        }
        _ => None,
    }
}

/// Opus pre-skip for 48 kHz streams whose real value is unknown (libopus's usual encoder delay).
const OPUS_PRE_SKIP: u16 = 312;

/// The decoder configuration of an audio track, from its parameters alone; `None` for video,
/// which needs an SPS/PPS from the stream.
pub fn audio_config(codec: Codec, params: &CodecParams) -> Option<TrackCodec> {
    match codec {
        Codec::Opus => Some(TrackCodec::Opus {
            channels: u16::from(params.channels.max(1)),
            pre_skip: OPUS_PRE_SKIP,
            input_sample_rate: 48_000,
        }),
        Codec::Aac => {
            let sample_rate = if params.clock_rate > 0 { params.clock_rate } else { 48_000 };
            let channels = params.channels.max(1);
            let config = params.config.clone().unwrap_or_else(|| junction_core::aac::lc_config(sample_rate, channels));
            Some(TrackCodec::Aac { config, sample_rate, channels: u16::from(channels) })
        }
        _ => None,
    }
}

/// The decoder configuration of an H.264 track from an SPS and a PPS seen in its stream.
pub fn h264_config(sps: &[u8], pps: &[u8], params: &CodecParams) -> Option<TrackCodec> {
    let avc = AvcConfig::from_parameter_sets(sps, pps)?;
    let (width, height) = crate::h264_dimensions(sps).or_else(|| params.width.zip(params.height)).unwrap_or((0, 0));
    Some(TrackCodec::H264 {
        avc,
        width: width.min(u32::from(u16::MAX)) as u16,
        height: height.min(u32::from(u16::MAX)) as u16,
    })
}

/// The timescale a carried codec's CMAF track uses.
pub fn timescale(codec: Codec, params: &CodecParams) -> u32 {
    match codec {
        Codec::Aac if params.clock_rate > 0 => params.clock_rate,
        Codec::Opus => 48_000,
        other => other.default_clock_rate(),
    }
}

/// A track's configuration from its parameters alone: audio always, H.264 when the
/// parameters carry an SPS/PPS record (RTMP, MoQ, file publishers); other video waits for a
/// keyframe ([`video_config`]).
pub fn initial_config(codec: Codec, params: &CodecParams) -> Option<TrackCodec> {
    match codec {
        Codec::H264 => params.config.as_ref().and_then(|record| {
            let avc = AvcConfig::parse(record).ok()?;
            h264_config(avc.sps.first()?, avc.pps.first()?, params)
        }),
        other => audio_config(other, params),
    }
}

/// A sample's nominal duration in `timescale` ticks (the last sample of a fragment has no next
/// one to measure against): an Opus or AAC frame, or a 30 fps picture.
pub fn nominal_duration(codec: Codec, timescale: u32) -> u32 {
    match codec {
        Codec::Opus => 960,
        Codec::Aac => 1024,
        _ => timescale / 30,
    }
}

/// A frame's payload as an MP4 sample: H.264 from Annex B to length-prefixed NAL units
/// (access unit delimiters left out), AV1 as its OBUs with sizes, others as they are.
pub fn sample_payload(codec: Codec, payload: Bytes) -> Bytes {
    match codec {
        Codec::H264 => h264::to_avcc(h264::annexb_nals(&payload).filter(|nal| h264::nal_type(nal) != NAL_AUD)),
        Codec::Av1 => crate::av1_sample(&payload),
        _ => payload,
    }
}

/// Decode times for samples that arrive in decode order stamped with presentation times: when
/// those go backwards (B-frames) the decode time still increases (by one tick) and the sample
/// carries a negative composition offset; otherwise the decode time is the presentation time.
/// Also keeps the last sample-to-sample step as the duration of the latest sample.
#[derive(Debug, Clone, Copy)]
pub struct DecodeTimes {
    last: Option<u64>,
    duration: u32,
}

impl DecodeTimes {
    /// Starting from a nominal sample duration ([`nominal_duration`]).
    pub fn new(duration: u32) -> DecodeTimes {
        DecodeTimes { last: None, duration }
    }

    /// The decode time of the sample presented at `pts` (ticks).
    pub fn next(&mut self, pts: u64) -> u64 {
        let mut dts = pts;
        if let Some(last) = self.last {
            if dts <= last {
                dts = last + 1;
            } else {
                self.duration = u32::try_from(dts - last).unwrap_or(self.duration);
            }
        }
        self.last = Some(dts);
        dts
    }

    /// The duration a sample is given: the last step between two samples.
    pub fn duration(&self) -> u32 {
        self.duration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_configs_are_synthesised_from_rate_and_channels() {
        let mut params = CodecParams::for_codec(Codec::Aac);
        params.clock_rate = 44_100;
        assert_eq!(audio_config(Codec::Aac, &params).unwrap().codec_string(), "mp4a.40.2");
        assert!(audio_config(Codec::H264, &params).is_none());
    }

    #[test]
    fn decode_times_increase_through_b_frames() {
        let mut times = DecodeTimes::new(3_000);
        let dts: Vec<u64> = [0, 6_000, 3_000, 9_000].into_iter().map(|pts| times.next(pts)).collect();
        assert_eq!(dts, [0, 6_000, 6_001, 9_000]);
        assert_eq!(times.duration(), 2_999);
    }

    #[test]
    fn h264_samples_are_length_prefixed_without_delimiters() {
        let annexb = h264::to_annexb([&[0x09, 0xf0][..], &[0x65, 0x88][..]]);
        let sample = sample_payload(Codec::H264, annexb);
        assert_eq!(&sample[..], &[0, 0, 0, 2, 0x65, 0x88]);
        assert_eq!(nominal_duration(Codec::Opus, 48_000), 960);
        assert_eq!(nominal_duration(Codec::Vp8, 90_000), 3_000);
    }
}
