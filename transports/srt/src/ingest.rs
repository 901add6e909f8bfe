//! PES packets from an encoder's transport stream turned into Junction tracks and frames. H.264:
//! the first access unit carrying SPS and PPS announces the track (avcC config built from them,
//! SDP fmtp), a change of either announces it again; access units leave as Annex B without
//! access-unit delimiters and filler, with the parameter sets before every IDR. AAC: the ADTS
//! header of the first frame announces the track (AudioSpecificConfig, rate, channels), a change
//! announces it again; each ADTS frame of a PES leaves as one raw AAC frame.
//!
//! Time: PTS values are 33-bit 90 kHz counters that wrap every 26.5 hours. Both streams are
//! extended to 64 bits on one shared timeline and measured from the first PTS seen, plus a
//! second of headroom so a stream that starts slightly earlier than the other stays positive;
//! audio and video stay aligned as the encoder stamped them. Audio time counts samples and
//! follows the AAC frame length exactly while the PTS agrees with it.
//!
//! Arrival: a frame's `arrival` is what WebRTC sender reports and RTMP players line tracks up
//! by. A transport stream does not carry audio and video of one instant together: ffmpeg's muxer
//! sends audio up to 0.7 s after the video of the same time (measured: 435 ms with its defaults),
//! so stamping frames with the instant they arrived would put the audio that far behind at every
//! viewer. Frames are stamped instead with the instant their media time reached the server
//! ([`ArrivalClock`]): one origin for both tracks, the earliest `arrival - media time` seen,
//! allowed to creep later by 1 ms per second so an encoder clock slower than ours is followed.

use std::time::Instant;

use bytes::Bytes;
use junction_audio::codec::aac::{self as aac, AacConfig};
use junction_core::h264::{self, AvcConfig};
use junction_core::{
    Codec, CodecConfigError, CodecParams, MediaFrame, MediaKind, MediaTime, PublishRequest, TrackSource,
};

use crate::ts::{Elementary, Pes};

/// The clock of PTS values and of H.264 tracks.
const CLOCK: u64 = 90_000;
/// PTS values are 33 bits wide.
const PTS_WRAP: u64 = 1 << 33;
/// Added to every time so a stream starting just before the first PTS seen stays positive.
const HEADROOM: i64 = CLOCK as i64;
/// How far (in 90 kHz ticks, 5 ms) an audio PTS may stray from the sample count before it
/// counts as a gap.
const AUDIO_SNAP: u64 = 450;
/// NAL unit types dropped from access units: access-unit delimiter, filler data.
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("H.264 parameter sets refused: {0}")]
    BadParameterSets(String),
    #[error("{kind} configuration refused: {source}")]
    BadCodecConfig { kind: MediaKind, source: CodecConfigError },
    #[error("malformed ADTS: {0}")]
    BadAdts(String),
}

impl IngestError {
    /// Whether the publication cannot go on, rather than one frame lost.
    pub fn is_fatal(&self) -> bool {
        matches!(self, IngestError::BadCodecConfig { .. })
    }
}

pub use junction_core::IngestEvent;

/// Extends 33-bit PTS values to 64 bits from the first one seen. Steps are taken as signed
/// 33-bit deltas, so a wrap moves forward and small backward steps (B-frames, interleaving)
/// stay small.
#[derive(Debug, Default)]
struct Timeline {
    last: Option<(u64, i64)>,
}

impl Timeline {
    /// Ticks since the first PTS, plus [`HEADROOM`], never below zero.
    fn extend(&mut self, pts: u64) -> u64 {
        let pts = pts % PTS_WRAP;
        let extended = match self.last {
            None => HEADROOM,
            Some((last_pts, last_ext)) => {
                let mut delta = (pts + PTS_WRAP - last_pts) % PTS_WRAP;
                if delta >= PTS_WRAP / 2 {
                    delta = delta.wrapping_sub(PTS_WRAP);
                }
                last_ext + delta as i64
            }
        };
        self.last = Some((pts, extended));
        extended.max(0) as u64
    }
}

struct VideoState {
    sps: Bytes,
    pps: Bytes,
    parameter_sets: Bytes,
}

struct AudioState {
    config: AacConfig,
    /// Sample time of the last frame.
    last_ticks: Option<u64>,
}

/// Maps media times on the stream's timeline to the server instant they stand for: the earliest
/// `arrival - media time` seen (the track that arrives first sets it), creeping later by
/// [`ORIGIN_CREEP`] of the time elapsed, so drift between the encoder's clock and ours is
/// followed without either track's jitter moving the other.
#[derive(Debug, Default)]
struct ArrivalClock {
    /// The server instant of media time zero, and when it was last moved.
    origin: Option<(Instant, Instant)>,
}

/// How fast (per unit of time elapsed) the origin may move later.
const ORIGIN_CREEP: f64 = 0.001;

impl ArrivalClock {
    /// The instant `ticks` (90 kHz) stands for, given that it arrived at `arrival`.
    fn stamp(&mut self, ticks: u64, arrival: Instant) -> Instant {
        let media = std::time::Duration::from_micros(ticks.saturating_mul(1_000_000) / CLOCK);
        let Some(candidate) = arrival.checked_sub(media) else { return arrival };
        let origin = match self.origin {
            None => candidate,
            Some((origin, moved)) => {
                let creep = arrival.saturating_duration_since(moved).mul_f64(ORIGIN_CREEP);
                candidate.min(origin + creep)
            }
        };
        self.origin = Some((origin, arrival));
        (origin + media).min(arrival)
    }
}

/// One encoder's ingest: feed it the PES packets, publish what comes out.
#[derive(Default)]
pub struct TsIngest {
    timeline: Timeline,
    clock: ArrivalClock,
    video: Option<VideoState>,
    audio: Option<AudioState>,
    /// Access units dropped before the first one with parameter sets (logged once).
    early_video: u64,
}

impl TsIngest {
    pub fn on_pes(&mut self, pes: &Pes, arrival: Instant, out: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        let time = pes.pts.map(|pts| self.timeline.extend(pts));
        match pes.stream {
            // Video without a PTS takes the timeline's last time.
            Elementary::H264 => {
                let time = time.unwrap_or_else(|| self.timeline.last.map_or(HEADROOM, |(_, ext)| ext).max(0) as u64);
                self.on_video(&pes.data, time, arrival, out)
            }
            // Audio without one (a later part of a PES) follows on from the last frame.
            Elementary::Aac => self.on_audio(&pes.data, time, arrival, out),
        }
    }

    fn on_video(
        &mut self,
        data: &Bytes,
        time: u64,
        arrival: Instant,
        out: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        let (sps, pps) = h264::parameter_sets(data);
        if let (Some(sps), Some(pps)) = (sps, pps)
            && self.video.as_ref().is_none_or(|v| v.sps != sps || v.pps != pps)
        {
            self.on_parameter_sets(sps, pps, out)?;
        }
        let Some(state) = &self.video else {
            self.early_video += 1;
            if self.early_video == 1 {
                tracing::debug!("video before the first SPS and PPS, dropped");
            }
            return Ok(());
        };
        let keyframe = h264::is_keyframe(data);
        let has_sps = sps.is_some();
        let nals = h264::annexb_nals(data).filter(|nal| !matches!(h264::nal_type(nal), NAL_AUD | NAL_FILLER));
        let mut payload = Vec::with_capacity(data.len() + state.parameter_sets.len());
        if keyframe && !has_sps {
            payload.extend_from_slice(&state.parameter_sets);
        }
        payload.extend_from_slice(&h264::to_annexb(nals));
        if payload.is_empty() {
            return Ok(());
        }
        let arrival = self.clock.stamp(time, arrival);
        let time = MediaTime::new(time, CLOCK as u32);
        out.push(IngestEvent::Frame(MediaFrame::video(Codec::H264, time, keyframe, arrival, payload.into())));
        Ok(())
    }

    fn on_parameter_sets(&mut self, sps: &[u8], pps: &[u8], out: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        let config = AvcConfig::from_parameter_sets(sps, pps)
            .ok_or_else(|| IngestError::BadParameterSets("the SPS is too short to describe a profile".into()))?;
        let params = CodecParams {
            clock_rate: CLOCK as u32,
            fmtp: Some(format!("profile-level-id={};packetization-mode=1", config.profile_level_id())),
            config: Some(config.to_bytes()),
            ..CodecParams::default()
        };
        params
            .validate(Codec::H264)
            .map_err(|source| IngestError::BadCodecConfig { kind: MediaKind::Video, source })?;
        tracing::debug!(codec = %config.codec_string(), "H.264 parameter sets");
        out.push(IngestEvent::Track(
            PublishRequest::new("video", Codec::H264).with_source(TrackSource::Camera).with_params(params),
        ));
        self.video = Some(VideoState {
            sps: Bytes::copy_from_slice(sps),
            pps: Bytes::copy_from_slice(pps),
            parameter_sets: config.parameter_sets_annexb(),
        });
        Ok(())
    }

    fn on_audio(
        &mut self,
        data: &[u8],
        time: Option<u64>,
        arrival: Instant,
        out: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        let frames = aac::parse_adts(data).map_err(|err| IngestError::BadAdts(err.to_string()))?;
        for (index, (config, frame)) in frames.into_iter().enumerate() {
            if self.audio.as_ref().is_none_or(|a| a.config != config) {
                self.on_audio_config(config, out)?;
            }
            let Some(state) = &mut self.audio else { continue };
            if frame.is_empty() {
                continue;
            }
            let rate = u64::from(config.sample_rate);
            let expected = state.last_ticks.map(|last| last + aac::FRAME_SAMPLES as u64);
            // Only the first frame of a stamped PES carries a time of its own.
            let stamped = time.filter(|_| index == 0).map(|time| time * rate / CLOCK);
            let ticks = match (expected, stamped) {
                (Some(expected), Some(stamped)) => {
                    let snap = AUDIO_SNAP * rate / CLOCK;
                    if stamped.abs_diff(expected) <= snap { expected } else { stamped }
                }
                (Some(expected), None) => expected,
                (None, Some(stamped)) => stamped,
                (None, None) => {
                    let last = self.timeline.last.map_or(HEADROOM, |(_, ext)| ext).max(0) as u64;
                    last * rate / CLOCK
                }
            };
            state.last_ticks = Some(ticks);
            let stamped = self.clock.stamp(ticks * CLOCK / rate, arrival);
            let time = MediaTime::new(ticks, config.sample_rate);
            out.push(IngestEvent::Frame(MediaFrame::audio(Codec::Aac, time, stamped, Bytes::copy_from_slice(frame))));
        }
        Ok(())
    }

    fn on_audio_config(&mut self, config: AacConfig, out: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        let refused = |source| IngestError::BadCodecConfig { kind: MediaKind::Audio, source };
        let params = CodecParams {
            clock_rate: config.sample_rate,
            channels: config.channels,
            config: Some(config.to_asc()),
            ..CodecParams::default()
        };
        params.validate(Codec::Aac).map_err(refused)?;
        tracing::debug!(rate = config.sample_rate, channels = config.channels, "AAC configuration");
        out.push(IngestEvent::Track(
            PublishRequest::new("audio", Codec::Aac).with_source(TrackSource::Microphone).with_params(params),
        ));
        self.audio = Some(AudioState { config, last_ticks: None });
        Ok(())
    }

    pub fn has_media(&self, kind: MediaKind) -> bool {
        match kind {
            MediaKind::Video => self.video.is_some(),
            MediaKind::Audio => self.audio.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_audio_is_stamped_with_the_instant_its_media_time_arrived() {
        let t0 = Instant::now();
        let ms = |n: u64| std::time::Duration::from_millis(n);
        // Within the origin's creep (1 ms per second).
        let near = |got: Instant, want: Instant| got.max(want) - got.min(want) <= ms(3);
        let mut clock = ArrivalClock::default();
        // Video of media time 0 and 1 s arrives on time; audio of the same times 435 ms later.
        assert_eq!(clock.stamp(0, t0), t0);
        assert!(near(clock.stamp(0, t0 + ms(435)), t0), "audio takes the video's instant");
        assert!(near(clock.stamp(CLOCK, t0 + ms(1000)), t0 + ms(1000)));
        assert!(near(clock.stamp(CLOCK, t0 + ms(1435)), t0 + ms(1000)));
        // A frame that arrives earlier than its media time says moves the origin for both.
        assert_eq!(clock.stamp(2 * CLOCK, t0 + ms(1990)), t0 + ms(1990));
        assert!(near(clock.stamp(2 * CLOCK, t0 + ms(2435)), t0 + ms(1990)));
        // Never later than the frame's own arrival.
        let mut fresh = ArrivalClock::default();
        assert_eq!(fresh.stamp(5 * CLOCK, t0 + ms(10)), t0 + ms(10));
    }

    #[test]
    fn pts_extend_across_the_33_bit_wrap_from_a_second_of_headroom() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.extend(PTS_WRAP - 3000), CLOCK);
        assert_eq!(timeline.extend(0), CLOCK + 3000, "the wrap moves forward");
        assert_eq!(timeline.extend(PTS_WRAP - 1500), CLOCK + 1500, "a small step back stays small");
        assert_eq!(timeline.extend(6000), CLOCK + 9000);
        // A stream that starts before the first PTS seen stays positive, then saturates.
        let mut early = Timeline::default();
        early.extend(100_000);
        assert_eq!(early.extend(100_000 - 9000), CLOCK - 9000);
        assert_eq!(early.extend(0), 0);
    }
}
