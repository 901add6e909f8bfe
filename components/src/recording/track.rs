//! One track of a `tracks` recording as fragmented MP4, sans I/O: frames in, the bytes of its
//! file out — an init segment when a file begins, then one fragment (moof + mdat) per frame, so
//! whatever a crash leaves on disk is whole fragments a player reads. A video file begins at a
//! keyframe. A new H.264 decoder configuration (a new SPS: the init segment's `avcC` would no
//! longer describe the stream) begins a new file; VP8, VP9 and AV1 carry a new picture size in
//! the keyframe itself, so a browser ramping its resolution up stays in one file. Each file's
//! timeline starts at zero; [`Step::Open`] says when its first sample was captured, which the
//! manifest turns into wall-clock time so files line up.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use junction_cmaf::{CmafError, build_init, video_config};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind};

use crate::timeline::PlacedTrack;

/// The MP4 track id of the one track in each file.
const TRACK_ID: u32 = 1;

/// What a frame does to the track's files.
#[derive(Debug)]
pub enum Step {
    /// Close the current file (if any) and begin a new one with `bytes` (init segment and the
    /// first fragment); its first sample was captured at `captured`.
    Open { bytes: Bytes, captured: Instant, codec_string: String },
    /// Append a fragment to the current file.
    Append(Bytes),
}

pub struct TrackMuxer {
    track: PlacedTrack,
    /// The current file: when its first sample was captured (its time zero), and its
    /// fragments so far.
    file: Option<(Instant, u32)>,
}

impl TrackMuxer {
    /// A track the engine delivers as `codec` with `params` (one of the codecs CMAF carries).
    pub fn new(codec: Codec, params: CodecParams) -> TrackMuxer {
        TrackMuxer { track: PlacedTrack::new(codec, params), file: None }
    }

    /// Muxes one frame; `None` when it is dropped (video before a keyframe, or before the
    /// track's decoder configuration is known).
    pub fn push(&mut self, frame: &MediaFrame) -> Result<Option<Step>, CmafError> {
        let track = &mut self.track;
        if frame.codec != track.codec {
            return Ok(None);
        }
        let video = track.codec.kind() == MediaKind::Video;
        if video
            && frame.keyframe
            && let Some(config) = video_config(track.codec, &frame.payload, &track.params)
            && track.config.as_ref() != Some(&config)
        {
            // The first configuration opens the file; after that only H.264's needs a new one.
            if track.config.is_none() || track.codec == Codec::H264 {
                track.config = Some(config);
                self.file = None;
            }
        }
        let init = match self.file {
            Some(_) => None,
            None => {
                if video && !frame.keyframe {
                    return Ok(None);
                }
                let Some(init) = track.init_track(TRACK_ID) else { return Ok(None) };
                track.restart();
                self.file = Some((frame.captured, 0));
                Some((build_init(std::slice::from_ref(&init))?, init.codec.codec_string()))
            }
        };
        let Some((opened, sequence)) = self.file.as_mut() else { return Ok(None) };
        *sequence = sequence.wrapping_add(1);
        let placed = track.place(frame, *opened);
        let (header, payload) = track.fragment(TRACK_ID, *sequence, frame, placed)?;
        Ok(Some(Step::new(init, &header, &payload, frame.captured)))
    }
}

impl Step {
    /// A fragment (`header` + `payload`) as the step it is: after `init` (the init segment and
    /// the codec string) it opens a file whose first sample was captured at `captured`.
    pub fn new(init: Option<(Bytes, String)>, header: &[u8], payload: &[u8], captured: Instant) -> Step {
        let init_len = init.as_ref().map_or(0, |(init, _)| init.len());
        let mut bytes = BytesMut::with_capacity(init_len + header.len() + payload.len());
        if let Some((init, _)) = &init {
            bytes.extend_from_slice(init);
        }
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(payload);
        let bytes = bytes.freeze();
        match init {
            Some((_, codec_string)) => Step::Open { bytes, captured, codec_string },
            None => Step::Append(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use junction_cmaf::{ParsedTrack, parse_fragment, parse_init};
    use junction_core::MediaTime;
    use junction_core::h264;

    use super::*;

    use junction_cmaf::fixtures::{PPS, h264_frame as video};

    /// Splits a file's bytes into its top-level boxes.
    fn boxes(mut data: &[u8]) -> Vec<(String, &[u8])> {
        let mut out = Vec::new();
        while data.len() >= 8 {
            let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&data[4..8]).into_owned(), &data[..size]));
            data = &data[size..];
        }
        out
    }

    #[test]
    fn a_video_file_begins_at_a_keyframe_and_counts_time_from_it() {
        let t0 = Instant::now();
        let mut muxer = TrackMuxer::new(Codec::H264, CodecParams::for_codec(Codec::H264));
        assert!(muxer.push(&video(1_000, false, t0)).unwrap().is_none(), "no file before a keyframe");
        let captured = t0 + Duration::from_millis(40);
        let Some(Step::Open { bytes: first, captured: at, codec_string }) =
            muxer.push(&video(4_000, true, captured)).unwrap()
        else {
            panic!("a keyframe opens the file")
        };
        assert_eq!((at, codec_string.as_str()), (captured, "avc1.f4000d"));
        let Some(Step::Append(second)) = muxer.push(&video(7_000, false, captured)).unwrap() else { panic!() };
        let Some(Step::Append(b_frame)) = muxer.push(&video(5_500, false, captured)).unwrap() else { panic!() };

        let file: Vec<u8> = [first, second, b_frame].concat();
        let top = boxes(&file);
        let names: Vec<&str> = top.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["ftyp", "moov", "moof", "mdat", "moof", "mdat", "moof", "mdat"]);
        let init = [top[0].1, top[1].1].concat();
        let tracks = parse_init(&init).unwrap();
        let ParsedTrack::Supported(track) = &tracks[0] else { panic!("{tracks:?}") };
        let samples: Vec<_> = (0..3)
            .map(|i| {
                let fragment = Bytes::from([top[2 + 2 * i].1, top[3 + 2 * i].1].concat());
                parse_fragment(&fragment, track, 1 << 20).unwrap().remove(0)
            })
            .collect();
        let pts: Vec<i64> = samples.iter().map(|s| s.decode_time as i64 + s.composition_offset).collect();
        assert_eq!(pts, [0, 3_000, 1_500], "presentation times from the first keyframe (B-frame kept)");
        assert!(samples[0].keyframe && !samples[1].keyframe);
        assert_eq!(h264::avcc_nals(&samples[1].data, 4).unwrap().len(), 1, "length-prefixed samples");
    }

    #[test]
    fn a_new_resolution_begins_a_new_file_and_audio_needs_no_keyframe() {
        let t0 = Instant::now();
        let mut muxer = TrackMuxer::new(Codec::H264, CodecParams::for_codec(Codec::H264));
        assert!(matches!(muxer.push(&video(0, true, t0)).unwrap(), Some(Step::Open { .. })));
        assert!(matches!(muxer.push(&video(3_000, true, t0)).unwrap(), Some(Step::Append(_))), "same SPS");
        let mut wider = video(6_000, true, t0);
        let sps_640 = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x3d, 0xa1, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00];
        wider.payload = h264::to_annexb([&sps_640[..], PPS, &[0x65, 0x88][..]]);
        assert!(matches!(muxer.push(&wider).unwrap(), Some(Step::Open { .. })), "a new SPS: a new file");

        // VP8 says its size in each keyframe: a browser ramping 320x180 -> 640x360 stays in one file.
        let vp8_key = |width: u16, height: u16| {
            let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            frame.extend_from_slice(&width.to_le_bytes());
            frame.extend_from_slice(&height.to_le_bytes());
            frame.extend_from_slice(&[0; 8]);
            MediaFrame::video(Codec::Vp8, MediaTime::new(0, 90_000), true, t0, Bytes::from(frame))
        };
        let mut vp8 = TrackMuxer::new(Codec::Vp8, CodecParams::for_codec(Codec::Vp8));
        assert!(matches!(vp8.push(&vp8_key(320, 180)).unwrap(), Some(Step::Open { .. })));
        assert!(matches!(vp8.push(&vp8_key(640, 360)).unwrap(), Some(Step::Append(_))), "in-band size change");

        let mut opus = TrackMuxer::new(Codec::Opus, CodecParams::for_codec(Codec::Opus));
        let frame = MediaFrame::audio(Codec::Opus, MediaTime::new(960, 48_000), t0, Bytes::from_static(&[0xfc, 1]));
        let Some(Step::Open { codec_string, .. }) = opus.push(&frame).unwrap() else { panic!("audio opens at once") };
        assert_eq!(codec_string, "opus");
    }
}
