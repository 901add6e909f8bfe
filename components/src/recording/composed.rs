//! A `grid` recording's file, sans I/O: the composed picture (H.264, track 1) and the room's mix
//! (AAC, track 2) in one fragmented MP4, a fragment per frame as in [`super::track`], so a crash
//! leaves a file that plays up to its last frame. The file begins at the first video keyframe;
//! both tracks are placed on one timeline by capture instant, so the sound stays on its picture.

use std::time::Instant;

use bytes::BytesMut;
use junction_cmaf::{
    CmafError, DecodeTimes, FragmentSample, InitTrack, SampleDefaults, TrackCodec, build_init, fragment_header,
    initial_config, nominal_duration, sample_payload, timescale, video_config,
};
use junction_core::{Codec, CodecParams, MediaFrame};

use super::track::Step;

const VIDEO_ID: u32 = 1;
const AUDIO_ID: u32 = 2;

/// One track of the file.
struct Lane {
    codec: Codec,
    params: CodecParams,
    timescale: u32,
    config: Option<TrackCodec>,
    /// (first frame's ticks, its place on the file's timeline in this track's ticks).
    anchor: Option<(u64, u64)>,
    decode: DecodeTimes,
}

impl Lane {
    fn new(codec: Codec, params: CodecParams) -> Lane {
        let timescale = timescale(codec, &params);
        let decode = DecodeTimes::new(nominal_duration(codec, timescale));
        Lane { codec, config: initial_config(codec, &params), params, timescale, anchor: None, decode }
    }

    fn init_track(&self, id: u32) -> Option<InitTrack> {
        Some(InitTrack {
            id,
            timescale: self.timescale,
            codec: self.config.clone()?,
            defaults: SampleDefaults::default(),
        })
    }
}

pub struct ComposedMuxer {
    video: Lane,
    audio: Lane,
    /// When the file's time zero was captured, once it is open.
    opened: Option<Instant>,
    sequence: u32,
}

impl ComposedMuxer {
    pub fn new(video: CodecParams, audio: CodecParams) -> ComposedMuxer {
        ComposedMuxer {
            video: Lane::new(Codec::H264, video),
            audio: Lane::new(Codec::Aac, audio),
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
        let lane = if is_video { &mut self.video } else { &mut self.audio };
        let ticks = frame.time.rebase(lane.timescale).ticks;
        let scale = u64::from(lane.timescale);
        let (first, base) = *lane.anchor.get_or_insert_with(|| {
            let since = frame.captured.saturating_duration_since(opened);
            (ticks, (since.as_micros() as u64).saturating_mul(scale) / 1_000_000)
        });
        let pts = base.saturating_add(ticks.saturating_sub(first));
        let dts = lane.decode.next(pts);
        self.sequence = self.sequence.wrapping_add(1);
        let payload = sample_payload(lane.codec, frame.payload.clone());
        let sample = FragmentSample::presented(dts, pts, lane.decode.duration(), frame.keyframe);
        let header = fragment_header(if is_video { VIDEO_ID } else { AUDIO_ID }, self.sequence, sample, payload.len())?;
        let init_len = init.as_ref().map_or(0, |(init, _)| init.len());
        let mut bytes = BytesMut::with_capacity(init_len + header.len() + payload.len());
        if let Some((init, _)) = &init {
            bytes.extend_from_slice(init);
        }
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&payload);
        let bytes = bytes.freeze();
        Ok(Some(match init {
            Some((_, codec_string)) => Step::Open { bytes, captured: opened, codec_string },
            None => Step::Append(bytes),
        }))
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
