//! One VP8, VP9 or Opus track of a `tracks` recording as WebM, sans I/O: frames in, the bytes of
//! its file out, with the same steps as [`super::track`]'s MP4 ([`Step`]). Written as a live
//! WebM: the Segment and each Cluster have the "unknown" size, so nothing is ever rewritten and
//! whatever a crash leaves on disk is whole SimpleBlocks a player reads (Chromium's
//! MediaRecorder writes WebM the same way). A cluster begins at each video keyframe, and every
//! 5 s of audio. A video file begins at a keyframe; VP8/VP9 carry a new picture size in their
//! keyframes, so a resolution change stays in one file. Timestamps are in ms from the file's
//! first frame.
//!
//! Written by hand: the Rust WebM muxers are bindings to libwebm, which owns the I/O and seeks
//! back to finish what it wrote; this writer only appends, a frame at a time, which is what a
//! crash-safe recording needs. It writes the few EBML elements a WebM file needs and nothing
//! else (no Cues, no SeekHead: players seek by scanning clusters).

use bytes::{BufMut, Bytes, BytesMut};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind};

use super::track::Step;

/// The codecs a track is recorded as WebM in.
pub const WEBM_CODECS: [Codec; 3] = [Codec::Vp8, Codec::Vp9, Codec::Opus];

/// Audio clusters span this long at most (ms); a SimpleBlock's offset is an i16 of ms.
const AUDIO_CLUSTER_MS: u64 = 5_000;
/// The Opus decoder delay written as the track's pre-skip (samples at 48 kHz), as in MP4.
const OPUS_PRE_SKIP: u16 = 312;
/// Ticks per second of a file's timeline (ms, the TimecodeScale written).
pub const TIMESCALE: u32 = 1000;
/// The track number of the one track in each file.
const TRACK: u8 = 1;

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const CODEC_DELAY: u32 = 0x56AA;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
}

/// The "unknown" size (all ones, 8 bytes): the element runs to the end of its parent.
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn put_id(out: &mut BytesMut, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.put_slice(&bytes[skip..]);
}

/// An EBML size in 8 bytes (simple and always big enough).
fn put_size(out: &mut BytesMut, size: usize) {
    out.put_u64((size as u64) | (1 << 56));
}

fn element(out: &mut BytesMut, id: u32, body: &[u8]) {
    put_id(out, id);
    put_size(out, body.len());
    out.put_slice(body);
}

fn uint(out: &mut BytesMut, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    element(out, id, &bytes[skip..]);
}

fn master(out: &mut BytesMut, id: u32, build: impl FnOnce(&mut BytesMut)) {
    let mut body = BytesMut::new();
    build(&mut body);
    element(out, id, &body);
}

/// The OpusHead a WebM Opus track carries as its CodecPrivate (RFC 7845 §5.1).
fn opus_head(channels: u8) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&OPUS_PRE_SKIP.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// The current file's timeline.
struct Timeline {
    first_ticks: u64,
    /// The current cluster's timecode (ms).
    cluster: Option<u64>,
}

pub struct WebmMuxer {
    codec: Codec,
    params: CodecParams,
    file: Option<Timeline>,
}

impl WebmMuxer {
    /// A track the engine delivers as `codec` (one of [`WEBM_CODECS`]) with `params`.
    pub fn new(codec: Codec, params: CodecParams) -> WebmMuxer {
        WebmMuxer { codec, params, file: None }
    }

    /// The RFC 6381 string of the file's codec.
    fn codec_string(&self) -> String {
        match self.codec {
            Codec::Vp9 => "vp09".into(),
            other => other.as_str().to_owned(),
        }
    }

    /// The file's header: EBML header, the Segment's start, Info and Tracks.
    fn header(&self, frame: &MediaFrame) -> Option<BytesMut> {
        let mut out = BytesMut::with_capacity(256);
        master(&mut out, id::EBML, |e| {
            uint(e, id::EBML_VERSION, 1);
            uint(e, id::EBML_READ_VERSION, 1);
            uint(e, id::EBML_MAX_ID_LENGTH, 4);
            uint(e, id::EBML_MAX_SIZE_LENGTH, 8);
            element(e, id::DOC_TYPE, b"webm");
            uint(e, id::DOC_TYPE_VERSION, 4);
            uint(e, id::DOC_TYPE_READ_VERSION, 2);
        });
        put_id(&mut out, id::SEGMENT);
        out.put_slice(&UNKNOWN_SIZE);
        master(&mut out, id::INFO, |info| {
            uint(info, id::TIMECODE_SCALE, 1_000_000_000 / u64::from(TIMESCALE));
            element(info, id::MUXING_APP, b"junction");
            element(info, id::WRITING_APP, b"junction");
        });
        let (codec_id, video) = match self.codec {
            Codec::Vp8 => ("V_VP8", true),
            Codec::Vp9 => ("V_VP9", true),
            Codec::Opus => ("A_OPUS", false),
            _ => return None,
        };
        let size = if video { Some(junction_cmaf::picture_size(self.codec, &frame.payload)?) } else { None };
        master(&mut out, id::TRACKS, |tracks| {
            master(tracks, id::TRACK_ENTRY, |entry| {
                uint(entry, id::TRACK_NUMBER, u64::from(TRACK));
                uint(entry, id::TRACK_UID, 1);
                uint(entry, id::TRACK_TYPE, if video { 1 } else { 2 });
                element(entry, id::CODEC_ID, codec_id.as_bytes());
                match size {
                    Some((width, height)) => master(entry, id::VIDEO, |v| {
                        uint(v, id::PIXEL_WIDTH, u64::from(width));
                        uint(v, id::PIXEL_HEIGHT, u64::from(height));
                    }),
                    None => {
                        let channels = self.params.channels.clamp(1, 2);
                        element(entry, id::CODEC_PRIVATE, &opus_head(channels));
                        uint(entry, id::CODEC_DELAY, u64::from(OPUS_PRE_SKIP) * 1_000_000_000 / 48_000);
                        uint(entry, id::SEEK_PRE_ROLL, 80_000_000);
                        master(entry, id::AUDIO, |a| {
                            element(a, id::SAMPLING_FREQUENCY, &48_000f64.to_be_bytes());
                            uint(a, id::CHANNELS, u64::from(channels));
                        });
                    }
                }
            });
        });
        Some(out)
    }

    /// Muxes one frame; `None` when it is dropped (video before a keyframe).
    pub fn push(&mut self, frame: &MediaFrame) -> Option<Step> {
        if frame.codec != self.codec {
            return None;
        }
        let video = self.codec.kind() == MediaKind::Video;
        let ticks = frame.time.ticks;
        let opening = self.file.is_none();
        let mut out = match self.file {
            Some(_) => BytesMut::with_capacity(frame.payload.len() + 32),
            None => {
                if video && !frame.keyframe {
                    return None;
                }
                let header = self.header(frame)?;
                self.file = Some(Timeline { first_ticks: ticks, cluster: None });
                header
            }
        };
        let file = self.file.as_mut()?;
        let rate = u64::from(frame.time.rate.max(1));
        let ms = ticks.saturating_sub(file.first_ticks) * u64::from(TIMESCALE) / rate;
        let new_cluster = match file.cluster {
            None => true,
            Some(start) => {
                let span = ms.saturating_sub(start);
                (video && frame.keyframe) || span >= AUDIO_CLUSTER_MS || span > i16::MAX as u64 || ms < start
            }
        };
        if new_cluster {
            put_id(&mut out, id::CLUSTER);
            out.put_slice(&UNKNOWN_SIZE);
            uint(&mut out, id::TIMECODE, ms);
            file.cluster = Some(ms);
        }
        let offset = ms.saturating_sub(file.cluster.unwrap_or(ms)) as i16;
        put_id(&mut out, id::SIMPLE_BLOCK);
        put_size(&mut out, frame.payload.len() + 4);
        out.put_u8(0x80 | TRACK);
        out.put_i16(offset);
        out.put_u8(if frame.keyframe { 0x80 } else { 0 });
        out.put_slice(&frame.payload);
        let bytes: Bytes = out.freeze();
        Some(if opening {
            Step::Open { bytes, captured: frame.captured, codec_string: self.codec_string() }
        } else {
            Step::Append(bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use junction_core::MediaTime;

    use super::*;

    fn vp8(ticks: u64, keyframe: bool, at: Instant) -> MediaFrame {
        let mut payload = vec![if keyframe { 0x10 } else { 0x11 }, 0x02, 0x00];
        if keyframe {
            payload.extend_from_slice(&[0x9d, 0x01, 0x2a]);
            payload.extend_from_slice(&320u16.to_le_bytes());
            payload.extend_from_slice(&180u16.to_le_bytes());
        }
        payload.extend_from_slice(&[7; 8]);
        MediaFrame::video(Codec::Vp8, MediaTime::new(ticks, 90_000), keyframe, at, Bytes::from(payload))
    }

    #[test]
    fn a_video_file_begins_at_a_keyframe_with_clusters_at_keyframes() {
        let t0 = Instant::now();
        let mut muxer = WebmMuxer::new(Codec::Vp8, CodecParams::for_codec(Codec::Vp8));
        assert!(muxer.push(&vp8(0, false, t0)).is_none(), "no file before a keyframe");
        let at = t0 + Duration::from_millis(30);
        let Some(Step::Open { bytes, captured, codec_string }) = muxer.push(&vp8(9_000, true, at)) else {
            panic!("a keyframe opens the file")
        };
        assert_eq!((captured, codec_string.as_str()), (at, "vp8"));
        assert_eq!(&bytes[..4], &[0x1A, 0x45, 0xDF, 0xA3], "EBML header");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("webm") && text.contains("V_VP8"), "{text}");
        let delta = muxer.push(&vp8(12_000, false, at)).unwrap();
        let delta = bytes_of(&delta);
        assert_eq!(delta[0], 0xA3, "a SimpleBlock in the open cluster");
        assert_eq!(i16::from_be_bytes([delta[10], delta[11]]), 33, "33 ms into the cluster");
        let key = muxer.push(&vp8(18_000, true, at)).unwrap();
        let key = bytes_of(&key);
        assert_eq!(&key[..4], &[0x1F, 0x43, 0xB6, 0x75], "a keyframe begins a cluster");
    }

    #[test]
    fn opus_carries_its_head_and_starts_a_cluster_every_five_seconds() {
        let t0 = Instant::now();
        let mut muxer = WebmMuxer::new(Codec::Opus, CodecParams::for_codec(Codec::Opus));
        let frame = |n: u64| {
            MediaFrame::audio(Codec::Opus, MediaTime::new(n * 960, 48_000), t0, Bytes::from_static(&[0xfc, 1]))
        };
        let Some(Step::Open { bytes, codec_string, .. }) = muxer.push(&frame(0)) else { panic!("audio opens at once") };
        assert_eq!(codec_string, "opus");
        assert!(bytes.windows(8).any(|w| w == b"OpusHead"));
        let clusters: Vec<u64> = (1..500u64)
            .filter(|n| {
                muxer.push(&frame(*n)).is_some_and(|step| bytes_of(&step).starts_with(&[0x1F, 0x43, 0xB6, 0x75]))
            })
            .collect();
        assert_eq!(clusters, [250], "in 10 s of audio, a new cluster at 5 s");
    }

    fn bytes_of(step: &Step) -> &[u8] {
        match step {
            Step::Open { bytes, .. } | Step::Append(bytes) => bytes,
        }
    }
}
