//! A `grid` recording's file, sans I/O: the composed picture (H.264, track 1) and the room's mix
//! (AAC, track 2) in one fragmented MP4, a fragment per frame as in [`super::track`], so a crash
//! leaves a file that plays up to its last frame. The file begins at the first video keyframe;
//! both tracks are placed on one timeline by capture instant, so the sound stays on its picture.

use std::time::Instant;

use junction_cmaf::{CmafError, InitTrack, build_init, video_config};
use junction_core::{Codec, CodecParams, MediaFrame};

use super::track::Step;
use crate::timeline::PlacedTrack;

const VIDEO_ID: u32 = 1;
const AUDIO_ID: u32 = 2;

pub struct ComposedMuxer {
    video: PlacedTrack,
    audio: PlacedTrack,
    /// When the file's time zero was captured, once it is open.
    opened: Option<Instant>,
    sequence: u32,
}

impl ComposedMuxer {
    pub fn new(video: CodecParams, audio: CodecParams) -> ComposedMuxer {
        ComposedMuxer {
            video: PlacedTrack::new(Codec::H264, video),
            audio: PlacedTrack::new(Codec::Aac, audio),
            opened: None,
            sequence: 0,
        }
    }

    /// Muxes one frame (H.264 or AAC); `None` when it is dropped (before the first keyframe).
    pub fn push(&mut self, frame: &MediaFrame) -> Result<Option<Step>, CmafError> {
        let is_video = match frame.codec {
            Codec::H264 => true,
            Codec::Aac => false,
            _ => return Ok(None),
        };
        let mut init = None;
        if self.opened.is_none() {
            if !is_video || !frame.keyframe {
                return Ok(None);
            }
            let Some(config) = video_config(Codec::H264, &frame.payload, &self.video.params) else { return Ok(None) };
            self.video.config = Some(config);
            let tracks: Vec<InitTrack> =
                [self.video.init_track(VIDEO_ID), self.audio.init_track(AUDIO_ID)].into_iter().flatten().collect();
            let codec_string = tracks.iter().map(|t| t.codec.codec_string()).collect::<Vec<_>>().join(",");
            init = Some((build_init(&tracks)?, codec_string));
            self.opened = Some(frame.captured);
        }
        let Some(opened) = self.opened else { return Ok(None) };
        let (track, id) = if is_video { (&mut self.video, VIDEO_ID) } else { (&mut self.audio, AUDIO_ID) };
        let placed = track.place(frame, opened);
        self.sequence = self.sequence.wrapping_add(1);
        let (header, payload) = track.fragment(id, self.sequence, frame, placed)?;
        Ok(Some(Step::new(init, &header, &payload, opened)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use junction_cmaf::fixtures::h264_frame;
    use junction_cmaf::{ParsedTrack, parse_init};
    use junction_core::MediaTime;

    use super::*;

    #[test]
    fn one_file_holds_both_tracks_from_the_first_keyframe() {
        let t0 = Instant::now();
        let mut aac = CodecParams::for_codec(Codec::Aac);
        (aac.clock_rate, aac.channels) = (48_000, 1);
        let mut muxer = ComposedMuxer::new(CodecParams::for_codec(Codec::H264), aac);
        let sound = |ticks: u64, at: Instant| {
            MediaFrame::audio(Codec::Aac, MediaTime::new(ticks, 48_000), at, Bytes::from_static(&[1, 2]))
        };
        assert!(muxer.push(&sound(0, t0)).unwrap().is_none(), "nothing before a picture");
        assert!(muxer.push(&h264_frame(0, false, t0)).unwrap().is_none(), "nor before a keyframe");
        let at = t0 + Duration::from_millis(100);
        let Some(Step::Open { bytes, captured, codec_string }) = muxer.push(&h264_frame(9_000, true, at)).unwrap()
        else {
            panic!("a keyframe opens the file")
        };
        assert_eq!((captured, codec_string.as_str()), (at, "avc1.f4000d,mp4a.40.2"));
        let moov = bytes.windows(4).position(|w| w == b"moof").unwrap();
        let tracks = parse_init(&bytes[..moov - 4]).unwrap();
        assert_eq!(tracks.len(), 2);
        assert!(tracks.iter().all(|t| matches!(t, ParsedTrack::Supported(_))), "{tracks:?}");
        let later = at + Duration::from_millis(20);
        assert!(matches!(muxer.push(&sound(4_800, later)).unwrap(), Some(Step::Append(_))));
        assert!(matches!(muxer.push(&h264_frame(12_000, false, later)).unwrap(), Some(Step::Append(_))));
    }
}
