//! A publisher's FLV audio and video tags turned into Junction tracks and frames: the AVC
//! sequence header becomes an H.264 track (avcC config, SDP fmtp), AVCC access units become
//! Annex B frames with SPS/PPS before every IDR; the AAC sequence header becomes an AAC track
//! (AudioSpecificConfig, rate, channels), raw AAC frames pass through.
//!
//! Time: RTMP timestamps are 32-bit milliseconds of decode time that wrap every 49.7 days. They
//! are extended to 64 bits on one shared timeline, so audio and video stay aligned; a video
//! frame's time is its presentation time (decode time + composition offset, which B-frames make
//! non-zero) in the 90 kHz clock, frames staying in decode order. Audio time counts samples, and
//! follows the AAC frame length exactly while the millisecond timestamps agree with it.

use std::time::Instant;

use bytes::Bytes;
use junction_core::aac::AacConfig;
use junction_core::h264::{self, AvcConfig, H264Error};
use junction_core::{
    Codec, CodecConfigError, CodecParams, MediaFrame, MediaKind, MediaTime, PublishRequest, TrackSource,
};

use crate::flv::{self, AudioTag, FlvError, VideoTag};

/// The video clock of H.264 tracks.
const VIDEO_RATE: u32 = 90_000;
/// How far (ms) an audio timestamp may stray from the sample count before it counts as a gap.
const AUDIO_SNAP_MS: i64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Flv(#[from] FlvError),
    #[error("bad AVC sequence header: {0}")]
    BadAvcConfig(H264Error),
    #[error("AVC sequence header without SPS or PPS")]
    NoParameterSets,
    #[error("malformed H.264 access unit: {0}")]
    BadAccessUnit(H264Error),
    #[error("{kind} sequence header refused: {source}")]
    BadCodecConfig { kind: MediaKind, source: CodecConfigError },
}

impl IngestError {
    /// Whether the publication cannot go on (the stream is unusable), rather than one frame lost.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, IngestError::BadAccessUnit(_) | IngestError::Flv(FlvError::Truncated { .. }))
    }
}

pub use junction_core::IngestEvent;

/// Extends 32-bit millisecond timestamps to 64 bits. Steps are taken as signed 32-bit deltas, so
/// a wrap moves forward and small backward steps (audio and video interleave loosely) stay small.
#[derive(Debug, Default)]
struct Timeline {
    last: Option<(u32, i64)>,
}

impl Timeline {
    fn extend(&mut self, ts: u32) -> i64 {
        let extended = match self.last {
            None => i64::from(ts),
            Some((last_ts, last_ext)) => last_ext + i64::from(ts.wrapping_sub(last_ts) as i32),
        };
        self.last = Some((ts, extended));
        extended
    }
}

struct VideoState {
    config: AvcConfig,
    record: Bytes,
}

struct AudioState {
    config: AacConfig,
    raw_config: Bytes,
    /// Sample time of the last frame.
    last_ticks: Option<u64>,
}

/// One publisher's ingest: feed it the RTMP audio/video messages, publish what comes out.
#[derive(Default)]
pub struct Ingest {
    timeline: Timeline,
    video: Option<VideoState>,
    audio: Option<AudioState>,
    width: Option<u32>,
    height: Option<u32>,
    /// NAL units dropped before the first sequence header (logged once).
    early_video: u64,
}

impl Ingest {
    /// The picture size from the stream's `onMetaData`, stated on the video track.
    pub fn set_dimensions(&mut self, width: Option<u32>, height: Option<u32>) {
        self.width = width.filter(|w| *w > 0);
        self.height = height.filter(|h| *h > 0);
    }

    pub fn on_video(
        &mut self,
        timestamp: u32,
        data: &Bytes,
        arrival: Instant,
        out: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        let dts_ms = self.timeline.extend(timestamp);
        match flv::parse_video(data)? {
            VideoTag::Ignored => Ok(()),
            VideoTag::AvcSequenceHeader { record } => self.on_avc_config(&record, out),
            VideoTag::AvcNalus { composition_ms, data, .. } => {
                let Some(state) = &self.video else {
                    self.early_video += 1;
                    if self.early_video == 1 {
                        tracing::debug!("video before the AVC sequence header, dropped");
                    }
                    return Ok(());
                };
                let annexb = h264::avcc_to_annexb_frame(&data, &state.config).map_err(IngestError::BadAccessUnit)?;
                if annexb.is_empty() {
                    return Ok(());
                }
                let pts_ms = (dts_ms + i64::from(composition_ms)).max(0) as u64;
                // The FLV frame type may flag a recovery point; only an IDR lets a decoder start.
                let keyframe = h264::is_keyframe(&annexb);
                let time = MediaTime::new(pts_ms * u64::from(VIDEO_RATE / 1000), VIDEO_RATE);
                out.push(IngestEvent::Frame(MediaFrame::video(Codec::H264, time, keyframe, arrival, annexb)));
                Ok(())
            }
        }
    }

    fn on_avc_config(&mut self, record: &Bytes, out: &mut Vec<IngestEvent>) -> Result<(), IngestError> {
        let parsed = AvcConfig::parse(record).map_err(IngestError::BadAvcConfig)?;
        if parsed.sps.is_empty() || parsed.pps.is_empty() {
            return Err(IngestError::NoParameterSets);
        }
        if self.video.as_ref().is_some_and(|v| v.record == record) {
            return Ok(()); // encoders repeat the header; only a change makes a new track
        }
        // Frames leave as Annex B; whoever turns them back into AVCC writes 4-byte lengths.
        let normalised = AvcConfig { length_size: 4, ..parsed.clone() };
        let params = CodecParams {
            clock_rate: VIDEO_RATE,
            fmtp: Some(format!("profile-level-id={};packetization-mode=1", parsed.profile_level_id())),
            config: Some(normalised.to_bytes()),
            width: self.width,
            height: self.height,
            ..CodecParams::default()
        };
        params
            .validate(Codec::H264)
            .map_err(|source| IngestError::BadCodecConfig { kind: MediaKind::Video, source })?;
        tracing::debug!(codec = %parsed.codec_string(), "AVC sequence header");
        out.push(IngestEvent::Track(
            PublishRequest::new("video", Codec::H264).with_source(TrackSource::Camera).with_params(params),
        ));
        self.video = Some(VideoState { config: parsed, record: record.clone() });
        Ok(())
    }

    pub fn on_audio(
        &mut self,
        timestamp: u32,
        data: &Bytes,
        arrival: Instant,
        out: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        let ms = self.timeline.extend(timestamp).max(0);
        match flv::parse_audio(data)? {
            AudioTag::AacSequenceHeader { config } => {
                if self.audio.as_ref().is_some_and(|a| a.raw_config == config) {
                    return Ok(());
                }
                let refused = |source| IngestError::BadCodecConfig { kind: MediaKind::Audio, source };
                let parsed = AacConfig::parse(&config).map_err(|err| refused(err.into()))?;
                let channels = parsed.channels().unwrap_or(0);
                let params = CodecParams {
                    clock_rate: parsed.sample_rate,
                    channels,
                    config: Some(config.clone()),
                    ..CodecParams::default()
                };
                // A 1 Hz rate would have a transcoder make millions of samples of each frame.
                params.validate(Codec::Aac).map_err(refused)?;
                tracing::debug!(rate = parsed.sample_rate, channels, "AAC sequence header");
                out.push(IngestEvent::Track(
                    PublishRequest::new("audio", Codec::Aac).with_source(TrackSource::Microphone).with_params(params),
                ));
                self.audio = Some(AudioState { config: parsed, raw_config: config, last_ticks: None });
                Ok(())
            }
            AudioTag::AacRaw { data } => {
                let Some(state) = &mut self.audio else { return Ok(()) };
                if data.is_empty() {
                    return Ok(());
                }
                let rate = u64::from(state.config.sample_rate);
                let from_ms = ms as u64 * rate / 1000;
                let ticks = match state.last_ticks {
                    Some(last) => {
                        let expected = last + u64::from(state.config.frame_samples);
                        let snap = AUDIO_SNAP_MS as u64 * rate / 1000;
                        if from_ms.abs_diff(expected) <= snap { expected } else { from_ms }
                    }
                    None => from_ms,
                };
                state.last_ticks = Some(ticks);
                let time = MediaTime::new(ticks, state.config.sample_rate);
                out.push(IngestEvent::Frame(MediaFrame::audio(Codec::Aac, time, arrival, data)));
                Ok(())
            }
        }
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
    use crate::flv::{aac_raw, aac_sequence_header, avc_nalus, avc_sequence_header};
    use junction_core::h264::{annexb_nals, to_avcc};

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x02];

    fn record() -> Bytes {
        AvcConfig::from_parameter_sets(SPS, PPS).unwrap().to_bytes()
    }

    fn frames(events: &[IngestEvent]) -> Vec<&MediaFrame> {
        events.iter().filter_map(|e| if let IngestEvent::Frame(f) = e { Some(f) } else { None }).collect()
    }

    #[test]
    fn avc_header_announces_an_h264_track_and_idrs_carry_parameter_sets() {
        let now = Instant::now();
        let mut ingest = Ingest::default();
        ingest.set_dimensions(Some(640), Some(360));
        let mut out = Vec::new();
        // A frame before the header is dropped, not an error.
        ingest.on_video(0, &avc_nalus(false, 0, &to_avcc([SLICE])), now, &mut out).unwrap();
        assert!(out.is_empty());
        ingest.on_video(0, &avc_sequence_header(&record()), now, &mut out).unwrap();
        let IngestEvent::Track(request) = &out[0] else { panic!("no track") };
        assert_eq!(request.codec, Codec::H264);
        assert_eq!(request.params.fmtp.as_deref(), Some("profile-level-id=64001f;packetization-mode=1"));
        assert_eq!(request.params.config.as_deref(), Some(&record()[..]));
        assert_eq!((request.params.width, request.params.height), (Some(640), Some(360)));
        // The same header again announces nothing.
        ingest.on_video(0, &avc_sequence_header(&record()), now, &mut out).unwrap();
        assert_eq!(out.len(), 1);

        ingest.on_video(0, &avc_nalus(true, 67, &to_avcc([IDR])), now, &mut out).unwrap();
        ingest.on_video(33, &avc_nalus(false, 0, &to_avcc([SLICE])), now, &mut out).unwrap();
        let frames = frames(&out);
        assert_eq!(annexb_nals(&frames[0].payload).collect::<Vec<_>>(), vec![SPS, PPS, IDR]);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        // Presentation time = decode time + composition offset, at 90 kHz.
        assert_eq!(frames[0].time, MediaTime::new(67 * 90, 90_000));
        assert_eq!(frames[1].time, MediaTime::new(33 * 90, 90_000));
    }

    #[test]
    fn timestamps_extend_across_the_32_bit_wrap() {
        let mut timeline = Timeline::default();
        assert_eq!(timeline.extend(u32::MAX - 10), i64::from(u32::MAX - 10));
        assert_eq!(timeline.extend(5), i64::from(u32::MAX) + 6);
        assert_eq!(timeline.extend(3), i64::from(u32::MAX) + 4, "a small step back stays a small step back");
        assert_eq!(timeline.extend(100_000), i64::from(u32::MAX) + 100_001);
    }

    #[test]
    fn aac_track_and_sample_exact_audio_times() {
        let now = Instant::now();
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        ingest.on_audio(0, &aac_raw(&[1]), now, &mut out).unwrap();
        assert!(out.is_empty(), "audio before its sequence header is dropped");
        ingest.on_audio(0, &aac_sequence_header(&[0x12, 0x10]), now, &mut out).unwrap();
        let IngestEvent::Track(request) = &out[0] else { panic!("no track") };
        assert_eq!((request.codec, request.params.clock_rate, request.params.channels), (Codec::Aac, 44100, 2));
        assert_eq!(request.params.config.as_deref(), Some(&[0x12, 0x10][..]));
        // 1024 samples at 44.1 kHz are 23.22 ms; millisecond timestamps round, the clock does not.
        for (i, ms) in [0u32, 23, 46, 70, 93].into_iter().enumerate() {
            ingest.on_audio(ms, &aac_raw(&[i as u8 + 1]), now, &mut out).unwrap();
        }
        let ticks: Vec<u64> = frames(&out).iter().map(|f| f.time.ticks).collect();
        assert_eq!(ticks, vec![0, 1024, 2048, 3072, 4096]);
        // A real gap is kept as a gap.
        ingest.on_audio(1000, &aac_raw(&[9]), now, &mut out).unwrap();
        assert_eq!(frames(&out).last().unwrap().time.ticks, 44100);
    }

    #[test]
    fn unsupported_codecs_and_broken_headers_end_the_publication() {
        let now = Instant::now();
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1']);
        let err = ingest.on_video(0, &hevc, now, &mut out).unwrap_err();
        assert!(err.is_fatal() && err.to_string().contains("HEVC"), "{err}");
        let err = ingest.on_video(0, &avc_sequence_header(&[1, 2, 3]), now, &mut out).unwrap_err();
        assert!(err.is_fatal(), "{err}");
        let empty_sets = AvcConfig { sps: vec![], ..AvcConfig::from_parameter_sets(SPS, PPS).unwrap() };
        let err = ingest.on_video(0, &avc_sequence_header(&empty_sets.to_bytes()), now, &mut out).unwrap_err();
        assert_eq!(err, IngestError::NoParameterSets);
        // A corrupt access unit only loses that frame.
        ingest.on_video(0, &avc_sequence_header(&record()), now, &mut out).unwrap();
        let err = ingest.on_video(0, &avc_nalus(true, 0, &[0, 0, 0, 99, 1]), now, &mut out).unwrap_err();
        assert!(!err.is_fatal(), "{err}");
    }

    #[test]
    fn codec_configs_are_validated_before_a_track_is_announced() {
        let now = Instant::now();
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        // The header, `AF 00 17 80 00 00 88`: AAC-LC with an explicit 1 Hz rate.
        let tag = Bytes::from_static(&[0xaf, 0x00, 0x17, 0x80, 0x00, 0x00, 0x88]);
        let err = ingest.on_audio(0, &tag, now, &mut out).unwrap_err();
        assert!(err.is_fatal(), "{err}");
        assert_eq!(
            err.to_string(),
            "audio sequence header refused: AAC sample rate 1 Hz is not one of the 13 standard AAC rates"
        );
        // In-band channel layouts and truncated configs too; nothing was announced.
        assert!(ingest.on_audio(0, &aac_sequence_header(&[0x12, 0x00]), now, &mut out).unwrap_err().is_fatal());
        assert!(ingest.on_audio(0, &aac_sequence_header(&[0x12]), now, &mut out).unwrap_err().is_fatal());
        // An avcC whose "SPS" is a PPS.
        let swapped = AvcConfig::from_parameter_sets(PPS, SPS).unwrap().to_bytes();
        let err = ingest.on_video(0, &avc_sequence_header(&swapped), now, &mut out).unwrap_err();
        assert!(matches!(err, IngestError::BadCodecConfig { kind: MediaKind::Video, .. }), "{err}");
        assert!(out.is_empty());
        assert!(!ingest.has_media(MediaKind::Audio) && !ingest.has_media(MediaKind::Video));
    }
}
