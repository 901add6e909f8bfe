//! G.711 (ITU-T G.711) µ-law (PCMU) and A-law (PCMA) companding at 8 kHz mono.
//!
//! Written by hand from the recommendation's segment/mantissa description: it is a few lines
//! of bit arithmetic, and the crates that offer it add nothing but a dependency. Encoding uses
//! the bit algorithm; decoding uses 256-entry tables computed at compile time from the same
//! algorithm.

use bytes::Bytes;
use junction_core::Codec;

use super::pcm::{f32_to_i16, i16_to_f32};
use super::{AudioDecoder, AudioEncoder, CodecError, check_frame_len};

/// G.711's sample rate.
pub const RATE: u32 = 8_000;
/// Samples in the usual 20 ms RTP packet.
pub const FRAME_SAMPLES: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum G711Law {
    /// µ-law, RTP payload type 0 (North America, Japan).
    MuLaw,
    /// A-law, RTP payload type 8 (everywhere else).
    ALaw,
}

impl G711Law {
    pub fn codec(self) -> Codec {
        match self {
            G711Law::MuLaw => Codec::Pcmu,
            G711Law::ALaw => Codec::Pcma,
        }
    }

    pub fn from_codec(codec: Codec) -> Option<Self> {
        match codec {
            Codec::Pcmu => Some(G711Law::MuLaw),
            Codec::Pcma => Some(G711Law::ALaw),
            _ => None,
        }
    }

    pub fn encode(self, sample: i16) -> u8 {
        match self {
            G711Law::MuLaw => linear_to_ulaw(sample),
            G711Law::ALaw => linear_to_alaw(sample),
        }
    }

    pub fn decode(self, byte: u8) -> i16 {
        match self {
            G711Law::MuLaw => ULAW_TO_LINEAR[usize::from(byte)],
            G711Law::ALaw => ALAW_TO_LINEAR[usize::from(byte)],
        }
    }
}

/// µ-law adds this bias so that every segment starts at a power of two.
const ULAW_BIAS: i32 = 0x84;
/// The largest magnitude µ-law represents before the bias would overflow 15 bits.
const ULAW_CLIP: i32 = 32_635;

pub fn linear_to_ulaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    let sign = if sample < 0 { 0x80 } else { 0 };
    let magnitude = sample.abs().min(ULAW_CLIP) + ULAW_BIAS;
    // The segment is the position of the highest set bit above bit 7 (0..=7).
    let exponent = (31 - magnitude.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

const fn ulaw_to_linear(byte: u8) -> i16 {
    let byte = !byte;
    let exponent = (byte >> 4) & 0x07;
    let mantissa = (byte & 0x0F) as i32;
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    if byte & 0x80 != 0 { -magnitude as i16 } else { magnitude as i16 }
}

pub fn linear_to_alaw(sample: i16) -> u8 {
    let sample = i32::from(sample);
    // A-law's sign bit is set for positive values; even bits are inverted on the wire (0x55).
    let (mask, magnitude) = if sample >= 0 { (0xD5u8, sample) } else { (0x55u8, -sample - 1) };
    let segment = if magnitude < 256 { 0 } else { (31 - magnitude.leading_zeros() as i32 - 7).min(7) };
    let mantissa = if segment == 0 { magnitude >> 4 } else { magnitude >> (segment + 3) } & 0x0F;
    ((segment << 4) as u8 | mantissa as u8) ^ mask
}

const fn alaw_to_linear(byte: u8) -> i16 {
    let byte = byte ^ 0x55;
    let segment = (byte >> 4) & 0x07;
    let mantissa = (byte & 0x0F) as i32;
    let magnitude = if segment == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (segment - 1) };
    if byte & 0x80 != 0 { magnitude as i16 } else { -magnitude as i16 }
}

/// Builds a 256-entry decoding table at compile time.
macro_rules! decode_table {
    ($decode:ident) => {{
        let mut table = [0i16; 256];
        let mut i = 0;
        while i < 256 {
            table[i] = $decode(i as u8);
            i += 1;
        }
        table
    }};
}

static ULAW_TO_LINEAR: [i16; 256] = decode_table!(ulaw_to_linear);
static ALAW_TO_LINEAR: [i16; 256] = decode_table!(alaw_to_linear);

/// Encodes 8 kHz mono PCM into G.711 packets of [`G711Encoder::frame_samples`] samples.
#[derive(Debug)]
pub struct G711Encoder {
    law: G711Law,
    frame_samples: usize,
}

impl G711Encoder {
    /// 20 ms packets.
    pub fn new(law: G711Law) -> Self {
        Self::with_frame_samples(law, FRAME_SAMPLES)
    }

    pub fn with_frame_samples(law: G711Law, frame_samples: usize) -> Self {
        Self { law, frame_samples: frame_samples.max(1) }
    }
}

impl AudioEncoder for G711Encoder {
    fn codec(&self) -> Codec {
        self.law.codec()
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    fn channels(&self) -> u8 {
        1
    }
    fn frame_samples(&self) -> usize {
        self.frame_samples
    }
    fn delay(&self) -> usize {
        0
    }
    fn encode(&mut self, pcm: &[f32]) -> Result<Bytes, CodecError> {
        check_frame_len(self, pcm)?;
        Ok(pcm.iter().map(|s| self.law.encode(f32_to_i16(*s))).collect::<Vec<u8>>().into())
    }
}

/// Decodes G.711 packets (any length: one byte per sample) into 8 kHz mono PCM.
#[derive(Debug)]
pub struct G711Decoder {
    law: G711Law,
}

impl G711Decoder {
    pub fn new(law: G711Law) -> Self {
        Self { law }
    }
}

impl AudioDecoder for G711Decoder {
    fn codec(&self) -> Codec {
        self.law.codec()
    }
    fn sample_rate(&self) -> u32 {
        RATE
    }
    fn channels(&self) -> u8 {
        1
    }
    fn decode(&mut self, payload: &[u8], out: &mut Vec<f32>) -> Result<usize, CodecError> {
        out.extend(payload.iter().map(|b| i16_to_f32(self.law.decode(*b))));
        Ok(payload.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tone;

    #[test]
    fn known_code_points_match_the_recommendation() {
        // µ-law: 0xFF/0x7F are +0/-0, 0x80/0x00 the largest magnitudes.
        assert_eq!(G711Law::MuLaw.decode(0xFF), 0);
        assert_eq!(G711Law::MuLaw.decode(0x7F), 0);
        assert_eq!(G711Law::MuLaw.decode(0x80), 32_124);
        assert_eq!(G711Law::MuLaw.decode(0x00), -32_124);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        // A-law: 0xD5/0x55 are the smallest magnitudes, 0xAA/0x2A the largest.
        assert_eq!(G711Law::ALaw.decode(0xD5), 8);
        assert_eq!(G711Law::ALaw.decode(0x55), -8);
        assert_eq!(G711Law::ALaw.decode(0xAA), 32_256);
        assert_eq!(G711Law::ALaw.decode(0x2A), -32_256);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn every_code_decodes_and_re_encodes_to_itself() {
        for law in [G711Law::MuLaw, G711Law::ALaw] {
            for byte in 0..=255u8 {
                let back = law.encode(law.decode(byte));
                // µ-law has two zeros (0x7F = -0 re-encodes as +0 = 0xFF).
                assert!(back == byte || (law == G711Law::MuLaw && byte == 0x7F && back == 0xFF), "{law:?} {byte:#x}");
            }
        }
    }

    #[test]
    fn round_trip_error_stays_within_half_a_quantisation_step() {
        // Steps double every segment: the error is at most half a step, which is 1/32 of the
        // value (plus µ-law's bias), never more than 8 for A-law's first segment.
        for sample in -32_000i16..=32_000 {
            let x = i32::from(sample);
            let mu = (i32::from(G711Law::MuLaw.decode(linear_to_ulaw(sample))) - x).abs();
            assert!(mu <= (x.abs() + ULAW_BIAS) / 32 + 1, "µ-law {sample}: error {mu}");
            let a = (i32::from(G711Law::ALaw.decode(linear_to_alaw(sample))) - x).abs();
            assert!(a <= (x.abs() / 32).max(8) + 1, "A-law {sample}: error {a}");
        }
    }

    #[test]
    fn a_tone_survives_encoding_with_telephone_quality() {
        let pcm = tone::sine(1000.0, 0.5, RATE, 1, FRAME_SAMPLES * 10);
        for law in [G711Law::MuLaw, G711Law::ALaw] {
            let mut encoder = G711Encoder::new(law);
            let mut decoder = G711Decoder::new(law);
            let mut decoded = Vec::new();
            for frame in pcm.chunks(FRAME_SAMPLES) {
                let packet = encoder.encode(frame).unwrap();
                assert_eq!(packet.len(), FRAME_SAMPLES);
                decoder.decode(&packet, &mut decoded).unwrap();
            }
            let snr = tone::snr_db(&pcm, &decoded);
            eprintln!("{law:?}: SNR {snr:.1} dB");
            assert!(snr > 32.0, "{law:?}: SNR {snr:.1} dB");
        }
        assert!(G711Encoder::new(G711Law::ALaw).encode(&[0.0; 3]).is_err());
    }
}
