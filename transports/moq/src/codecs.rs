//! Junction's codec parameters on one side, CMAF decoder configurations and catalog codec
//! strings on the other: which codecs MoQ carries (H.264, VP8, VP9, AV1, Opus, AAC), a video
//! track's configuration from its keyframes (an H.264 SPS/PPS, a VP8/VP9 frame
//! header, an AV1 sequence header), and the parameters a track published from MoQ gets.

use junction_core::h264::AvcConfig;
use junction_core::{Codec, CodecParams, TrackInfo};

use junction_cmaf::{InitTrack, TrackCodec};

/// Video codecs Junction puts in CMAF for MoQ subscribers as published.
pub const CARRIED_VIDEO: [Codec; 4] = [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1];
/// Audio codecs Junction puts in CMAF as published; G.711 is transcoded by the engine.
pub const CARRIED_AUDIO: [Codec; 2] = [Codec::Opus, Codec::Aac];

/// The codecs a MoQ session takes: every carried codec, or the one its connect URL asked for
/// per kind (`?video=h264&audio=aac` for players that only read `avc1`/`mp4a`, as stock
/// `moq-sub` does); anything else is transcoded by the engine when it can.
pub fn accepted(video: Option<Codec>, audio: Option<Codec>) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = video.map_or_else(|| CARRIED_VIDEO.to_vec(), |codec| vec![codec]);
    codecs.extend(audio.map_or_else(|| CARRIED_AUDIO.to_vec(), |codec| vec![codec]));
    codecs
}

/// The decoder configuration a video keyframe gives a track in `codec`, if it carries one.
pub fn video_config(codec: Codec, keyframe: &[u8], params: &CodecParams) -> Option<TrackCodec> {
    match codec {
        Codec::H264 => {
            let (Some(sps), Some(pps)) = junction_core::h264::parameter_sets(keyframe) else { return None };
            h264_config(sps, pps, params)
        }
        Codec::Vp8 => {
            let (width, height) = junction_cmaf::vp8_keyframe_size(keyframe)?;
            Some(TrackCodec::Vp8 { config: junction_cmaf::vp8_config(width, height), width, height })
        }
        Codec::Vp9 => {
            let (config, width, height) = junction_cmaf::vp9_keyframe_config(keyframe)?;
            Some(TrackCodec::Vp9 { config, width, height })
        }
        Codec::Av1 => {
            let (config, width, height) = junction_cmaf::av1_sequence_config(keyframe)?;
            Some(TrackCodec::Av1 { config, width, height })
        }
        _ => None,
    }
}

/// Opus pre-skip for 48 kHz streams whose real value is unknown (libopus's usual encoder delay).
const OPUS_PRE_SKIP: u16 = 312;

/// The decoder configuration of an audio track, from its parameters alone; `None` for video,
/// which needs an SPS/PPS from the stream.
pub fn audio_config(codec: Codec, params: &CodecParams) -> Option<TrackCodec> {
    match codec {
        Codec::Opus => Some(TrackCodec::Opus {
            channels: u16::from(params.channels.max(1)),
            pre_skip: OPUS_PRE_SKIP,
            input_sample_rate: 48_000,
        }),
        Codec::Aac => {
            let sample_rate = if params.clock_rate > 0 { params.clock_rate } else { 48_000 };
            let channels = params.channels.max(1);
            let config = params.config.clone().unwrap_or_else(|| junction_core::aac::lc_config(sample_rate, channels));
            Some(TrackCodec::Aac { config, sample_rate, channels: u16::from(channels) })
        }
        _ => None,
    }
}

/// The decoder configuration of an H.264 track from an SPS and a PPS seen in its stream.
pub fn h264_config(sps: &[u8], pps: &[u8], params: &CodecParams) -> Option<TrackCodec> {
    let avc = AvcConfig::from_parameter_sets(sps, pps)?;
    let (width, height) =
        junction_cmaf::h264_dimensions(sps).or_else(|| params.width.zip(params.height)).unwrap_or((0, 0));
    Some(TrackCodec::H264 {
        avc,
        width: width.min(u32::from(u16::MAX)) as u16,
        height: height.min(u32::from(u16::MAX)) as u16,
    })
}

/// The timescale a carried codec's CMAF track uses.
pub fn timescale(codec: Codec, params: &CodecParams) -> u32 {
    match codec {
        Codec::Aac if params.clock_rate > 0 => params.clock_rate,
        Codec::Opus => 48_000,
        other => other.default_clock_rate(),
    }
}

/// The codec string a room catalog lists for a track, when MoQ carries its codec.
pub fn catalog_codec(track: &TrackInfo) -> Option<String> {
    match track.codec {
        Codec::H264 => {
            let from_config = track.params.config.as_ref().and_then(|c| AvcConfig::parse(c).ok());
            let profile_level = track
                .params
                .fmtp
                .as_deref()
                .and_then(|fmtp| fmtp.split(';').find_map(|kv| kv.trim().strip_prefix("profile-level-id=")));
            Some(match (from_config, profile_level) {
                (Some(avc), _) => avc.codec_string(),
                (None, Some(plid)) if plid.len() == 6 => format!("avc1.{}", plid.to_ascii_lowercase()),
                _ => "avc1".to_owned(),
            })
        }
        // The exact strings (profile, level, depth) come with the peer's init segment, once a
        // keyframe was seen; the room catalog names the codec.
        Codec::Vp8 => Some("vp08".to_owned()),
        Codec::Vp9 => Some("vp09".to_owned()),
        Codec::Av1 => Some("av01".to_owned()),
        Codec::Opus => Some("opus".to_owned()),
        Codec::Aac => audio_config(Codec::Aac, &track.params).map(|config| config.codec_string()),
        Codec::Pcmu | Codec::Pcma => None,
    }
}

/// What a track ingested from a CMAF init segment is published into the room with.
pub fn publish_params(track: &InitTrack) -> CodecParams {
    let codec = track.codec.codec();
    let mut params = CodecParams::for_codec(codec);
    match &track.codec {
        TrackCodec::H264 { avc, width, height } => {
            params.clock_rate = 90_000;
            params.config = Some(avc.to_bytes());
            params.fmtp = Some(format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
                avc.profile_level_id()
            ));
            params.width = (*width > 0).then_some(u32::from(*width));
            params.height = (*height > 0).then_some(u32::from(*height));
        }
        TrackCodec::Vp8 { width, height, .. }
        | TrackCodec::Vp9 { width, height, .. }
        | TrackCodec::Av1 { width, height, .. } => {
            params.clock_rate = 90_000;
            params.width = (*width > 0).then_some(u32::from(*width));
            params.height = (*height > 0).then_some(u32::from(*height));
        }
        // Channel counts as the init segment states them (saturated, never wrapped), for
        // validation to judge.
        TrackCodec::Aac { config, sample_rate, channels } => {
            params.clock_rate = *sample_rate;
            params.channels = (*channels).min(u16::from(u8::MAX)) as u8;
            params.config = Some(config.clone());
        }
        TrackCodec::Opus { channels, .. } => {
            params.clock_rate = 48_000;
            params.channels = (*channels).min(u16::from(u8::MAX)) as u8;
            params.fmtp = Some("minptime=10;useinbandfec=1".into());
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aac_configs_are_synthesised_from_rate_and_channels() {
        let mut params = CodecParams::for_codec(Codec::Aac);
        params.clock_rate = 44_100;
        assert_eq!(audio_config(Codec::Aac, &params).unwrap().codec_string(), "mp4a.40.2");
        assert!(audio_config(Codec::H264, &params).is_none());
    }

    #[test]
    fn catalog_codec_strings_come_from_config_or_fmtp() {
        let mut params = CodecParams::for_codec(Codec::H264);
        params.fmtp = Some("packetization-mode=1;profile-level-id=42E01F".into());
        let track = TrackInfo {
            id: junction_core::TrackId::generate(),
            peer: junction_core::PeerId::new("a").unwrap(),
            name: "camera".into(),
            kind: junction_core::MediaKind::Video,
            source: junction_core::TrackSource::Camera,
            codec: Codec::H264,
            params,
            layers: Vec::new(),
            muted: false,
        };
        assert_eq!(catalog_codec(&track).as_deref(), Some("avc1.42e01f"));
        let vp8 = TrackInfo { codec: Codec::Vp8, ..track.clone() };
        assert_eq!(catalog_codec(&vp8).as_deref(), Some("vp08"));
        let pcmu = TrackInfo { codec: Codec::Pcmu, ..track };
        assert_eq!(catalog_codec(&pcmu), None);
    }

    #[test]
    fn a_session_takes_every_carried_codec_or_the_one_it_asked_for() {
        assert_eq!(accepted(None, None).len(), 6);
        assert_eq!(accepted(Some(Codec::H264), Some(Codec::Aac)), vec![Codec::H264, Codec::Aac]);
        assert_eq!(accepted(Some(Codec::H264), None), vec![Codec::H264, Codec::Opus, Codec::Aac]);
    }
}
