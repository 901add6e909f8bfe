//! A media file's first video track as engine frames, passed through without decoding:
//! H.264 from MP4/MOV (the avcC of the sample entry; AVCC samples become Annex B with the
//! parameter sets in front of each IDR) and VP8 or VP9 from WebM/Matroska. symphonia's demuxers
//! read the container (it decodes no video, and none is needed); the keyframe flags are a few
//! header bits, read here: H.264 IDR slices, VP8's frame-type bit, VP9's uncompressed header.

use std::path::Path;

use bytes::Bytes;
use junction_core::h264::{self, AvcConfig};
use junction_core::{Codec, CodecParams};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::video::well_known::extra_data::VIDEO_EXTRA_DATA_ID_AVC_DECODER_CONFIG;
use symphonia::core::codecs::video::well_known::{CODEC_ID_H264, CODEC_ID_VP8, CODEC_ID_VP9};
use symphonia::core::formats::{FormatReader, TrackType};
use symphonia::core::units::TimeBase;

use super::decode::{DecodeError, next_packet, probe};

/// The clock of video frames.
pub const CLOCK: u64 = 90_000;

/// One frame of the file's video, times in [`CLOCK`] ticks from the file's start.
#[derive(Debug, Clone)]
pub struct VideoSample {
    /// When it is due (decode order).
    pub dts: u64,
    /// When it is shown.
    pub pts: u64,
    pub keyframe: bool,
    pub payload: Bytes,
}

/// An open file, positioned at its next video packet.
pub struct FileVideo {
    reader: Box<dyn FormatReader>,
    track: u32,
    codec: Codec,
    params: CodecParams,
    avc: Option<AvcConfig>,
    time_base: TimeBase,
}

impl FileVideo {
    /// The file's first video track Junction can pass on, or `None` (no video, or another codec).
    pub fn open(path: &Path) -> Result<Option<FileVideo>, DecodeError> {
        let reader = probe(path)?;
        let Some(track) = reader.default_track(TrackType::Video) else { return Ok(None) };
        let Some(CodecParameters::Video(video)) = track.codec_params.clone() else { return Ok(None) };
        let Some(time_base) = track.time_base else { return Ok(None) };
        let track_id = track.id;
        let size = |v: Option<u16>| v.map(u32::from).filter(|v| *v > 0);
        let mut params = CodecParams {
            clock_rate: CLOCK as u32,
            width: size(video.width),
            height: size(video.height),
            ..CodecParams::default()
        };
        let (codec, avc) = match video.codec {
            CODEC_ID_H264 => {
                let record = video.extra_data.iter().find(|e| e.id == VIDEO_EXTRA_DATA_ID_AVC_DECODER_CONFIG);
                let Some(config) = record.and_then(|r| AvcConfig::parse(&r.data).ok()) else {
                    return Err(DecodeError::Codec("H.264 without a usable avcC".into()));
                };
                params.fmtp = Some(format!("profile-level-id={};packetization-mode=1", config.profile_level_id()));
                params.config = Some(AvcConfig { length_size: 4, ..config.clone() }.to_bytes());
                (Codec::H264, Some(config))
            }
            CODEC_ID_VP8 => (Codec::Vp8, None),
            CODEC_ID_VP9 => (Codec::Vp9, None),
            _ => return Ok(None),
        };
        params.validate(codec).map_err(|e| DecodeError::Codec(e.to_string()))?;
        Ok(Some(FileVideo { reader, track: track_id, codec, params, avc, time_base }))
    }

    /// The track to publish.
    pub fn track(&self) -> (Codec, &CodecParams) {
        (self.codec, &self.params)
    }

    /// The next frame, or `None` at the end of the file. A sample that does not convert (a
    /// corrupt AVCC length) is skipped.
    pub fn next_sample(&mut self) -> Result<Option<VideoSample>, DecodeError> {
        loop {
            let Some(packet) = next_packet(self.reader.as_mut())? else { return Ok(None) };
            if packet.track_id != self.track || packet.data.is_empty() {
                continue;
            }
            let (payload, keyframe) = match (&self.codec, &self.avc) {
                (Codec::H264, Some(config)) => match h264::avcc_to_annexb_frame(&packet.data, config) {
                    Ok(annexb) if !annexb.is_empty() => {
                        let keyframe = h264::is_keyframe(&annexb);
                        (annexb, keyframe)
                    }
                    _ => continue,
                },
                (Codec::Vp8, _) => (Bytes::from(packet.data.to_vec()), vp8_keyframe(&packet.data)),
                _ => (Bytes::from(packet.data.to_vec()), vp9_keyframe(&packet.data)),
            };
            let ticks = |ts: i64| self.ticks(ts);
            return Ok(Some(VideoSample {
                dts: ticks(packet.dts.get()),
                pts: ticks(packet.pts.get()),
                keyframe,
                payload,
            }));
        }
    }

    /// A timestamp of the track's time base in 90 kHz ticks (negative ones, from edit lists,
    /// count as zero).
    fn ticks(&self, ts: i64) -> u64 {
        let ts = u128::try_from(ts).unwrap_or(0);
        let (numer, denom) = (u128::from(self.time_base.numer.get()), u128::from(self.time_base.denom.get()));
        u64::try_from(ts * numer * u128::from(CLOCK) / denom).unwrap_or(u64::MAX)
    }
}

/// RFC 6386 §9.1: bit 0 of the frame tag is 0 for a key frame.
fn vp8_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

/// VP9 bitstream §6.2 (uncompressed header): frame_marker (2 bits, `10`), profile (2 bits, a
/// reserved zero bit after profile 3), show_existing_frame, then frame_type (0 = key frame).
fn vp9_keyframe(frame: &[u8]) -> bool {
    let Some(&byte) = frame.first() else { return false };
    let bit = |n: u32| (byte >> (7 - n)) & 1;
    if byte >> 6 != 0b10 {
        return false;
    }
    let profile = bit(2) | (bit(3) << 1);
    let mut at = 4;
    if profile == 3 {
        at += 1;
    }
    if bit(at) == 1 {
        return false; // show_existing_frame: a repeat of an earlier frame
    }
    bit(at + 1) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_bits() {
        assert!(vp8_keyframe(&[0x50, 0x2d, 0x01]) && !vp8_keyframe(&[0x51, 0x2d]));
        // Profile 0: 10 0 0 | show_existing 0 | frame_type 0 (key) / 1 (inter).
        assert!(vp9_keyframe(&[0b1000_0000]) && !vp9_keyframe(&[0b1000_0100]));
        assert!(!vp9_keyframe(&[0b1000_1000]), "show_existing_frame");
        // Profile 3 has a reserved bit before show_existing_frame.
        assert!(vp9_keyframe(&[0b1011_0000]) && !vp9_keyframe(&[0b1011_0010]));
        assert!(!vp9_keyframe(&[0x00]) && !vp9_keyframe(&[]));
    }
}
