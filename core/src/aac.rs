//! The MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) that AAC tracks carry in
//! [`crate::CodecParams::config`]: its fields read into [`AacConfig`], and the table of the 13
//! standard sampling frequencies. A few bit fields, read by hand; the validation every ingest
//! applies to them is [`crate::CodecParams::validate`].

/// The standard sampling frequencies, by their 4-bit index (ISO/IEC 14496-3 Table 1.18).
pub const SAMPLE_RATES: [u32; 13] =
    [96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000, 7_350];

/// MPEG-4 audio object types Junction names.
pub const AOT_AAC_MAIN: u8 = 1;
pub const AOT_AAC_LC: u8 = 2;
pub const AOT_AAC_SSR: u8 = 3;
pub const AOT_AAC_LTP: u8 = 4;
/// Spectral band replication (HE-AAC): an extension over a core object type.
pub const AOT_SBR: u8 = 5;
/// Parametric stereo (HE-AAC v2): an extension over a core object type.
pub const AOT_PS: u8 = 29;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AscError {
    #[error("the AudioSpecificConfig is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("reserved sampling frequency index {0}")]
    ReservedRateIndex(u8),
}

/// The leading fields of an AudioSpecificConfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacConfig {
    /// The audio object type of the core stream (for HE-AAC, the one under the SBR/PS extension).
    pub object_type: u8,
    /// The extension signalled explicitly in front of it: [`AOT_SBR`] or [`AOT_PS`].
    pub extension: Option<u8>,
    /// The core stream's sampling frequency in Hz, from the table or the explicit 24-bit field.
    pub sample_rate: u32,
    /// The SBR output rate when an extension is signalled.
    pub extension_rate: Option<u32>,
    /// The 4-bit channelConfiguration: 0 = layout in a program config element, 1-6 = that many
    /// channels, 7 = 8 channels (7.1), 8-15 reserved or beyond what Junction carries.
    pub channel_configuration: u8,
    /// PCM samples per channel and frame: 1024, or 960 when the frameLengthFlag is set.
    pub frame_samples: u32,
}

impl AacConfig {
    /// Reads the fields of an AudioSpecificConfig. An explicit (24-bit) rate is returned as
    /// it is: checking it against the table is validation's job.
    pub fn parse(asc: &[u8]) -> Result<AacConfig, AscError> {
        let mut bits = BitReader { data: asc, pos: 0 };
        let mut object_type = bits.object_type()?;
        let sample_rate = bits.sample_rate()?;
        let channel_configuration = bits.read(4)? as u8;
        let (mut extension, mut extension_rate) = (None, None);
        if object_type == AOT_SBR || object_type == AOT_PS {
            extension = Some(object_type);
            extension_rate = Some(bits.sample_rate()?);
            object_type = bits.object_type()?;
        }
        // GASpecificConfig's frameLengthFlag, for the object types that have one.
        let frame_samples = match object_type {
            1 | 2 | 3 | 4 | 6 | 7 | 17 | 19 | 20 | 21 | 22 | 23 if bits.read(1)? == 1 => 960,
            _ => 1024,
        };
        Ok(AacConfig { object_type, extension, sample_rate, extension_rate, channel_configuration, frame_samples })
    }

    /// The channel count the configuration states, when it states one Junction carries (1-8).
    pub fn channels(&self) -> Option<u8> {
        match self.channel_configuration {
            1..=6 => Some(self.channel_configuration),
            7 => Some(8),
            _ => None,
        }
    }
}

/// A two-byte AAC-LC AudioSpecificConfig for `sample_rate` (48 kHz's index when it is not a
/// standard rate) and `channels` (1-7), for a track that came without one.
pub fn lc_config(sample_rate: u32, channels: u8) -> bytes::Bytes {
    let index = u16::from(rate_index(sample_rate).unwrap_or(3));
    let channels = u16::from(channels.clamp(1, 7));
    let value = (u16::from(AOT_AAC_LC) << 11) | (index << 7) | (channels << 3);
    bytes::Bytes::copy_from_slice(&value.to_be_bytes())
}

/// Whether `rate` is one of the 13 standard sampling frequencies.
pub fn is_standard_rate(rate: u32) -> bool {
    SAMPLE_RATES.contains(&rate)
}

/// The 4-bit index of a standard sampling frequency.
pub fn rate_index(rate: u32) -> Option<u8> {
    SAMPLE_RATES.iter().position(|r| *r == rate).map(|i| i as u8)
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, n: usize) -> Result<u32, AscError> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = self.data.get(self.pos / 8).ok_or(AscError::Truncated(self.data.len()))?;
            value = (value << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(value)
    }

    fn object_type(&mut self) -> Result<u8, AscError> {
        let object_type = self.read(5)? as u8;
        Ok(if object_type == 31 { 32 + self.read(6)? as u8 } else { object_type })
    }

    fn sample_rate(&mut self) -> Result<u32, AscError> {
        match self.read(4)? as u8 {
            15 => self.read(24),
            index => SAMPLE_RATES.get(usize::from(index)).copied().ok_or(AscError::ReservedRateIndex(index)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_encoders_write() {
        // AAC-LC, 44.1 kHz, stereo (ffmpeg, OBS).
        let lc = AacConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!((lc.object_type, lc.sample_rate, lc.channels(), lc.frame_samples), (2, 44_100, Some(2), 1024));
        // AAC-LC, 48 kHz, mono, 960-sample frames.
        let short = AacConfig::parse(&[0x11, 0x8c]).unwrap();
        assert_eq!((short.sample_rate, short.channels(), short.frame_samples), (48_000, Some(1), 960));
        // HE-AAC signalled explicitly: SBR over AAC-LC, 24 kHz core, 48 kHz output, stereo.
        let he = AacConfig::parse(&[0x2b, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(
            (he.extension, he.object_type, he.sample_rate, he.extension_rate),
            (Some(5), 2, 24_000, Some(48_000))
        );
        // 7.1.
        assert_eq!(AacConfig::parse(&[0x11, 0xb8]).unwrap().channels(), Some(8));
    }

    #[test]
    fn the_issue_header_reads_as_an_explicit_1_hz_rate() {
        // `AF 00 17 80 00 00 88` as an FLV tag: the config is `17 80 00 00 88`.
        let config = AacConfig::parse(&[0x17, 0x80, 0x00, 0x00, 0x88]).unwrap();
        assert_eq!((config.object_type, config.sample_rate, config.channels()), (2, 1, Some(1)));
        assert!(!is_standard_rate(config.sample_rate));
    }

    #[test]
    fn truncated_and_reserved_configs_are_errors() {
        assert_eq!(AacConfig::parse(&[]), Err(AscError::Truncated(0)));
        assert_eq!(AacConfig::parse(&[0x12]), Err(AscError::Truncated(1)));
        assert_eq!(AacConfig::parse(&[0x16, 0x80]), Err(AscError::ReservedRateIndex(13)));
        assert_eq!(rate_index(44_100), Some(4));
        assert_eq!(lc_config(44_100, 2).as_ref(), &[0x12, 0x10]);
        assert_eq!(lc_config(48_000, 1).as_ref(), &[0x11, 0x88]);
        assert_eq!(rate_index(1), None);
    }
}
