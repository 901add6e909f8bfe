//! Media kinds and codecs: their clock rates, names on the wire (SDP encoding names, MIME types)
//! and which kind of media each one carries.

use std::fmt;

use serde::{Deserialize, Serialize};

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
