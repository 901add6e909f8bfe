//! A call's two audio paths, built from the engine's codec toolkit.
//! - Uplink: the phone's RTP -> frames of the room track. G.711 goes through the toolkit's
//!   PCMU/PCMA->Opus transcoder (decode, 8 -> 48 kHz, Opus, timestamps kept, gaps concealed);
//!   an Opus call's packets are published as they are.
//! - Downlink: 48 kHz mono PCM (the room's minus-one, or a prompt) -> the negotiated codec at
//!   its own rate -> RTP packets, one per 20 ms.

use std::time::Instant;

use bytes::Bytes;
use junction_audio::codec::g711::{G711Encoder, G711Law};
use junction_audio::codec::opus::{OpusEncoder, OpusMode};
use junction_audio::codec::transcode::build_transcoder;
use junction_audio::codec::{AudioEncoder, CodecError, Resampler, SampleFifo};
use junction_audio::mixer::MIX_RATE;
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime, PeerId, TrackId, TrackInfo, TrackSource};
use junction_engine::{FrameTranscoder, TranscodeError};

use crate::media::dtmf::{END_REPEATS, EventSender};
use crate::media::rtp::{RtpIn, RtpOut};
use crate::sdp::Negotiated;

/// Extends 32-bit RTP timestamps to 64 bits across wrap-arounds.
#[derive(Debug, Default)]
struct TimestampExtender {
    last: Option<u32>,
    cycles: u64,
}

impl TimestampExtender {
    fn extend(&mut self, ts: u32) -> u64 {
        if let Some(last) = self.last {
            if ts < last && last - ts > u32::MAX / 2 {
                self.cycles += 1;
            } else if ts > last && ts - last > u32::MAX / 2 && self.cycles > 0 {
                // A late packet from before the last wrap.
                return ((self.cycles - 1) << 32) | u64::from(ts);
            }
        }
        self.last = Some(ts);
        (self.cycles << 32) | u64::from(ts)
    }
}

/// The phone's audio on its way into the room.
pub struct Uplink {
    codec: Codec,
    clock_rate: u32,
    transcoder: Option<Box<dyn FrameTranscoder>>,
    /// The first RTP timestamp: the published track's timeline starts at zero.
    base: Option<u64>,
    timestamps: TimestampExtender,
    /// The published track's codec parameters.
    pub params: CodecParams,
}

impl Uplink {
    pub fn new(media: &Negotiated, track: TrackId, peer: PeerId) -> Result<Self, TranscodeError> {
        if media.codec == Codec::Opus {
            let params = CodecParams {
                clock_rate: 48_000,
                channels: 2,
                fmtp: Some(junction_audio::codec::opus::fmtp(1)),
                ..CodecParams::default()
            };
            return Ok(Self {
                codec: Codec::Opus,
                clock_rate: 48_000,
                transcoder: None,
                base: None,
                timestamps: TimestampExtender::default(),
                params,
            });
        }
        let input = TrackInfo {
            id: track,
            peer,
            name: "phone".into(),
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            codec: media.codec,
            params: CodecParams::for_codec(media.codec),
            layers: Vec::new(),
            muted: false,
        };
        let (transcoder, params) = build_transcoder(media.codec, Codec::Opus, &input)?;
        Ok(Self {
            codec: media.codec,
            clock_rate: media.clock_rate,
            transcoder: Some(transcoder),
            base: None,
            timestamps: TimestampExtender::default(),
            params,
        })
    }

    /// One audio RTP packet in; Opus frames for the room track out (into `out`).
    pub fn push(&mut self, packet: &RtpIn, arrival: Instant, out: &mut Vec<MediaFrame>) -> Result<(), TranscodeError> {
        let ts = self.timestamps.extend(packet.timestamp);
        let base = *self.base.get_or_insert(ts);
        let Some(ticks) = ts.checked_sub(base) else {
            // Older than the first packet: nothing to place it at.
            return Ok(());
        };
        let frame =
            MediaFrame::audio(self.codec, MediaTime::new(ticks, self.clock_rate), arrival, packet.payload.clone());
        match self.transcoder.as_mut() {
            Some(transcoder) => transcoder.transcode(&frame, out),
            None => {
                out.push(frame);
                Ok(())
            }
        }
    }
}

/// What the phone hears, on its way out.
pub struct Downlink {
    encoder: Box<dyn AudioEncoder>,
    resampler: Resampler,
    resampled: Vec<f32>,
    fifo: SampleFifo,
    rtp: RtpOut,
    payload_type: u8,
    /// Digits for the phone, and the negotiated telephone-event payload type and clock.
    digits: EventSender,
    events: Option<(u8, u32)>,
    /// The RTP timestamp of the event being sent.
    event_start: u32,
}

impl Downlink {
    pub fn new(media: &Negotiated) -> Result<Self, CodecError> {
        let encoder: Box<dyn AudioEncoder> = match media.codec {
            Codec::Opus => Box::new(OpusEncoder::new(1, OpusMode::Voice, Some(32_000))?),
            other => Box::new(G711Encoder::new(G711Law::from_codec(other).unwrap_or(G711Law::MuLaw))),
        };
        let resampler = Resampler::new(MIX_RATE, encoder.sample_rate(), 1)?;
        Ok(Self {
            encoder,
            resampler,
            resampled: Vec::new(),
            fifo: SampleFifo::new(),
            rtp: RtpOut::new(),
            payload_type: media.pt,
            digits: EventSender::default(),
            events: media.dtmf_pt.map(|pt| (pt, media.dtmf_rate)),
            event_start: 0,
        })
    }

    /// Renegotiation kept the codec but may have moved the payload types.
    pub fn renegotiated(&mut self, media: &Negotiated) {
        self.payload_type = media.pt;
        self.events = media.dtmf_pt.map(|pt| (pt, media.dtmf_rate));
    }

    /// Whether digits can go in the RTP stream (the phone offered telephone-event).
    pub fn sends_events(&self) -> bool {
        self.events.is_some()
    }

    /// Queues digits to send as RFC 4733 events in place of audio; returns how many.
    pub fn send_digits(&mut self, digits: &str) -> usize {
        self.digits.push(digits)
    }

    /// 20 ms of 48 kHz mono PCM in; RTP packets out (usually one). When `send` is false (the
    /// call is on hold) the audio is consumed and the RTP clock moves on, but nothing is sent.
    pub fn push(&mut self, pcm: &[f32], send: bool, out: &mut Vec<Bytes>) -> Result<(), CodecError> {
        self.resampled.clear();
        self.resampler.process(pcm, &mut self.resampled)?;
        self.fifo.push(&self.resampled);
        let frame = self.encoder.frame_samples();
        while let Some(samples) = self.fifo.pop(frame) {
            let samples = samples.to_vec();
            let payload = self.encoder.encode(&samples)?;
            let event =
                if send { self.events.and_then(|(pt, rate)| Some((pt, self.digits.tick(rate)?))) } else { None };
            if let Some((pt, tick)) = event {
                if tick.first {
                    self.event_start = self.rtp.timestamp();
                }
                let repeats = if tick.end { END_REPEATS } else { 1 };
                for _ in 0..repeats {
                    let payload = Bytes::copy_from_slice(&tick.payload);
                    out.push(self.rtp.packet_at(pt, payload, self.event_start, tick.first));
                }
                self.rtp.skip(frame as u32);
            } else if send {
                out.push(self.rtp.packet(self.payload_type, payload, frame as u32));
            } else {
                self.rtp.skip(frame as u32);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::Direction;
    use junction_audio::codec::AudioDecoder;
    use junction_audio::codec::g711::G711Decoder;
    use junction_audio::codec::tone::{dominant_frequency, sine_from};

    fn pcmu() -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            pt: 0,
            clock_rate: 8000,
            channels: 1,
            dtmf_pt: Some(101),
            dtmf_rate: 8000,
            remote: Some("127.0.0.1:6000".parse().unwrap()),
            direction: Direction::SendRecv,
            srtp: None,
        }
    }

    #[test]
    fn timestamps_extend_across_the_wrap() {
        let mut ext = TimestampExtender::default();
        assert_eq!(ext.extend(u32::MAX - 159), u64::from(u32::MAX - 159));
        assert_eq!(ext.extend(0), 1 << 32);
        assert_eq!(ext.extend(u32::MAX - 319), u64::from(u32::MAX - 319), "late packet from before the wrap");
        assert_eq!(ext.extend(160), (1 << 32) + 160);
    }

    #[test]
    fn a_g711_tone_comes_out_as_opus_frames_with_a_continuous_timeline() {
        let mut uplink = Uplink::new(&pcmu(), TrackId::generate(), PeerId::new("sip:alice").unwrap()).unwrap();
        assert_eq!(uplink.params.clock_rate, 48_000);
        let mut encoder = G711Encoder::new(G711Law::MuLaw);
        let mut frames = Vec::new();
        for n in 0..50u32 {
            let pcm = sine_from(u64::from(n) * 160, 440.0, 0.3, 8000, 1, 160);
            let packet = RtpIn {
                payload_type: 0,
                sequence: n as u16,
                timestamp: 1_000_000 + n * 160,
                ssrc: 1,
                marker: n == 0,
                payload: encoder.encode(&pcm).unwrap(),
            };
            uplink.push(&packet, Instant::now(), &mut frames).unwrap();
        }
        assert!(frames.len() >= 45, "about one Opus frame per packet, got {}", frames.len());
        assert!(frames.iter().all(|f| f.codec == Codec::Opus && f.time.rate == 48_000));
        assert!(frames.windows(2).all(|w| w[1].time.ticks == w[0].time.ticks + 960));
    }

    #[test]
    fn the_downlink_paces_one_packet_per_20_ms_and_keeps_the_tone() {
        let mut downlink = Downlink::new(&pcmu()).unwrap();
        let mut packets = Vec::new();
        for n in 0..50 {
            let pcm = sine_from(n * 960, 1000.0, 0.3, MIX_RATE, 1, 960);
            downlink.push(&pcm, true, &mut packets).unwrap();
        }
        assert!((48..=50).contains(&packets.len()), "{}", packets.len());
        let mut decoder = G711Decoder::new(G711Law::MuLaw);
        let mut pcm = Vec::new();
        for packet in &packets {
            let rtp = crate::media::rtp::parse(packet).unwrap();
            assert_eq!((rtp.payload_type, rtp.payload.len()), (0, 160));
            decoder.decode(&rtp.payload, &mut pcm).unwrap();
        }
        let freq = dominant_frequency(&pcm, 1, 8000).unwrap();
        assert!((freq - 1000.0).abs() < 5.0, "{freq}");
        let mut held = Vec::new();
        downlink.push(&vec![0.0; 960], false, &mut held).unwrap();
        assert!(held.is_empty(), "nothing is sent on hold");
    }

    #[test]
    fn an_opus_call_is_published_as_is_and_hears_opus() {
        let opus = Negotiated { codec: Codec::Opus, pt: 96, clock_rate: 48_000, channels: 2, ..pcmu() };
        let mut uplink = Uplink::new(&opus, TrackId::generate(), PeerId::new("sip:olga").unwrap()).unwrap();
        let mut frames = Vec::new();
        for n in 0..3u32 {
            let packet = RtpIn {
                payload_type: 96,
                sequence: n as u16,
                timestamp: 7 + n * 960,
                ssrc: 1,
                marker: false,
                payload: Bytes::from_static(&[0xf8, 0xff, 0xfe]),
            };
            uplink.push(&packet, Instant::now(), &mut frames).unwrap();
        }
        let ticks: Vec<u64> = frames.iter().map(|f| f.time.ticks).collect();
        assert_eq!(ticks, [0, 960, 1920]);
        assert!(frames.iter().all(|f| f.codec == Codec::Opus && f.payload.as_ref() == [0xf8, 0xff, 0xfe]));

        let mut downlink = Downlink::new(&opus).unwrap();
        let mut packets = Vec::new();
        for n in 0..25 {
            downlink.push(&sine_from(n * 960, 700.0, 0.3, MIX_RATE, 1, 960), true, &mut packets).unwrap();
        }
        assert_eq!(packets.len(), 25, "one Opus packet per 20 ms");
        let mut decoder = junction_audio::codec::opus::OpusDecoder::new(1).unwrap();
        let mut pcm = Vec::new();
        for packet in &packets {
            let rtp = crate::media::rtp::parse(packet).unwrap();
            assert_eq!(rtp.payload_type, 96);
            decoder.decode(&rtp.payload, &mut pcm).unwrap();
        }
        let freq = dominant_frequency(&pcm[pcm.len() / 2..], 1, MIX_RATE).unwrap();
        assert!((freq - 700.0).abs() < 5.0, "{freq}");
    }
}
