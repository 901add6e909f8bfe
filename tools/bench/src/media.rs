//! Synthetic but realistic media for the load tool's publishers, and how receivers recognise it.
//!
//! - Video follows a camera encoder's pattern: a frame every 1/30 s, a keyframe every two
//!   seconds about six times the size of a delta frame, sizes varying a little, averaging the
//!   chosen bitrate. Payloads are well-formed VP8 (frame tag, keyframe start code and size) or
//!   H.264 (SPS and PPS from x264 before every IDR, then one slice NAL unit).
//! - Opus frames are 20 ms CELT packets of a 48 kb/s stream.
//! - Every video and Opus frame carries a [`Stamp`] (stream id, sequence number, send time) in
//!   its body, encoded without zero bytes so it survives H.264 Annex B framing untouched.
//! - AAC cannot carry a stamp without rewriting its bitstream, so [`AacSource`] pre-encodes a
//!   cycle of distinct frames (a tone with noise) and receivers recognise a frame by its bytes;
//!   the sequence number then follows from the publisher's [`SendLog`].

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use junction_audio::codec::AudioEncoder;
use junction_audio::codec::aac::AacEncoder;
use junction_core::h264::AvcConfig;
use parking_lot::Mutex;

use super::VideoSize;

/// The run's clock: send times in payloads are µs since the run started.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    epoch: Instant,
}

impl RunClock {
    pub fn new() -> Self {
        RunClock { epoch: Instant::now() }
    }

    pub fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_micros() as u64
    }

    pub fn now_us(&self) -> u64 {
        self.micros(Instant::now())
    }
}

const MAGIC: &[u8; 4] = b"JBv1";

/// What a synthetic frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub stream: u32,
    pub seq: u64,
    pub sent_us: u64,
}

impl Stamp {
    pub const LEN: usize = MAGIC.len() + 5 + 10 + 10;

    pub fn write(&self, out: &mut impl BufMut) {
        out.put_slice(MAGIC);
        put_groups(out, u64::from(self.stream), 5);
        put_groups(out, self.seq, 10);
        put_groups(out, self.sent_us, 10);
    }

    /// Finds a stamp near the start of a frame.
    pub fn find(payload: &[u8]) -> Option<Stamp> {
        let window = payload.get(..payload.len().min(128))?;
        let at = window.windows(MAGIC.len()).position(|w| w == MAGIC)? + MAGIC.len();
        let body = payload.get(at..at + Stamp::LEN - MAGIC.len())?;
        let stream = u32::try_from(get_groups(body.get(..5)?)?).ok()?;
        let seq = get_groups(body.get(5..15)?)?;
        let sent_us = get_groups(body.get(15..25)?)?;
        Some(Stamp { stream, seq, sent_us })
    }
}

/// `value` in 7-bit groups, least significant first, each byte with its top bit set.
fn put_groups(out: &mut impl BufMut, value: u64, groups: u32) {
    for i in 0..groups {
        out.put_u8(0x80 | ((value >> (7 * i)) & 0x7f) as u8);
    }
}

fn get_groups(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate() {
        if byte & 0x80 == 0 {
            return None;
        }
        value |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
    }
    Some(value)
}

/// A deterministic hash of `n`, for size jitter and filler bytes.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends filler bytes that contain no zero (no start-code emulation in H.264).
fn fill(out: &mut BytesMut, seq: u64, len: usize) {
    let mut state = mix(seq);
    for i in 0..len {
        if i % 8 == 0 {
            state = mix(state);
        }
        out.put_u8(((state >> ((i % 8) * 8)) as u8) | 0x01);
    }
}

/// The frame sizes of a camera encoder at a given bitrate.
#[derive(Debug, Clone, Copy)]
pub struct VideoPattern {
    pub fps: u32,
    /// Frames from one keyframe to the next.
    pub gop: u64,
    delta_bytes: f64,
    pub width: u16,
    pub height: u16,
}

/// A keyframe is this many times a delta frame.
const KEYFRAME_RATIO: f64 = 6.0;

impl VideoPattern {
    pub fn new(size: VideoSize, fps: u32, keyframe_interval: Duration) -> Self {
        let (width, height, bps) = size.format();
        let fps = fps.max(1);
        let gop = ((keyframe_interval.as_secs_f64() * f64::from(fps)).round() as u64).max(1);
        let gop_bytes = bps as f64 / 8.0 * gop as f64 / f64::from(fps);
        let delta_bytes = gop_bytes / (gop as f64 - 1.0 + KEYFRAME_RATIO);
        VideoPattern { fps, gop, delta_bytes, width, height }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.fps))
    }

    /// The keyframe schedule of an encoder of this pattern.
    pub fn keyframes(&self) -> Keyframes {
        Keyframes { gop: self.gop, since: None, requested: false }
    }

    /// The size of frame `seq`: ±15 % around the pattern's mean.
    pub fn frame_bytes(&self, seq: u64, keyframe: bool) -> usize {
        let mean = if keyframe { self.delta_bytes * KEYFRAME_RATIO } else { self.delta_bytes };
        let jitter = (mix(seq) % 301) as f64 / 1000.0 - 0.15;
        ((mean * (1.0 + jitter)) as usize).max(Stamp::LEN + 16)
    }

    /// A VP8 frame: the frame tag (and, for a keyframe, start code and dimensions), then a stamp.
    pub fn vp8(&self, stamp: Stamp, keyframe: bool) -> Bytes {
        let size = self.frame_bytes(stamp.seq, keyframe);
        let mut out = BytesMut::with_capacity(size);
        // Frame tag: bit 0 = 0 for a keyframe, version 0, show_frame, first partition size.
        let first_part = (size as u32 / 4).min(0x7ffff);
        let tag = u32::from(!keyframe) | (1 << 4) | (first_part << 5);
        out.put_slice(&tag.to_le_bytes()[..3]);
        if keyframe {
            out.put_slice(&[0x9d, 0x01, 0x2a]);
            out.put_u16_le(self.width);
            out.put_u16_le(self.height);
        }
        stamp.write(&mut out);
        let used = out.len();
        fill(&mut out, stamp.seq, size.saturating_sub(used));
        out.freeze()
    }

    /// An H.264 access unit's NAL units (SPS, PPS and IDR for a keyframe; one slice otherwise).
    pub fn h264_nals(&self, stamp: Stamp, keyframe: bool) -> Vec<Bytes> {
        let size = self.frame_bytes(stamp.seq, keyframe);
        let mut nals = Vec::with_capacity(3);
        if keyframe {
            let (sps, pps) = parameter_sets(self.height);
            nals.push(Bytes::from_static(sps));
            nals.push(Bytes::from_static(pps));
        }
        let mut slice = BytesMut::with_capacity(size);
        // nal_ref_idc 3 + IDR (5), or nal_ref_idc 2 + non-IDR slice (1); a first_mb/slice-type byte.
        slice.put_slice(if keyframe { &[0x65, 0x88] } else { &[0x41, 0x9a] });
        stamp.write(&mut slice);
        let used = slice.len();
        fill(&mut slice, stamp.seq, size.saturating_sub(used));
        nals.push(slice.freeze());
        nals
    }

    /// The same access unit in Annex B (for RTP packetisers).
    pub fn h264_annexb(&self, stamp: Stamp, keyframe: bool) -> Bytes {
        let mut out = BytesMut::new();
        for nal in self.h264_nals(stamp, keyframe) {
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(&nal);
        }
        out.freeze()
    }

    /// The AVC decoder configuration record for this size (FLV sequence header body).
    pub fn avc_config(&self) -> Bytes {
        let (sps, pps) = parameter_sets(self.height);
        AvcConfig::from_parameter_sets(sps, pps).map(|config| config.to_bytes()).unwrap_or_default()
    }
}

/// Which frames an encoder makes keyframes: one every `gop` frames, and the next one after a
/// receiver asked (PLI/FIR), as real-time encoders do.
#[derive(Debug, Clone)]
pub struct Keyframes {
    gop: u64,
    /// Frames since the last keyframe; `None` before the first frame.
    since: Option<u64>,
    requested: bool,
}

impl Keyframes {
    pub fn request(&mut self) {
        self.requested = true;
    }

    /// Whether the next frame is a keyframe.
    pub fn next(&mut self) -> bool {
        let key = self.requested || self.since.is_none_or(|since| since >= self.gop);
        self.requested = false;
        self.since = Some(if key { 1 } else { self.since.unwrap_or(0) + 1 });
        key
    }
}

/// SPS and PPS that x264 (constrained baseline) wrote for each size.
fn parameter_sets(height: u16) -> (&'static [u8], &'static [u8]) {
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];
    const SPS_360: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00,
        0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
    ];
    const SPS_720: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00,
        0x03, 0x03, 0xc0, 0xf1, 0x83, 0x24, 0x80,
    ];
    const SPS_1080: &[u8] = &[
        0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00,
        0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20,
    ];
    match height {
        0..=480 => (SPS_360, PPS),
        481..=720 => (SPS_720, PPS),
        _ => (SPS_1080, PPS),
    }
}

/// A 20 ms Opus frame of a 48 kb/s stream: a CELT fullband TOC byte, then the stamp.
pub fn opus_frame(stamp: Stamp) -> Bytes {
    const BYTES: usize = 120;
    let mut out = BytesMut::with_capacity(BYTES);
    out.put_u8(0xfc); // config 31 (CELT FB 20 ms), stereo, one frame
    stamp.write(&mut out);
    let used = out.len();
    fill(&mut out, stamp.seq, BYTES - used);
    out.freeze()
}

/// When each frame of one published stream was sent; the index is the sequence number.
#[derive(Debug, Default)]
pub struct SendLog {
    sent_us: Mutex<Vec<u64>>,
}

impl SendLog {
    /// Records the next frame; returns its sequence number.
    pub fn push(&self, sent_us: u64) -> u64 {
        let mut log = self.sent_us.lock();
        log.push(sent_us);
        log.len() as u64 - 1
    }

    pub fn len(&self) -> u64 {
        self.sent_us.lock().len() as u64
    }

    /// The latest frame congruent to `index` modulo `cycle` that was sent at or before `at_us`.
    pub fn resolve(&self, index: u64, cycle: u64, at_us: u64) -> Option<(u64, u64)> {
        let log = self.sent_us.lock();
        let mut seq = index;
        let mut found = None;
        while let Some(&sent) = log.get(seq as usize) {
            if sent > at_us {
                break;
            }
            found = Some((seq, sent));
            seq += cycle;
        }
        found
    }
}

/// A cycle of distinct AAC-LC frames (44.1 kHz stereo, 128 kb/s) and the index to recognise them.
pub struct AacSource {
    pub config: Bytes,
    pub frames: Vec<Bytes>,
    index: HashMap<u64, u64>,
}

/// Frames in one AAC cycle: about 12 s.
const AAC_CYCLE: usize = 512;
pub const AAC_RATE: u32 = 44_100;
pub const AAC_FRAME_SAMPLES: u64 = 1024;

fn payload_hash(payload: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

impl AacSource {
    /// Encodes the cycle (a fraction of a second of CPU).
    pub fn new() -> anyhow::Result<Arc<AacSource>> {
        let mut encoder = AacEncoder::new(AAC_RATE, 2, 128_000)?;
        let samples = encoder.frame_samples();
        let mut frames = Vec::with_capacity(AAC_CYCLE);
        let mut index = HashMap::with_capacity(AAC_CYCLE);
        let mut n = 0u64;
        while frames.len() < AAC_CYCLE {
            let pcm: Vec<f32> = (0..samples * 2)
                .map(|i| {
                    let t = (n * samples as u64 + i as u64 / 2) as f64 / f64::from(AAC_RATE);
                    let noise = (mix(n * 4096 + i as u64) % 2001) as f32 / 1000.0 - 1.0;
                    (0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32 + 0.05 * noise
                })
                .collect();
            n += 1;
            let frame = encoder.encode(&pcm)?;
            if frame.is_empty() {
                continue;
            }
            // A repeated frame could not be told apart: leave it out of the index.
            if index.insert(payload_hash(&frame), frames.len() as u64).is_some() {
                index.remove(&payload_hash(&frame));
            }
            frames.push(frame);
        }
        Ok(Arc::new(AacSource { config: encoder.audio_specific_config(), frames, index }))
    }

    pub fn frame(&self, seq: u64) -> Bytes {
        self.frames[(seq % self.frames.len() as u64) as usize].clone()
    }

    pub fn cycle(&self) -> u64 {
        self.frames.len() as u64
    }

    /// Which frame of the cycle this payload is.
    pub fn recognise(&self, payload: &[u8]) -> Option<u64> {
        self.index.get(&payload_hash(payload)).copied()
    }
}

/// A published stream: its id in stamps and reports, and when each of its frames was sent.
#[derive(Clone)]
pub struct Stream {
    pub id: u32,
    pub log: Arc<SendLog>,
}

impl Stream {
    pub fn new(id: u32) -> Stream {
        Stream { id, log: Arc::new(SendLog::default()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_core::h264;

    #[test]
    fn stamps_round_trip_without_zero_bytes() {
        let stamp = Stamp { stream: 7, seq: u64::MAX - 3, sent_us: 123_456_789 };
        let mut out = BytesMut::new();
        out.put_slice(&[1, 2, 3]);
        stamp.write(&mut out);
        assert_eq!(out.len(), 3 + Stamp::LEN);
        assert!(!out.contains(&0));
        assert_eq!(Stamp::find(&out), Some(stamp));
        assert_eq!(Stamp::find(&out[..out.len() - 1]), None, "truncated");
        assert_eq!(Stamp::find(b"no stamp here"), None);
    }

    #[test]
    fn video_frames_average_the_bitrate_with_keyframes_on_schedule() {
        let pattern = VideoPattern::new(VideoSize::P720, 30, Duration::from_secs(2));
        assert_eq!(pattern.gop, 60);
        let mut keyframes = pattern.keyframes();
        let flags: Vec<bool> = (0..600).map(|_| keyframes.next()).collect();
        assert_eq!(flags.iter().filter(|k| **k).count(), 10);
        assert!(flags[0] && flags[60] && !flags[59]);
        let total: usize = flags.iter().enumerate().map(|(seq, key)| pattern.frame_bytes(seq as u64, *key)).sum();
        let bps = total as f64 * 8.0 / 20.0;
        assert!((bps - 2_500_000.0).abs() < 100_000.0, "{bps}");
        assert!(pattern.frame_bytes(0, true) > 4 * pattern.frame_bytes(1, false));
        keyframes.request();
        assert!(keyframes.next(), "a requested keyframe comes next");
        assert!(!keyframes.next());
    }

    #[test]
    fn vp8_and_h264_frames_are_well_formed_and_stamped() {
        let pattern = VideoPattern::new(VideoSize::P360, 30, Duration::from_secs(1));
        let key = Stamp { stream: 1, seq: 0, sent_us: 5 };
        let delta = Stamp { seq: 1, ..key };
        let vp8 = pattern.vp8(key, true);
        assert_eq!(vp8[0] & 1, 0, "keyframe bit");
        assert_eq!(&vp8[3..6], &[0x9d, 0x01, 0x2a]);
        assert_eq!(u16::from_le_bytes([vp8[6], vp8[7]]), 640);
        assert_eq!(vp8.len(), pattern.frame_bytes(0, true));
        assert_eq!(Stamp::find(&vp8), Some(key));
        assert_eq!(pattern.vp8(delta, false)[0] & 1, 1);

        let annexb = pattern.h264_annexb(key, true);
        assert!(h264::is_keyframe(&annexb));
        let nals: Vec<&[u8]> = h264::annexb_nals(&annexb).collect();
        assert_eq!(nals.iter().map(|n| h264::nal_type(n)).collect::<Vec<_>>(), vec![7, 8, 5]);
        assert_eq!(Stamp::find(nals[2]), Some(key));
        let delta_frame = pattern.h264_annexb(delta, false);
        let delta_nals: Vec<&[u8]> = h264::annexb_nals(&delta_frame).collect();
        assert_eq!(delta_nals.len(), 1, "the filler never emulates a start code");
        assert_eq!(Stamp::find(delta_nals[0]), Some(delta));
        assert!(h264::AvcConfig::parse(&pattern.avc_config()).is_ok());
    }

    #[test]
    fn opus_frames_are_stamped() {
        let stamp = Stamp { stream: 2, seq: 9, sent_us: 77 };
        let frame = opus_frame(stamp);
        assert_eq!(frame.len(), 120);
        assert_eq!(Stamp::find(&frame), Some(stamp));
    }

    #[test]
    fn aac_frames_are_recognised_and_resolved_through_the_send_log() {
        let source = AacSource::new().unwrap();
        assert_eq!(source.cycle(), AAC_CYCLE as u64);
        assert_eq!(source.recognise(&source.frame(5)), Some(5));
        assert_eq!(source.recognise(&source.frame(AAC_CYCLE as u64 + 5)), Some(5));
        assert_eq!(source.recognise(b"not aac"), None);

        let log = SendLog::default();
        for seq in 0..1100u64 {
            assert_eq!(log.push(seq * 23), seq);
        }
        // Frame 5 of the cycle, heard at 600 * 23 µs: the copy sent as seq 517.
        assert_eq!(log.resolve(5, 512, 600 * 23), Some((517, 517 * 23)));
        assert_eq!(log.resolve(5, 512, 4), None, "not sent yet");
    }
}
