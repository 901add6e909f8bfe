//! One peer's video (H.264) and audio (AAC) as an LL-HLS stream, sans I/O: frames in, init
//! segments, partial segments and segments out ([`Media`]). Both tracks go in one fMP4 stream
//! (track 1 video, track 2 audio), a fragment per frame; a part closes once it holds its target
//! duration, a segment at the first video keyframe past its target (or at the target duration
//! without one). Tracks share one timeline: each frame is placed by its capture instant, so
//! sound stays on its picture. A new track set or decoder configuration begins a new init
//! segment after a discontinuity.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use junction_cmaf::{InitTrack, build_init, video_config};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, TrackId};

use super::playlist::{Media, Part, Timing};
use crate::timeline::PlacedTrack;
use crate::wall_clock::WallClock;

const VIDEO_ID: u32 = 1;
const AUDIO_ID: u32 = 2;

struct Track {
    engine: TrackId,
    placed: PlacedTrack,
    /// In the init segment in force (frames of a track that is not wait for the next one).
    in_init: bool,
}

impl Track {
    fn new(engine: TrackId, codec: Codec, params: CodecParams) -> Track {
        Track { engine, placed: PlacedTrack::new(codec, params), in_init: false }
    }
}

pub struct HlsMuxer {
    created: Instant,
    clock: WallClock,
    video: Option<Track>,
    audio: Option<Track>,
    /// The init segment version in force, and whether the tracks changed since it was made.
    init: Option<u32>,
    next_init: u32,
    stale_init: bool,
    sequence: u32,
    /// The part being filled: its fragments, start on the timeline (s), and independence.
    part: BytesMut,
    part_start: Option<f64>,
    part_independent: bool,
    segment_start: f64,
    /// The latest sample's time on the timeline (s).
    last_seconds: f64,
    pub media: Media,
}

impl HlsMuxer {
    pub fn new(timing: Timing, now: Instant) -> HlsMuxer {
        HlsMuxer {
            created: now,
            clock: WallClock::now(),
            video: None,
            audio: None,
            init: None,
            next_init: 0,
            stale_init: true,
            sequence: 0,
            part: BytesMut::new(),
            part_start: None,
            part_independent: false,
            segment_start: 0.0,
            last_seconds: 0.0,
            media: Media::new(timing),
        }
    }

    /// Takes `engine` as the stream's track of its kind (replacing the one before).
    pub fn set_track(&mut self, engine: TrackId, codec: Codec, params: CodecParams) {
        let track = Some(Track::new(engine, codec, params));
        match codec.kind() {
            MediaKind::Video => self.video = track,
            MediaKind::Audio => self.audio = track,
        }
        self.stale_init = true;
    }

    pub fn remove_track(&mut self, engine: &TrackId) {
        if self.video.as_ref().is_some_and(|t| &t.engine == engine) {
            self.video = None;
            self.stale_init = true;
        }
        if self.audio.as_ref().is_some_and(|t| &t.engine == engine) {
            self.audio = None;
            self.stale_init = true;
        }
    }

    /// Muxes one frame of `engine`; true when a part (or segment) was published.
    pub fn push(&mut self, engine: &TrackId, frame: &MediaFrame) -> bool {
        let is_video = self.video.as_ref().is_some_and(|t| &t.engine == engine);
        let is_audio = !is_video && self.audio.as_ref().is_some_and(|t| &t.engine == engine);
        if !is_video && !is_audio {
            return false;
        }
        if is_video
            && frame.keyframe
            && let Some(track) = self.video.as_mut()
            && let Some(config) = video_config(track.placed.codec, &frame.payload, &track.placed.params)
            && track.placed.config.as_ref() != Some(&config)
        {
            track.placed.config = Some(config);
            self.stale_init = true;
        }
        let (dts, pts, seconds) = {
            let created = self.created;
            let Some(track) = (if is_video { self.video.as_mut() } else { self.audio.as_mut() }) else { return false };
            if track.placed.config.is_none() {
                return false;
            }
            let (dts, pts) = track.placed.place(frame, created);
            (dts, pts, pts as f64 / f64::from(track.placed.timescale))
        };
        self.last_seconds = self.last_seconds.max(seconds);
        let video_present = self.video.is_some();
        // A segment begins at a video keyframe (at the start, once its target duration is
        // reached, or when the init segment must change); without video, on audio by time.
        let starts_segment = if is_video || !video_present { frame.keyframe || !is_video } else { false };
        let open = self.init.is_some() && self.part_start.is_some();
        let elapsed = seconds - self.segment_start;
        let timing = self.media.timing;
        let ready = self.video.as_ref().is_none_or(|t| t.placed.config.is_some())
            && self.audio.as_ref().is_none_or(|t| t.placed.config.is_some());
        let new_segment = if !open || self.stale_init {
            starts_segment && ready
        } else {
            (starts_segment && elapsed >= timing.segment) || elapsed >= timing.target() as f64
        };
        let mut published = false;
        if new_segment {
            published |= self.close_part(seconds);
            let discontinuity = self.stale_init && self.init.is_some();
            if self.stale_init {
                let Some(init) = self.build_init() else { return published };
                let version = self.next_init;
                self.next_init += 1;
                self.media.inits.push((version, init));
                self.init = Some(version);
                self.stale_init = false;
                for track in [self.video.as_mut(), self.audio.as_mut()].into_iter().flatten() {
                    track.in_init = true;
                }
            }
            let start = self.clock.unix_ms(frame.captured);
            self.media.begin_segment(self.init.unwrap_or(0), discontinuity, start);
            self.segment_start = seconds;
            self.part_start = Some(seconds);
            self.part_independent = frame.keyframe || !video_present;
        } else if !open {
            return published;
        } else if self.part_start.is_some_and(|start| seconds - start >= timing.part) {
            published |= self.close_part(seconds);
            self.part_start = Some(seconds);
            self.part_independent = is_video && frame.keyframe || !video_present;
        }
        self.append(is_video, frame, dts, pts);
        published
    }

    /// Ends the stream (the last part published, `EXT-X-ENDLIST`).
    pub fn finish(&mut self) {
        self.close_part(self.last_seconds);
        if let Some(current) = self.media.segments.back_mut() {
            current.complete = true;
        }
        self.media.ended = true;
    }

    fn close_part(&mut self, until: f64) -> bool {
        let Some(start) = self.part_start.take() else { return false };
        if self.part.is_empty() {
            return false;
        }
        let data = std::mem::take(&mut self.part).freeze();
        let duration = (until - start).max(0.001);
        self.media.push_part(Part { data, duration, independent: self.part_independent });
        true
    }

    fn build_init(&self) -> Option<Bytes> {
        let tracks: Vec<InitTrack> = [(VIDEO_ID, &self.video), (AUDIO_ID, &self.audio)]
            .into_iter()
            .filter_map(|(id, track)| track.as_ref()?.placed.init_track(id))
            .collect();
        if tracks.is_empty() {
            return None;
        }
        build_init(&tracks).ok()
    }

    fn append(&mut self, is_video: bool, frame: &MediaFrame, dts: u64, pts: u64) {
        let Some(track) = (if is_video { self.video.as_ref() } else { self.audio.as_ref() }) else { return };
        if !track.in_init {
            return;
        }
        self.sequence = self.sequence.wrapping_add(1);
        let id = if is_video { VIDEO_ID } else { AUDIO_ID };
        if let Ok((header, payload)) = track.placed.fragment(id, self.sequence, frame, (dts, pts)) {
            self.part.extend_from_slice(&header);
            self.part.extend_from_slice(&payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use junction_core::MediaTime;
    use junction_core::h264;

    use super::*;

    use junction_cmaf::fixtures::{PPS, SPS};

    #[test]
    fn frames_make_parts_and_segments_at_keyframes_past_the_target() {
        let t0 = Instant::now();
        let timing = Timing { segment: 1.0, part: 0.25, window: 3 };
        let mut muxer = HlsMuxer::new(timing, t0);
        let (video, audio) = (TrackId::generate(), TrackId::generate());
        muxer.set_track(video.clone(), Codec::H264, CodecParams::for_codec(Codec::H264));
        let mut aac = CodecParams::for_codec(Codec::Aac);
        aac.clock_rate = 48_000;
        aac.channels = 2;
        muxer.set_track(audio.clone(), Codec::Aac, aac);
        // 3 s of 30 fps video with a keyframe every 0.5 s, and AAC frames between.
        let mut audio_ticks = 0u64;
        for i in 0..90u64 {
            let at = t0 + Duration::from_millis(i * 1000 / 30);
            let keyframe = i % 15 == 0;
            let payload = if keyframe {
                h264::to_annexb([SPS, PPS, &[0x65, 0x88][..]])
            } else {
                h264::to_annexb([&[0x41, 0x9a][..]])
            };
            let mut frame = MediaFrame::video(Codec::H264, MediaTime::new(i * 3000, 90_000), keyframe, at, payload);
            frame.captured = at;
            muxer.push(&video, &frame);
            while audio_ticks * 1000 / 48_000 <= i * 1000 / 30 {
                let at = t0 + Duration::from_millis(audio_ticks * 1000 / 48_000);
                let frame =
                    MediaFrame::audio(Codec::Aac, MediaTime::new(audio_ticks, 48_000), at, Bytes::from_static(&[1, 2]));
                muxer.push(&audio, &frame);
                audio_ticks += 1024;
            }
        }
        let media = &muxer.media;
        assert_eq!(media.inits.len(), 1);
        let complete: Vec<_> = media.segments.iter().filter(|s| s.complete).collect();
        assert_eq!(
            complete.len(),
            2,
            "segments of 1 s each: {:?}",
            media.segments.iter().map(|s| s.duration()).collect::<Vec<_>>()
        );
        for segment in &complete {
            assert!((segment.duration() - 1.0).abs() < 0.05, "{}", segment.duration());
            assert!(segment.parts[0].independent, "a segment starts at a keyframe");
            assert_eq!(segment.parts.len(), 4, "parts of 0.25 s");
        }
        let playlist = media.playlist("");
        assert!(playlist.contains("#EXT-X-PRELOAD-HINT"), "{playlist}");
        // Each part holds whole fragments of both tracks.
        let part = &complete[0].parts[0].data;
        assert_eq!(&part[4..8], b"moof");
    }

    #[test]
    fn audio_alone_is_segmented_by_time() {
        let t0 = Instant::now();
        let mut muxer = HlsMuxer::new(Timing { segment: 1.0, part: 0.5, window: 3 }, t0);
        let audio = TrackId::generate();
        muxer.set_track(audio.clone(), Codec::Aac, CodecParams::for_codec(Codec::Aac));
        for n in 0..150u64 {
            let frame = MediaFrame::audio(Codec::Aac, MediaTime::new(n * 1024, 48_000), t0, Bytes::from_static(&[1]));
            muxer.push(&audio, &frame);
        }
        assert!(muxer.media.segments.iter().filter(|s| s.complete).count() >= 2);
        assert!(muxer.media.segments.iter().flat_map(|s| &s.parts).all(|p| p.independent));
    }
}
