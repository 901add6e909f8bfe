//! A peer's H.264 and AAC frames turned into the FLV tags an RTMP player receives: an AVC
//! sequence header built from the SPS/PPS in front of the first IDR (sent again whenever they
//! change), video starting at a keyframe, an AAC sequence header from the track's
//! AudioSpecificConfig, then AVCC and raw AAC tags.
//!
//! While a video track is set but has not reached its first keyframe, audio is dropped (for at
//! most [`AUDIO_HOLD_MAX`]): a player's stream then opens with video, and players that size up
//! the stream from its first tags (ffmpeg's FLV demuxer) see both tracks. Before anything was
//! sent, audio also waits [`AUDIO_ALONE_WAIT`] for a video track to be set: a browser publishes
//! its microphone a moment before its camera, and a stream opened with audio alone would have
//! ffmpeg ignore the video that follows.
//!
//! Time: tracks of one peer may come from different clocks (RTP tracks of a browser start at
//! random timestamps), so by default each track is anchored where its first frame arrived on the
//! player's timeline and advances by its own media time from there. When the caller knows the
//! tracks share one clock ([`Muxer::set_shared_clock`]: an RTMP publisher's audio and video come
//! from one FLV timeline, an SRT publisher's from one transport stream), one anchor serves both and lip-sync is exact — arrival anchoring would
//! shift B-frame video by its first composition offset. A track that is published again (the
//! publisher reconnected) is anchored afresh and the player's timeline simply continues.
//!
//! FLV timestamps are decode times, but Junction frames carry presentation times in decode order.
//! Every tag is therefore presented [`PRESENTATION_DELAY_MS`] after its place on the timeline,
//! and a video frame's decode time is the latest presentation time seen so far (plus 1 ms per
//! frame, so decode times strictly increase): with B-frames reordered by up to that delay, every
//! frame has decode time <= presentation time, which players and muxers require.

use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::h264::{self, AvcConfig};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind};

use junction_core::aac::{self, AacConfig};

use crate::flv;

/// How long after its decode time a frame is presented, in ms: room for B-frame reordering.
pub const PRESENTATION_DELAY_MS: i64 = 200;
/// Longest time audio is held back waiting for the video track's first keyframe.
pub const AUDIO_HOLD_MAX: Duration = Duration::from_secs(5);
/// How long a stream that has sent nothing yet holds audio back in case a video track follows.
pub const AUDIO_ALONE_WAIT: Duration = Duration::from_secs(1);

/// One tag for the player.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    pub kind: MediaKind,
    /// Decode time in ms on the player's timeline (RTMP timestamps wrap at 2^32).
    pub timestamp: u32,
    pub data: Bytes,
}

/// Where a track sits on the player's timeline.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    /// The player's time (ms) of the track's first frame.
    at_ms: i64,
    /// That frame's media time, in µs.
    first_us: i64,
}

impl Anchor {
    fn place(&self, frame: &MediaFrame) -> i64 {
        self.at_ms + (frame.time.as_micros() as i64 - self.first_us) / 1000
    }
}

#[derive(Default)]
struct VideoOut {
    /// The track's avcC, used when a keyframe comes without SPS/PPS in front of it.
    configured: Option<AvcConfig>,
    /// The configuration the player last got a sequence header for.
    sent: Option<AvcConfig>,
    anchor: Option<Anchor>,
}

struct AudioOut {
    config: Bytes,
    header_sent: bool,
    anchor: Option<Anchor>,
}

/// The FLV side of one RTMP player.
#[derive(Default)]
pub struct Muxer {
    /// Arrival of the first frame sent: time zero of the player's timeline.
    origin: Option<Instant>,
    video: Option<VideoOut>,
    audio: Option<AudioOut>,
    last_video_dts: Option<i64>,
    last_audio_ts: Option<i64>,
    /// Arrival of the first audio frame held back for video.
    audio_held_since: Option<Instant>,
    /// Whether the tracks' media times are on one clock, and that clock's anchor once known.
    shared_clock: bool,
    shared_anchor: Option<Anchor>,
}

impl Muxer {
    /// A new H.264 track to play (replacing any previous one): video restarts at its next
    /// keyframe, behind a fresh sequence header.
    pub fn set_video(&mut self, params: &CodecParams) {
        let configured = params.config.as_deref().and_then(|record| AvcConfig::parse(record).ok());
        self.video = Some(VideoOut { configured, ..VideoOut::default() });
        self.audio_held_since = None;
    }

    /// A new AAC track to play (replacing any previous one).
    pub fn set_audio(&mut self, params: &CodecParams) {
        let config = match &params.config {
            Some(config) if AacConfig::parse(config).is_ok() => config.clone(),
            _ => aac::lc_config(params.clock_rate, params.channels),
        };
        self.audio = Some(AudioOut { config, header_sent: false, anchor: None });
    }

    /// Says whether the tracks to come share one media clock; forgets the previous publisher's
    /// anchor either way (call it when the played peer (re)joins).
    pub fn set_shared_clock(&mut self, shared: bool) {
        self.shared_clock = shared;
        self.shared_anchor = None;
    }

    /// The track of `kind` went away; nothing of that kind is sent until another is set.
    pub fn clear(&mut self, kind: MediaKind) {
        match kind {
            MediaKind::Video => self.video = None,
            MediaKind::Audio => self.audio = None,
        }
    }

    /// Turns one frame into zero or more tags.
    pub fn push(&mut self, frame: &MediaFrame, out: &mut Vec<FlvTag>) {
        match frame.codec {
            Codec::H264 => self.push_video(frame, out),
            Codec::Aac => self.push_audio(frame, out),
            _ => {}
        }
    }

    /// Where a track whose first frame is `frame` starts on the player's timeline.
    fn anchor(&mut self, frame: &MediaFrame) -> Anchor {
        if self.shared_clock
            && let Some(shared) = self.shared_anchor
        {
            return shared;
        }
        let origin = *self.origin.get_or_insert(frame.arrival);
        let at_ms = frame.arrival.saturating_duration_since(origin).as_millis() as i64;
        let anchor = Anchor { at_ms, first_us: frame.time.as_micros() as i64 };
        if self.shared_clock {
            self.shared_anchor = Some(anchor);
        }
        anchor
    }

    fn push_video(&mut self, frame: &MediaFrame, out: &mut Vec<FlvTag>) {
        let Some(video) = &self.video else { return };
        if video.anchor.is_none() && !frame.keyframe {
            return; // a player can only start decoding at a keyframe
        }
        let mut new_config = None;
        if frame.keyframe {
            let in_band = match h264::parameter_sets(&frame.payload) {
                (Some(sps), Some(pps)) => AvcConfig::from_parameter_sets(sps, pps),
                _ => None,
            };
            let config = in_band.or_else(|| video.configured.clone());
            if config.is_some() && config != video.sent {
                new_config = config;
            }
        }
        if video.sent.is_none() && new_config.is_none() {
            return; // nothing yet tells the player how to decode
        }
        let anchor = match video.anchor {
            Some(anchor) => anchor,
            None => self.anchor(frame),
        };
        let presented = anchor.place(frame);
        let dts = match self.last_video_dts {
            Some(last) => presented.max(last + 1),
            None => presented.max(0),
        };
        let pts = (presented + PRESENTATION_DELAY_MS).max(dts);
        self.last_video_dts = Some(dts);
        let Some(video) = &mut self.video else { return };
        video.anchor = Some(anchor);
        let timestamp = dts as u64 as u32;
        if let Some(config) = new_config {
            let record = config.to_bytes();
            out.push(FlvTag { kind: MediaKind::Video, timestamp, data: flv::avc_sequence_header(&record) });
            video.sent = Some(config);
        }
        let nals = h264::annexb_nals(&frame.payload).filter(|nal| h264::nal_type(nal) != h264::NAL_AUD);
        let avcc = h264::to_avcc(nals);
        let composition = (pts - dts) as i32;
        out.push(FlvTag {
            kind: MediaKind::Video,
            timestamp,
            data: flv::avc_nalus(frame.keyframe, composition, &avcc),
        });
    }

    fn push_audio(&mut self, frame: &MediaFrame, out: &mut Vec<FlvTag>) {
        let Some(audio) = &self.audio else { return };
        if frame.payload.is_empty() {
            return;
        }
        let hold = match &self.video {
            Some(video) if video.anchor.is_none() => Some(AUDIO_HOLD_MAX),
            None if self.origin.is_none() => Some(AUDIO_ALONE_WAIT),
            _ => None,
        };
        if let Some(hold) = hold {
            let since = *self.audio_held_since.get_or_insert(frame.arrival);
            if frame.arrival.saturating_duration_since(since) < hold {
                return;
            }
        }
        let anchor = match audio.anchor {
            Some(anchor) => anchor,
            None => self.anchor(frame),
        };
        let presented = anchor.place(frame) + PRESENTATION_DELAY_MS;
        let ts = self.last_audio_ts.map_or(presented, |last| presented.max(last)).max(0);
        self.last_audio_ts = Some(ts);
        let Some(audio) = &mut self.audio else { return };
        audio.anchor = Some(anchor);
        let timestamp = ts as u64 as u32;
        if !audio.header_sent {
            out.push(FlvTag { kind: MediaKind::Audio, timestamp, data: flv::aac_sequence_header(&audio.config) });
            audio.header_sent = true;
        }
        out.push(FlvTag { kind: MediaKind::Audio, timestamp, data: flv::aac_raw(&frame.payload) });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::flv::{AudioTag, VideoTag, parse_audio, parse_video};
    use junction_core::MediaTime;
    use junction_core::h264::{avcc_nals, to_annexb};

    const SPS: &[u8] = &[0x67, 0x42, 0x00, 0x1e, 0xac];
    const SPS2: &[u8] = &[0x67, 0x64, 0x00, 0x28, 0xac];
    const PPS: &[u8] = &[0x68, 0xce, 0x38, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02];

    fn video(ms: u64, keyframe: bool, nals: &[&[u8]], arrival: Instant) -> MediaFrame {
        let time = MediaTime::new(ms * 90, 90_000);
        MediaFrame::video(Codec::H264, time, keyframe, arrival, to_annexb(nals.iter().copied()))
    }

    fn audio(ticks: u64, arrival: Instant) -> MediaFrame {
        MediaFrame::audio(Codec::Aac, MediaTime::new(ticks, 48_000), arrival, Bytes::from_static(&[0x21, 0x10]))
    }

    fn video_params() -> CodecParams {
        CodecParams { clock_rate: 90_000, ..CodecParams::default() }
    }

    /// (timestamp, composition) of each NALU tag, and how many sequence headers were sent.
    fn video_tags(tags: &[FlvTag]) -> (Vec<(u32, i32)>, usize) {
        let mut frames = Vec::new();
        let mut headers = 0;
        for tag in tags.iter().filter(|t| t.kind == MediaKind::Video) {
            match parse_video(&tag.data).unwrap() {
                VideoTag::AvcSequenceHeader { .. } => headers += 1,
                VideoTag::AvcNalus { composition_ms, .. } => frames.push((tag.timestamp, composition_ms)),
                VideoTag::Ignored => {}
            }
        }
        (frames, headers)
    }

    #[test]
    fn video_waits_for_a_keyframe_and_its_parameter_sets() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        let mut out = Vec::new();
        muxer.push(&video(0, false, &[SLICE], t0), &mut out);
        // A keyframe without SPS/PPS and no avcC in the track's params cannot be described.
        muxer.push(&video(33, true, &[IDR], t0), &mut out);
        assert!(out.is_empty());
        muxer.push(&video(66, true, &[SPS, PPS, IDR], t0 + Duration::from_millis(40)), &mut out);
        muxer.push(&video(100, false, &[SLICE], t0 + Duration::from_millis(70)), &mut out);
        let VideoTag::AvcSequenceHeader { record } = parse_video(&out[0].data).unwrap() else { panic!() };
        let config = AvcConfig::parse(&record).unwrap();
        assert_eq!((config.sps[0].as_ref(), config.pps[0].as_ref()), (SPS, PPS));
        let VideoTag::AvcNalus { keyframe, data, .. } = parse_video(&out[1].data).unwrap() else { panic!() };
        assert!(keyframe);
        assert_eq!(avcc_nals(&data, 4).unwrap(), vec![SPS, PPS, IDR]);
        let (frames, headers) = video_tags(&out);
        assert_eq!(headers, 1);
        assert_eq!(frames, vec![(0, 200), (34, 200)]);
    }

    #[test]
    fn changed_parameter_sets_send_a_new_sequence_header() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        let mut out = Vec::new();
        muxer.push(&video(0, true, &[SPS, PPS, IDR], t0), &mut out);
        muxer.push(&video(1000, true, &[SPS, PPS, IDR], t0), &mut out);
        muxer.push(&video(2000, true, &[SPS2, PPS, IDR], t0), &mut out);
        assert_eq!(video_tags(&out).1, 2);
    }

    #[test]
    fn b_frames_get_decode_times_that_never_pass_presentation() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        let mut out = Vec::new();
        // Decode order of I P B B P B B with a 2-frame B pyramid: presentation 0 100 33 67 200 133 167.
        for (i, ms) in [0u64, 100, 33, 67, 200, 133, 167].into_iter().enumerate() {
            let nals: &[&[u8]] = if i == 0 { &[SPS, PPS, IDR] } else { &[SLICE] };
            muxer.push(&video(ms, i == 0, nals, t0), &mut out);
        }
        let (frames, _) = video_tags(&out);
        let dts: Vec<u32> = frames.iter().map(|f| f.0).collect();
        assert!(dts.windows(2).all(|w| w[0] < w[1]), "decode times increase: {dts:?}");
        assert!(frames.iter().all(|(_, cts)| *cts >= 0), "{frames:?}");
        let pts: Vec<i64> = frames.iter().map(|(dts, cts)| i64::from(*dts) + i64::from(*cts)).collect();
        assert_eq!(pts, vec![200, 300, 233, 267, 400, 333, 367]);
    }

    #[test]
    fn tracks_from_different_clocks_meet_on_arrival_and_republishing_continues_the_timeline() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        muxer.set_audio(&CodecParams { clock_rate: 48_000, channels: 2, ..CodecParams::default() });
        let mut out = Vec::new();
        // Audio's clock starts at 5 s, video's at 0; both first frames arrive together.
        muxer.push(&video(0, true, &[SPS, PPS, IDR], t0), &mut out);
        muxer.push(&audio(240_000, t0), &mut out);
        muxer.push(&audio(240_000 + 48_000, t0 + Duration::from_secs(1)), &mut out);
        let audio_ts: Vec<u32> = out.iter().filter(|t| t.kind == MediaKind::Audio).map(|t| t.timestamp).collect();
        assert_eq!(audio_ts, vec![200, 200, 1200], "header, then frames 1 s apart");
        let AudioTag::AacSequenceHeader { config } = parse_audio(&out[2].data).unwrap() else { panic!() };
        assert_eq!(AacConfig::parse(&config).unwrap().sample_rate, 48_000);
        assert_eq!(video_tags(&out).0, vec![(0, 200)]);

        // The publisher comes back 5 s later with a new track whose clock restarted.
        out.clear();
        muxer.set_video(&video_params());
        muxer.push(&video(0, true, &[SPS, PPS, IDR], t0 + Duration::from_secs(5)), &mut out);
        let (frames, headers) = video_tags(&out);
        assert_eq!((frames, headers), (vec![(5000, 200)], 1));
        muxer.clear(MediaKind::Audio);
        out.clear();
        muxer.push(&audio(0, t0 + Duration::from_secs(6)), &mut out);
        assert!(out.is_empty(), "no audio track set");
    }

    #[test]
    fn tracks_on_one_clock_share_an_anchor_so_b_frame_video_stays_in_sync() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_shared_clock(true);
        muxer.set_video(&video_params());
        muxer.set_audio(&CodecParams { clock_rate: 48_000, channels: 2, ..CodecParams::default() });
        let mut out = Vec::new();
        // The keyframe decoded at 0 is presented at 67 ms (B-frames); audio at 100 ms arrives with it.
        muxer.push(&video(67, true, &[SPS, PPS, IDR], t0), &mut out);
        muxer.push(&audio(4_800, t0), &mut out);
        let (frames, _) = video_tags(&out);
        let video_pts = i64::from(frames[0].0) + i64::from(frames[0].1);
        let audio_ts = i64::from(out.last().unwrap().timestamp);
        assert_eq!(audio_ts - video_pts, 33, "100 ms - 67 ms, as in the source");

        // A new publisher session starts a new clock.
        muxer.set_shared_clock(true);
        muxer.set_video(&video_params());
        out.clear();
        muxer.push(&video(90_000, true, &[SPS, PPS, IDR], t0 + Duration::from_secs(2)), &mut out);
        assert_eq!(video_tags(&out).0, vec![(2000, 200)]);
    }

    #[test]
    fn audio_waits_for_the_first_video_keyframe_but_not_forever() {
        let t0 = Instant::now();
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        muxer.set_audio(&CodecParams { clock_rate: 48_000, channels: 2, ..CodecParams::default() });
        let mut out = Vec::new();
        muxer.push(&audio(0, t0), &mut out);
        muxer.push(&video(0, false, &[SLICE], t0), &mut out);
        muxer.push(&audio(960, t0 + Duration::from_millis(20)), &mut out);
        assert!(out.is_empty(), "audio held while video waits for a keyframe");
        muxer.push(&video(40, true, &[SPS, PPS, IDR], t0 + Duration::from_millis(40)), &mut out);
        muxer.push(&audio(1920, t0 + Duration::from_millis(40)), &mut out);
        let kinds: Vec<MediaKind> = out.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, [MediaKind::Video, MediaKind::Video, MediaKind::Audio, MediaKind::Audio]);

        // A video track that never delivers a keyframe holds audio back only so long.
        let mut muxer = Muxer::default();
        muxer.set_video(&video_params());
        muxer.set_audio(&CodecParams { clock_rate: 48_000, channels: 2, ..CodecParams::default() });
        out.clear();
        muxer.push(&audio(0, t0), &mut out);
        muxer.push(&audio(48_000 * 5, t0 + AUDIO_HOLD_MAX), &mut out);
        assert_eq!(out.len(), 2, "sequence header and the frame after the hold");
    }

    #[test]
    fn a_stream_that_starts_with_audio_alone_waits_a_moment_for_video() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let audio_params = CodecParams { clock_rate: 48_000, channels: 2, ..CodecParams::default() };
        // The camera's track comes 200 ms after the microphone's: the stream opens with video.
        let mut muxer = Muxer::default();
        muxer.set_audio(&audio_params);
        let mut out = Vec::new();
        muxer.push(&audio(0, t0), &mut out);
        muxer.push(&audio(9_600, ms(200)), &mut out);
        assert!(out.is_empty());
        muxer.set_video(&video_params());
        muxer.push(&video(250, true, &[SPS, PPS, IDR], ms(250)), &mut out);
        muxer.push(&audio(12_000, ms(250)), &mut out);
        assert_eq!(out[0].kind, MediaKind::Video, "video leads");
        assert!(out.iter().any(|t| t.kind == MediaKind::Audio));

        // Audio alone flows once the wait is over, and from then on without delay.
        let mut muxer = Muxer::default();
        muxer.set_audio(&audio_params);
        out.clear();
        muxer.push(&audio(0, t0), &mut out);
        assert!(out.is_empty());
        muxer.push(&audio(48_000, t0 + AUDIO_ALONE_WAIT), &mut out);
        muxer.push(&audio(48_960, t0 + AUDIO_ALONE_WAIT + Duration::from_millis(20)), &mut out);
        assert_eq!(out.len(), 3, "sequence header and two frames");
    }
}
