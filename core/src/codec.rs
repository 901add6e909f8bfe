//! Media kinds and codecs: their clock rates, names on the wire (SDP encoding names, MIME types)
//! and which kind of media each one carries; and the one check every ingest applies to a
//! track's codec parameters before publishing it ([`CodecParams::validate`]).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::aac::{self, AacConfig, AscError};
use crate::h264::{self, AvcConfig, H264Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Audio => "audio",
            MediaKind::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every codec a Junction track can carry.
///
/// Payload conventions inside a [`crate::MediaFrame`]:
/// - `H264`: Annex B (start codes); every keyframe carries its SPS and PPS in-band before the IDR
///   slice (see [`crate::h264`] for conversions from/to AVCC).
/// - `Aac`: one raw AAC access unit (no ADTS header); the AudioSpecificConfig is in
///   [`crate::CodecParams::config`].
/// - `Opus`, `Pcmu`, `Pcma`: one packet as it would sit in an RTP payload.
/// - `Vp8`, `Vp9`: one frame; `Av1`: one temporal unit in low-overhead OBU format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Opus,
    Aac,
    Pcmu,
    Pcma,
    H264,
    Vp8,
    Vp9,
    Av1,
}

impl Codec {
    pub const ALL: [Codec; 8] =
        [Codec::Opus, Codec::Aac, Codec::Pcmu, Codec::Pcma, Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1];

    pub fn kind(self) -> MediaKind {
        match self {
            Codec::Opus | Codec::Aac | Codec::Pcmu | Codec::Pcma => MediaKind::Audio,
            Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => MediaKind::Video,
        }
    }

    /// The default timestamp clock. AAC's real clock is its sample rate, which the track's
    /// [`crate::CodecParams::clock_rate`] states; this is only the common default.
    pub fn default_clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            Codec::Aac => 48_000,
            Codec::Pcmu | Codec::Pcma => 8_000,
            Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Av1 => 90_000,
        }
    }

    /// Lower-case short name, as used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::Aac => "aac",
            Codec::Pcmu => "pcmu",
            Codec::Pcma => "pcma",
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }

    /// The MIME type (`audio/opus`, `video/H264`, ...).
    pub fn mime_type(self) -> &'static str {
        match self {
            Codec::Opus => "audio/opus",
            Codec::Aac => "audio/mp4a-latm",
            Codec::Pcmu => "audio/PCMU",
            Codec::Pcma => "audio/PCMA",
            Codec::H264 => "video/H264",
            Codec::Vp8 => "video/VP8",
            Codec::Vp9 => "video/VP9",
            Codec::Av1 => "video/AV1",
        }
    }

    /// Parses an SDP encoding name or short name, case-insensitively (`opus`, `H264`, `PCMU`,
    /// `AV1X`, `mpeg4-generic`, ...).
    pub fn from_name(name: &str) -> Option<Codec> {
        let lower = name.to_ascii_lowercase();
        let lower = lower.rsplit('/').next().unwrap_or(&lower);
        Some(match lower {
            "opus" => Codec::Opus,
            "aac" | "mp4a-latm" | "mpeg4-generic" => Codec::Aac,
            "pcmu" | "g711u" => Codec::Pcmu,
            "pcma" | "g711a" => Codec::Pcma,
            "h264" | "avc" => Codec::H264,
            "vp8" => Codec::Vp8,
            "vp9" => Codec::Vp9,
            "av1" | "av1x" => Codec::Av1,
            _ => return None,
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Comma-separated codec names, for error messages.
pub fn codec_list(codecs: &[Codec]) -> String {
    let names: Vec<&str> = codecs.iter().map(|c| c.as_str()).collect();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

/// Why a track's codec parameters were refused where they entered the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecConfigError {
    #[error("{codec} with a {rate} Hz clock (it must be {expected})")]
    ClockRate { codec: Codec, rate: u32, expected: &'static str },
    #[error("{codec} with {channels} channels (it must be {expected})")]
    Channels { codec: Codec, channels: u8, expected: &'static str },
    #[error("AAC AudioSpecificConfig: {0}")]
    Asc(#[from] AscError),
    #[error("AAC sample rate {rate} Hz is not one of the 13 standard AAC rates")]
    AacRate { rate: u32 },
    #[error("AAC object type {object_type} is not supported (AAC Main, LC, SSR, LTP, HE-AAC v1/v2 are)")]
    AacObjectType { object_type: u8 },
    #[error("AAC channel configuration {configuration} is not supported (1-7: 1 to 8 channels)")]
    AacChannels { configuration: u8 },
    #[error("H.264 configuration record: {0}")]
    Avc(#[from] H264Error),
    #[error("H.264 configuration record: {0}")]
    AvcSanity(String),
    #[error("a {width}x{height} picture is larger than {max}x{max}")]
    PictureSize { width: u32, height: u32, max: u32 },
}

/// Parameters a receiver needs beyond the codec itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CodecParams {
    /// Timestamp clock of the track's frames, in Hz.
    pub clock_rate: u32,
    /// Audio channels (0 for video).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub channels: u8,
    /// SDP fmtp line as negotiated with the publisher (`profile-level-id=...`, `minptime=10;...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmtp: Option<String>,
    /// Out-of-band decoder configuration: AAC AudioSpecificConfig, H.264 avcC when known.
    #[serde(skip)]
    pub config: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// H.264 whose frames come out of presentation order (B-frames), as its SPS states; set by
    /// the engine when the track is published. WebRTC decoders cannot take such a stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reorders: bool,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl CodecParams {
    /// Defaults for `codec`: its usual clock, stereo Opus, mono G.711, stereo AAC.
    pub fn for_codec(codec: Codec) -> Self {
        let channels = match codec {
            Codec::Opus | Codec::Aac => 2,
            Codec::Pcmu | Codec::Pcma => 1,
            _ => 0,
        };
        Self { clock_rate: codec.default_clock_rate(), channels, ..Self::default() }
    }
}

/// The largest picture side Junction accepts (H.264 level 6.2 tops out at 8192).
const MAX_PICTURE_SIDE: u32 = 16_384;
/// The largest out-of-band decoder configuration accepted (an avcC or an AudioSpecificConfig).
const MAX_CONFIG_BYTES: usize = 64 * 1024;

impl CodecParams {
    /// Checks the parameters a track in `codec` is published with, as they arrived from the
    /// network (an RTMP sequence header, a CMAF init segment, an SDP): clock rates and channel
    /// counts a receiver and the engine's transcoders can work with, and a decoder
    /// configuration that parses and is sane. Every ingest calls it before publishing (the
    /// engine checks again when a track is published); a refusal is answered with the
    /// protocol's own error.
    ///
    /// - AAC: the AudioSpecificConfig's object type is in the AAC family, its sample rate (and
    ///   an HE-AAC extension rate) is one of the 13 standard rates — an explicit 24-bit rate only
    ///   if it is one of them — and its channel configuration is 1 to 8 channels; the track's
    ///   clock is a standard rate, and 1 to 8 channels.
    /// - Opus: a 48 kHz clock and 1 or 2 channels (multichannel mappings are not carried).
    /// - G.711: an 8 kHz clock, mono (0 = unspecified, read as mono).
    /// - H.264: the avcC (when present) parses, has 1-31 SPS and 1-255 PPS of the right NAL
    ///   types, and a 1, 2 or 4-byte length size; a 90 kHz clock; a sane picture size.
    /// - VP8, VP9, AV1: a 90 kHz clock and a sane picture size.
    pub fn validate(&self, codec: Codec) -> Result<(), CodecConfigError> {
        if self.config.as_ref().is_some_and(|config| config.len() > MAX_CONFIG_BYTES) {
            return Err(CodecConfigError::AvcSanity(format!("decoder configuration over {MAX_CONFIG_BYTES} bytes")));
        }
        let clock = |expected_rate: u32, expected: &'static str| {
            if self.clock_rate == expected_rate {
                Ok(())
            } else {
                Err(CodecConfigError::ClockRate { codec, rate: self.clock_rate, expected })
            }
        };
        match codec {
            Codec::Aac => self.validate_aac(),
            Codec::Opus => {
                clock(48_000, "48000")?;
                if !(1..=2).contains(&self.channels) {
                    return Err(CodecConfigError::Channels { codec, channels: self.channels, expected: "1 or 2" });
                }
                Ok(())
            }
            Codec::Pcmu | Codec::Pcma => {
                clock(8_000, "8000")?;
                if self.channels > 1 {
                    return Err(CodecConfigError::Channels { codec, channels: self.channels, expected: "1" });
                }
                Ok(())
            }
            Codec::H264 => {
                clock(90_000, "90000")?;
                self.validate_picture()?;
                match &self.config {
                    Some(record) => validate_avc(&AvcConfig::parse(record)?),
                    None => Ok(()),
                }
            }
            Codec::Vp8 | Codec::Vp9 | Codec::Av1 => {
                clock(90_000, "90000")?;
                self.validate_picture()
            }
        }
    }

    fn validate_aac(&self) -> Result<(), CodecConfigError> {
        if !aac::is_standard_rate(self.clock_rate) {
            return Err(CodecConfigError::AacRate { rate: self.clock_rate });
        }
        if !(1..=8).contains(&self.channels) {
            return Err(CodecConfigError::Channels { codec: Codec::Aac, channels: self.channels, expected: "1 to 8" });
        }
        let Some(asc) = &self.config else { return Ok(()) };
        let config = AacConfig::parse(asc)?;
        let supported = [aac::AOT_AAC_MAIN, aac::AOT_AAC_LC, aac::AOT_AAC_SSR, aac::AOT_AAC_LTP];
        if !supported.contains(&config.object_type) {
            return Err(CodecConfigError::AacObjectType { object_type: config.object_type });
        }
        for rate in std::iter::once(config.sample_rate).chain(config.extension_rate) {
            if !aac::is_standard_rate(rate) {
                return Err(CodecConfigError::AacRate { rate });
            }
        }
        if config.channels().is_none() {
            return Err(CodecConfigError::AacChannels { configuration: config.channel_configuration });
        }
        Ok(())
    }

    fn validate_picture(&self) -> Result<(), CodecConfigError> {
        let (width, height) = (self.width.unwrap_or(0), self.height.unwrap_or(0));
        if width > MAX_PICTURE_SIDE || height > MAX_PICTURE_SIDE {
            return Err(CodecConfigError::PictureSize { width, height, max: MAX_PICTURE_SIDE });
        }
        Ok(())
    }
}

/// Sanity of a parsed avcC beyond its framing: parameter sets there, of the right types.
fn validate_avc(avc: &AvcConfig) -> Result<(), CodecConfigError> {
    let sanity = |what: String| Err(CodecConfigError::AvcSanity(what));
    if avc.sps.is_empty() || avc.pps.is_empty() {
        return sanity(format!("{} SPS and {} PPS (at least one of each is needed)", avc.sps.len(), avc.pps.len()));
    }
    let wrong_type =
        |sets: &[bytes::Bytes], nal_type: u8| sets.iter().any(|set| set.is_empty() || h264::nal_type(set) != nal_type);
    if wrong_type(&avc.sps, 7) {
        return sanity("an SPS that is empty or not an SPS NAL unit".into());
    }
    if wrong_type(&avc.pps, 8) {
        return sanity("a PPS that is empty or not a PPS NAL unit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_kinds_match() {
        for codec in Codec::ALL {
            assert_eq!(Codec::from_name(codec.as_str()), Some(codec));
            assert_eq!(Codec::from_name(codec.mime_type()), Some(codec));
        }
        assert_eq!(Codec::from_name("OPUS"), Some(Codec::Opus));
        assert_eq!(Codec::from_name("G729"), None);
        assert_eq!(Codec::Pcma.kind(), MediaKind::Audio);
        assert_eq!(Codec::Av1.kind(), MediaKind::Video);
        assert_eq!(codec_list(&[Codec::Opus, Codec::Vp8]), "opus, vp8");
    }
}

#[cfg(test)]
mod validate_tests {
    use bytes::Bytes;

    use super::*;

    fn aac(clock_rate: u32, channels: u8, asc: &'static [u8]) -> CodecParams {
        CodecParams { clock_rate, channels, config: Some(Bytes::from_static(asc)), ..CodecParams::default() }
    }

    #[test]
    fn the_issue_1_hz_aac_header_is_refused_and_ordinary_ones_pass() {
        assert_eq!(aac(44_100, 2, &[0x12, 0x10]).validate(Codec::Aac), Ok(()));
        assert_eq!(aac(48_000, 1, &[0x11, 0x88]).validate(Codec::Aac), Ok(()));
        assert_eq!(aac(8_000, 1, &[0x15, 0x88]).validate(Codec::Aac), Ok(()));
        // An explicit rate is fine when it is a standard one (48 kHz written out in 24 bits).
        assert_eq!(aac(48_000, 1, &[0x17, 0x80, 0x5d, 0xc0, 0x08]).validate(Codec::Aac), Ok(()));
        // The issue's header: the ingest states the config's rate as the clock...
        assert_eq!(
            aac(1, 1, &[0x17, 0x80, 0x00, 0x00, 0x88]).validate(Codec::Aac),
            Err(CodecConfigError::AacRate { rate: 1 })
        );
        // ... and a plausible clock does not save a config that says 1 Hz.
        assert_eq!(
            aac(8_000, 1, &[0x17, 0x80, 0x00, 0x00, 0x88]).validate(Codec::Aac),
            Err(CodecConfigError::AacRate { rate: 1 })
        );
        assert!(matches!(aac(44_100, 2, &[0x16, 0x90]).validate(Codec::Aac), Err(CodecConfigError::Asc(_))));
        assert!(matches!(aac(44_100, 2, &[0x12]).validate(Codec::Aac), Err(CodecConfigError::Asc(_))));
        // Channel configuration 0 (a PCE), object type 0, and 9 channels.
        assert_eq!(
            aac(44_100, 2, &[0x12, 0x00]).validate(Codec::Aac),
            Err(CodecConfigError::AacChannels { configuration: 0 })
        );
        assert_eq!(
            aac(44_100, 2, &[0x02, 0x10]).validate(Codec::Aac),
            Err(CodecConfigError::AacObjectType { object_type: 0 })
        );
        assert!(matches!(aac(44_100, 9, &[0x12, 0x10]).validate(Codec::Aac), Err(CodecConfigError::Channels { .. })));
        // HE-AAC with an explicit SBR extension.
        assert_eq!(aac(24_000, 2, &[0x2b, 0x11, 0x88, 0x00]).validate(Codec::Aac), Ok(()));
    }

    #[test]
    fn audio_clocks_and_channels_are_checked() {
        assert_eq!(CodecParams::for_codec(Codec::Opus).validate(Codec::Opus), Ok(()));
        let mono = CodecParams { channels: 1, ..CodecParams::for_codec(Codec::Opus) };
        assert_eq!(mono.validate(Codec::Opus), Ok(()));
        let slow = CodecParams { clock_rate: 1, ..CodecParams::for_codec(Codec::Opus) };
        assert!(matches!(slow.validate(Codec::Opus), Err(CodecConfigError::ClockRate { rate: 1, .. })));
        let surround = CodecParams { channels: 6, ..CodecParams::for_codec(Codec::Opus) };
        assert!(matches!(surround.validate(Codec::Opus), Err(CodecConfigError::Channels { channels: 6, .. })));
        assert_eq!(CodecParams::for_codec(Codec::Pcmu).validate(Codec::Pcmu), Ok(()));
        let unspecified = CodecParams { channels: 0, ..CodecParams::for_codec(Codec::Pcma) };
        assert_eq!(unspecified.validate(Codec::Pcma), Ok(()));
        let wideband = CodecParams { clock_rate: 16_000, ..CodecParams::for_codec(Codec::Pcmu) };
        assert!(wideband.validate(Codec::Pcmu).is_err());
    }

    #[test]
    fn h264_records_and_picture_sizes_are_checked() {
        let sps: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xd9];
        let pps: &[u8] = &[0x68, 0xcb, 0x83, 0xcb];
        let record = AvcConfig::from_parameter_sets(sps, pps).unwrap().to_bytes();
        let params = CodecParams { config: Some(record), ..CodecParams::for_codec(Codec::H264) };
        assert_eq!(params.validate(Codec::H264), Ok(()));
        assert_eq!(CodecParams::for_codec(Codec::H264).validate(Codec::H264), Ok(()), "no record yet is fine");
        let swapped = AvcConfig::from_parameter_sets(pps, sps).unwrap().to_bytes();
        let bad = CodecParams { config: Some(swapped), ..CodecParams::for_codec(Codec::H264) };
        assert!(matches!(bad.validate(Codec::H264), Err(CodecConfigError::AvcSanity(_))));
        let no_pps = AvcConfig { pps: vec![], ..AvcConfig::from_parameter_sets(sps, pps).unwrap() }.to_bytes();
        let bad = CodecParams { config: Some(no_pps), ..CodecParams::for_codec(Codec::H264) };
        assert!(matches!(bad.validate(Codec::H264), Err(CodecConfigError::AvcSanity(_))));
        let garbage =
            CodecParams { config: Some(Bytes::from_static(&[1, 2, 3])), ..CodecParams::for_codec(Codec::H264) };
        assert!(matches!(garbage.validate(Codec::H264), Err(CodecConfigError::Avc(_))));
        let huge = CodecParams { width: Some(100_000), height: Some(2), ..CodecParams::for_codec(Codec::Vp8) };
        assert!(matches!(huge.validate(Codec::Vp8), Err(CodecConfigError::PictureSize { .. })));
        let audio_clock = CodecParams { clock_rate: 48_000, ..CodecParams::for_codec(Codec::Vp9) };
        assert!(audio_clock.validate(Codec::Vp9).is_err());
    }
}
