//! AAC-LC: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) that tracks carry in
//! `CodecParams::config`, ADTS framing (ISO/IEC 13818-7 §6.2) for files and tools that want it,
//! and the decoder ([`AacDecoder`], pure-Rust symphonia) and encoder ([`AacEncoder`], FDK AAC).
//!
//! The config and ADTS helpers are a few bit fields, written by hand; the codecs are libraries.

mod decoder;
mod encoder;

pub use decoder::AacDecoder;
pub use encoder::AacEncoder;

use bytes::Bytes;

/// Samples per channel in an AAC-LC frame.
pub const FRAME_SAMPLES: usize = 1024;
/// MPEG-4 audio object type of AAC Low Complexity.
pub const AOT_AAC_LC: u8 = 2;

/// Sampling frequencies by their 4-bit index.
const SAMPLE_RATES: [u32; 13] =
    [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AacConfigError {
    #[error("AudioSpecificConfig of {0} bytes is too short")]
    TooShort(usize),
    #[error("reserved sampling frequency index {0}")]
    BadRateIndex(u8),
    #[error("ADTS frame at byte {offset}: {reason}")]
    Adts { offset: usize, reason: &'static str },
}

/// The fields of an AudioSpecificConfig a decoder and a muxer need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// MPEG-4 audio object type: 2 = AAC-LC, 5 = SBR (HE-AAC), 29 = PS (HE-AACv2).
    pub object_type: u8,
    pub sample_rate: u32,
    /// Channel configuration: 1 = mono, 2 = stereo, 0 = defined in-band (PCE).
    pub channels: u8,
}

impl AacConfig {
    pub fn lc(sample_rate: u32, channels: u8) -> Self {
        Self { object_type: AOT_AAC_LC, sample_rate, channels }
    }

    /// Parses the leading fields of an AudioSpecificConfig.
    pub fn parse(asc: &[u8]) -> Result<Self, AacConfigError> {
        let mut bits = BitReader { data: asc, pos: 0 };
        let too_short = AacConfigError::TooShort(asc.len());
        let mut object_type = bits.read(5).ok_or(too_short.clone())? as u8;
        if object_type == 31 {
            object_type = 32 + bits.read(6).ok_or(too_short.clone())? as u8;
        }
        let rate_index = bits.read(4).ok_or(too_short.clone())? as u8;
        let sample_rate =
            if rate_index == 15 { bits.read(24).ok_or(too_short.clone())? } else { rate_for_index(rate_index)? };
        let channels = bits.read(4).ok_or(too_short)? as u8;
        Ok(Self { object_type, sample_rate, channels })
    }

    /// The 2-byte AudioSpecificConfig (5-byte when the rate has no index) for this config, with
    /// a plain GASpecificConfig (1024-sample frames, no extensions).
    pub fn to_asc(&self) -> Bytes {
        let mut bits = BitWriter::default();
        bits.write(u32::from(self.object_type.min(30)), 5);
        match index_for_rate(self.sample_rate) {
            Some(index) => bits.write(u32::from(index), 4),
            None => {
                bits.write(15, 4);
                bits.write(self.sample_rate, 24);
            }
        }
        bits.write(u32::from(self.channels), 4);
        bits.write(0, 3); // frameLengthFlag, dependsOnCoreCoder, extensionFlag
        bits.finish().into()
    }

    /// A 7-byte ADTS header (no CRC) for a raw frame of `payload_len` bytes.
    pub fn adts_header(&self, payload_len: usize) -> [u8; 7] {
        let frame_len = (payload_len + 7).min(0x1FFF) as u32;
        let profile = u32::from(self.object_type.clamp(1, 4) - 1);
        let rate_index = u32::from(index_for_rate(self.sample_rate).unwrap_or(4));
        let channels = u32::from(self.channels & 0x07);
        let mut bits = BitWriter::default();
        bits.write(0xFFF, 12); // syncword
        bits.write(0, 1); // MPEG-4
        bits.write(0, 2); // layer
        bits.write(1, 1); // protection absent
        bits.write(profile, 2);
        bits.write(rate_index, 4);
        bits.write(0, 1); // private
        bits.write(channels, 3);
        bits.write(0, 4); // original, home, copyright bits
        bits.write(frame_len, 13);
        bits.write(0x7FF, 11); // buffer fullness: variable bitrate
        bits.write(0, 2); // one raw data block
        let mut header = [0u8; 7];
        header.copy_from_slice(&bits.finish());
        header
    }
}

fn rate_for_index(index: u8) -> Result<u32, AacConfigError> {
    SAMPLE_RATES.get(usize::from(index)).copied().ok_or(AacConfigError::BadRateIndex(index))
}

fn index_for_rate(rate: u32) -> Option<u8> {
    SAMPLE_RATES.iter().position(|r| *r == rate).map(|i| i as u8)
}

/// Splits an ADTS stream into (config, raw frame) pairs.
pub fn parse_adts(mut data: &[u8]) -> Result<Vec<(AacConfig, &[u8])>, AacConfigError> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while !data.is_empty() {
        let adts = |reason| AacConfigError::Adts { offset, reason };
        let header: &[u8; 7] = data.first_chunk().ok_or(adts("truncated header"))?;
        let mut bits = BitReader { data: header, pos: 0 };
        let field = |bits: &mut BitReader, n| bits.read(n).unwrap_or(0);
        if field(&mut bits, 12) != 0xFFF {
            return Err(adts("no syncword"));
        }
        bits.pos += 3; // ID, layer
        let protection_absent = field(&mut bits, 1) == 1;
        let object_type = field(&mut bits, 2) as u8 + 1;
        let sample_rate = rate_for_index(field(&mut bits, 4) as u8).map_err(|_| adts("bad sampling index"))?;
        bits.pos += 1;
        let channels = field(&mut bits, 3) as u8;
        bits.pos += 4;
        let frame_len = field(&mut bits, 13) as usize;
        let header_len = if protection_absent { 7 } else { 9 };
        let payload = data.get(header_len..frame_len).ok_or(adts("frame length out of range"))?;
        frames.push((AacConfig { object_type, sample_rate, channels }, payload));
        data = data.get(frame_len..).unwrap_or_default();
        offset += frame_len;
    }
    Ok(frames)
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8)?;
            value = (value << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Some(value)
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn write(&mut self, value: u32, n: usize) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.bytes.push(0);
            }
            if (value >> i) & 1 == 1
                && let Some(last) = self.bytes.last_mut()
            {
                *last |= 0x80 >> (self.bits % 8);
            }
            self.bits += 1;
        }
    }

    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_specific_config_round_trips() {
        // 44.1 kHz stereo AAC-LC, as ffmpeg and OBS write it.
        assert_eq!(AacConfig::lc(44_100, 2).to_asc().as_ref(), [0x12, 0x10]);
        assert_eq!(AacConfig::parse(&[0x12, 0x10]).unwrap(), AacConfig::lc(44_100, 2));
        assert_eq!(AacConfig::lc(48_000, 1).to_asc().as_ref(), [0x11, 0x88]);
        let odd = AacConfig::lc(47_999, 1);
        assert_eq!(AacConfig::parse(&odd.to_asc()).unwrap(), odd);
        assert_eq!(AacConfig::parse(&[0x12]), Err(AacConfigError::TooShort(1)));
        assert_eq!(AacConfig::parse(&[0x16, 0x90]), Err(AacConfigError::BadRateIndex(13)));
    }

    #[test]
    fn adts_frames_round_trip() {
        let config = AacConfig::lc(48_000, 2);
        let mut stream = Vec::new();
        for len in [10usize, 0, 300] {
            stream.extend_from_slice(&config.adts_header(len));
            stream.extend(std::iter::repeat_n(len as u8, len));
        }
        let frames = parse_adts(&stream).unwrap();
        assert_eq!(frames.len(), 3);
        assert!(frames.iter().all(|(c, _)| *c == config));
        assert_eq!(frames[2].1, vec![44u8; 300].as_slice());
        assert!(parse_adts(&stream[..stream.len() - 1]).is_err());
        assert!(parse_adts(&[0x00; 9]).is_err());
    }
}
