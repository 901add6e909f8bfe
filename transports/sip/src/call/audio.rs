//! A call's two audio paths, built from the engine's codec toolkit.
//! - Uplink: the phone's RTP -> frames of the room track, in the call's codec (G.711 or Opus)
//!   as they came; other codecs are the engine's transcoded variants, made on demand.
//! - Downlink: 48 kHz mono PCM (the room's minus-one, or a prompt) -> the negotiated codec at
//!   its own rate -> RTP packets, one per 20 ms.

use std::time::Instant;

use bytes::Bytes;
use junction_audio::codec::g711::{G711Encoder, G711Law};
use junction_audio::codec::opus::{OpusEncoder, OpusMode};
use junction_audio::codec::{AudioEncoder, CodecError, Resampler, SampleFifo};
use junction_audio::mixer::MIX_RATE;
use junction_core::{Codec, CodecParams, MediaFrame, MediaTime};

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

/// The phone's audio on its way into the room: its payloads as they are (G.711 or Opus), on a
/// timeline that starts at zero. Nothing is transcoded here: the room's mixer decodes G.711
/// itself, and a viewer that takes another codec (a browser's Opus, an RTMP player's AAC) gets it
/// from the engine's transcoded variant of the track, made once a viewer needs it and shared by
/// all of them. A G.711 call in a room of phones thus costs no Opus encoding at all.
pub struct Uplink {
    codec: Codec,
    /// The first RTP timestamp: the published track's timeline starts at zero.
    base: Option<u64>,
    timestamps: TimestampExtender,
    /// The published track's codec parameters.
    pub params: CodecParams,
}

impl Uplink {
    pub fn new(media: &Negotiated) -> Self {
        let params = match media.codec {
            Codec::Opus => CodecParams {
                clock_rate: 48_000,
                channels: 2,
                fmtp: Some(junction_audio::codec::opus::fmtp(1)),
                ..CodecParams::default()
            },
            other => CodecParams { clock_rate: media.clock_rate, ..CodecParams::for_codec(other) },
        };
        Self { codec: media.codec, base: None, timestamps: TimestampExtender::default(), params }
    }

    /// The published track's codec: the call's.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// One audio RTP packet in; the room track's frame out (none for a packet older than the
    /// first).
    pub fn push(&mut self, packet: &RtpIn, arrival: Instant) -> Option<MediaFrame> {
        let ts = self.timestamps.extend(packet.timestamp);
        let base = *self.base.get_or_insert(ts);
        let ticks = ts.checked_sub(base)?;
        let time = MediaTime::new(ticks, self.params.clock_rate);
        Some(MediaFrame::audio(self.codec, time, arrival, packet.payload.clone()))
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
    fn a_g711_call_is_published_as_g711_on_a_timeline_from_zero() {
        let mut uplink = Uplink::new(&pcmu());
        assert_eq!((uplink.codec(), uplink.params.clock_rate, uplink.params.channels), (Codec::Pcmu, 8000, 1));
        let mut encoder = G711Encoder::new(G711Law::MuLaw);
        let mut frames = Vec::new();
        // Starting just before the 32-bit wrap: the timeline goes on across it.
        let first = u32::MAX - 10 * 160;
        for n in 0..50u32 {
            let pcm = sine_from(u64::from(n) * 160, 440.0, 0.3, 8000, 1, 160);
            let packet = RtpIn {
                payload_type: 0,
                sequence: n as u16,
                timestamp: first.wrapping_add(n * 160),
                ssrc: 1,
                marker: n == 0,
                payload: encoder.encode(&pcm).unwrap(),
            };
            frames.extend(uplink.push(&packet, Instant::now()));
        }
        assert_eq!(frames.len(), 50);
        assert!(frames.iter().all(|f| f.codec == Codec::Pcmu && f.time.rate == 8000));
        let ticks: Vec<u64> = frames.iter().map(|f| f.time.ticks).collect();
        assert!(ticks.iter().enumerate().all(|(n, t)| *t == n as u64 * 160), "{ticks:?}");
        let mut decoder = G711Decoder::new(G711Law::MuLaw);
        let mut pcm = Vec::new();
        for frame in &frames {
            decoder.decode(&frame.payload, &mut pcm).unwrap();
        }
        let freq = dominant_frequency(&pcm, 1, 8000).unwrap();
        assert!((freq - 440.0).abs() < 5.0, "the payloads are the phone's: {freq}");
        let before = RtpIn {
            payload_type: 0,
            sequence: 50,
            timestamp: first.wrapping_sub(160),
            ssrc: 1,
            marker: false,
            payload: Bytes::from_static(&[0xff; 160]),
        };
        assert!(
            uplink.push(&before, Instant::now()).is_none(),
            "older than the first packet: no place on the timeline"
        );
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
        let mut uplink = Uplink::new(&opus);
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
            frames.extend(uplink.push(&packet, Instant::now()));
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
