//! FLV tag bodies as RTMP carries them in audio and video messages: parsing the headers of what a
//! publisher sends (legacy AVC and AAC, and recognising Enhanced RTMP's FourCC headers so they can
//! be refused by name), and building the tags a player receives. (AudioSpecificConfigs are read
//! by `junction_core::aac`.)
//!
//! Written by hand: these are a handful of fixed header bytes (FLV spec v10.1 annex E, Enhanced
//! RTMP v1/v2) and a 2-byte bit field; the FLV crates on crates.io parse whole files, not tags.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV `CodecID` of AVC (H.264).
pub const VIDEO_CODEC_AVC: u8 = 7;
/// FLV `SoundFormat` of AAC.
pub const SOUND_FORMAT_AAC: u8 = 10;
/// FLV `SoundFormat` that Enhanced RTMP v2 uses to announce a FourCC audio header.
const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// FLV `FrameType` of a video info/command frame, which carries no picture.
const FRAME_TYPE_COMMAND: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("{what} is {len} bytes, too short")]
    Truncated { what: &'static str, len: usize },
    #[error("video codec {0} is not supported; publish H.264 (AVC)")]
    UnsupportedVideo(String),
    #[error("audio format {0} is not supported; publish AAC")]
    UnsupportedAudio(String),
}

/// The header of a video tag from a publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCPacketType 0: an AVCDecoderConfigurationRecord follows.
    AvcSequenceHeader { record: Bytes },
    /// AVCPacketType 1: length-prefixed NAL units of one access unit, presented
    /// `composition_ms` after its decode timestamp.
    AvcNalus { keyframe: bool, composition_ms: i32, data: Bytes },
    /// AVC end of sequence, or a video info/command frame: nothing to forward.
    Ignored,
}

/// The names of the video codecs FLV and Enhanced RTMP can announce, for error messages.
fn legacy_video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 with alpha".into(),
        6 => "Screen video v2".into(),
        12 => "HEVC (non-standard codec id 12)".into(),
        other => format!("FLV codec id {other}"),
    }
}

fn fourcc_name(fourcc: &[u8]) -> String {
    let text: String = fourcc.iter().map(|b| if b.is_ascii_graphic() { *b as char } else { '?' }).collect();
    let name = match &text[..] {
        "hvc1" => "HEVC",
        "av01" => "AV1",
        "vp09" => "VP9",
        "avc1" => "H.264 in Enhanced RTMP",
        "Opus" => "Opus",
        "fLaC" => "FLAC",
        "ac-3" => "AC-3",
        "ec-3" => "E-AC-3",
        ".mp3" => "MP3",
        "mp4a" => "AAC in Enhanced RTMP",
        _ => "unknown",
    };
    format!("{name} (Enhanced RTMP FourCC {text:?})")
}

/// Parses the body of an RTMP video message.
pub fn parse_video(data: &Bytes) -> Result<VideoTag, FlvError> {
    let Some(&first) = data.first() else {
        return Err(FlvError::Truncated { what: "video tag", len: 0 });
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, then the packet type, then a FourCC naming the codec.
        let fourcc = data.get(1..5).unwrap_or(&[]);
        return Err(FlvError::UnsupportedVideo(fourcc_name(fourcc)));
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(VideoTag::Ignored);
    }
    if codec != VIDEO_CODEC_AVC {
        return Err(FlvError::UnsupportedVideo(legacy_video_codec_name(codec)));
    }
    let Some(&[packet_type, c0, c1, c2]) = data.get(1..5) else {
        return Err(FlvError::Truncated { what: "AVC video tag", len: data.len() });
    };
    let composition_ms = i24(c0, c1, c2);
    let body = data.slice(5..);
    match packet_type {
        0 => Ok(VideoTag::AvcSequenceHeader { record: body }),
        1 => Ok(VideoTag::AvcNalus { keyframe: frame_type == 1, composition_ms, data: body }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// A signed 24-bit big-endian integer (the FLV `CompositionTime`).
fn i24(a: u8, b: u8, c: u8) -> i32 {
    (i32::from_be_bytes([a, b, c, 0])) >> 8
}

/// The header of an audio tag from a publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioTag {
    /// AACPacketType 0: an AudioSpecificConfig follows.
    AacSequenceHeader { config: Bytes },
    /// AACPacketType 1: one raw AAC access unit.
    AacRaw { data: Bytes },
}

fn sound_format_name(format: u8) -> String {
    match format {
        0 => "linear PCM (platform endian)".into(),
        1 => "ADPCM".into(),
        2 => "MP3".into(),
        3 => "linear PCM (little endian)".into(),
        4..=6 => "Nellymoser".into(),
        7 => "G.711 A-law".into(),
        8 => "G.711 mu-law".into(),
        11 => "Speex".into(),
        14 => "MP3 8 kHz".into(),
        15 => "device-specific sound".into(),
        other => format!("FLV sound format {other}"),
    }
}

/// Parses the body of an RTMP audio message.
pub fn parse_audio(data: &Bytes) -> Result<AudioTag, FlvError> {
    let Some(&first) = data.first() else {
        return Err(FlvError::Truncated { what: "audio tag", len: 0 });
    };
    let format = first >> 4;
    if format == SOUND_FORMAT_EX_HEADER {
        let fourcc = data.get(1..5).unwrap_or(&[]);
        return Err(FlvError::UnsupportedAudio(fourcc_name(fourcc)));
    }
    if format != SOUND_FORMAT_AAC {
        return Err(FlvError::UnsupportedAudio(sound_format_name(format)));
    }
    let packet_type = *data.get(1).ok_or(FlvError::Truncated { what: "AAC audio tag", len: data.len() })?;
    let body = data.slice(2..);
    if packet_type == 0 {
        Ok(AudioTag::AacSequenceHeader { config: body })
    } else {
        Ok(AudioTag::AacRaw { data: body })
    }
}

/// A video tag for a player: AVC sequence header (`record`) or NAL units in AVCC form.
pub fn avc_sequence_header(record: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + record.len());
    out.put_slice(&[0x10 | VIDEO_CODEC_AVC, 0, 0, 0, 0]);
    out.put_slice(record);
    out.freeze()
}

pub fn avc_nalus(keyframe: bool, composition_ms: i32, avcc: &[u8]) -> Bytes {
    let frame_type = if keyframe { 0x10 } else { 0x20 };
    let cts = composition_ms.clamp(-(1 << 23), (1 << 23) - 1).to_be_bytes();
    let mut out = BytesMut::with_capacity(5 + avcc.len());
    out.put_slice(&[frame_type | VIDEO_CODEC_AVC, 1, cts[1], cts[2], cts[3]]);
    out.put_slice(avcc);
    out.freeze()
}

/// The first byte of every AAC audio tag: AAC, and the fixed "44 kHz, 16-bit, stereo" flags the
/// FLV spec requires for AAC (the real parameters are in the AudioSpecificConfig).
const AAC_TAG_FLAGS: u8 = (SOUND_FORMAT_AAC << 4) | 0x0f;

pub fn aac_sequence_header(config: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + config.len());
    out.put_slice(&[AAC_TAG_FLAGS, 0]);
    out.put_slice(config);
    out.freeze()
}

pub fn aac_raw(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + frame.len());
    out.put_slice(&[AAC_TAG_FLAGS, 1]);
    out.put_slice(frame);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_tags_parse_with_signed_composition_time() {
        let tag = Bytes::from_static(&[0x17, 1, 0xff, 0xff, 0xde, 9, 9]);
        assert_eq!(
            parse_video(&tag).unwrap(),
            VideoTag::AvcNalus { keyframe: true, composition_ms: -34, data: Bytes::from_static(&[9, 9]) }
        );
        let inter = avc_nalus(false, 67, &[1, 2]);
        assert_eq!(
            parse_video(&inter).unwrap(),
            VideoTag::AvcNalus { keyframe: false, composition_ms: 67, data: Bytes::from_static(&[1, 2]) }
        );
        let header = avc_sequence_header(&[1, 0x64]);
        assert_eq!(
            parse_video(&header).unwrap(),
            VideoTag::AvcSequenceHeader { record: Bytes::from_static(&[1, 0x64]) }
        );
        assert_eq!(parse_video(&Bytes::from_static(&[0x17, 2, 0, 0, 0])).unwrap(), VideoTag::Ignored);
    }

    #[test]
    fn other_video_codecs_and_enhanced_rtmp_are_named_in_the_refusal() {
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 0]);
        let err = parse_video(&hevc).unwrap_err();
        assert_eq!(
            err.to_string(),
            "video codec HEVC (Enhanced RTMP FourCC \"hvc1\") is not supported; publish H.264 (AVC)"
        );
        let av1 = Bytes::from_static(&[0x91, b'a', b'v', b'0', b'1']);
        assert!(parse_video(&av1).unwrap_err().to_string().contains("AV1"));
        let vp6 = Bytes::from_static(&[0x14, 0]);
        assert!(parse_video(&vp6).unwrap_err().to_string().contains("VP6"));
        assert!(matches!(parse_video(&Bytes::new()), Err(FlvError::Truncated { .. })));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x17, 1])), Err(FlvError::Truncated { .. })));
    }

    #[test]
    fn aac_tags_round_trip_and_other_audio_is_refused() {
        let raw = aac_raw(&[1, 2, 3]);
        assert_eq!(parse_audio(&raw).unwrap(), AudioTag::AacRaw { data: Bytes::from_static(&[1, 2, 3]) });
        let header = aac_sequence_header(&[0x12, 0x10]);
        assert_eq!(
            parse_audio(&header).unwrap(),
            AudioTag::AacSequenceHeader { config: Bytes::from_static(&[0x12, 0x10]) }
        );
        let mp3 = Bytes::from_static(&[0x2f, 0xff]);
        assert_eq!(parse_audio(&mp3).unwrap_err().to_string(), "audio format MP3 is not supported; publish AAC");
        let opus = Bytes::from_static(&[0x90, b'O', b'p', b'u', b's']);
        assert!(parse_audio(&opus).unwrap_err().to_string().contains("Opus"));
        assert!(matches!(parse_audio(&Bytes::from_static(&[0xaf])), Err(FlvError::Truncated { .. })));
    }
}
