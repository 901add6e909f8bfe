//! MoQ's side of codecs: which codecs a session takes, the codec strings of the room catalog,
//! and the parameters a track published from MoQ gets. What a track is in CMAF (its decoder
//! configuration, timescale, samples) is `junction_cmaf`'s, shared with recordings.

use junction_core::h264::AvcConfig;
use junction_core::{Codec, CodecParams, TrackInfo};

use junction_cmaf::{InitTrack, TrackCodec};

pub use junction_cmaf::{CARRIED_AUDIO, CARRIED_VIDEO, audio_config, timescale, video_config};

/// The codecs a MoQ session takes: every carried codec, or the one its connect URL asked for
/// per kind (`?video=h264&audio=aac` for players that only read `avc1`/`mp4a`, as stock
/// `moq-sub` does); anything else is transcoded by the engine when it can.
pub fn accepted(video: Option<Codec>, audio: Option<Codec>) -> Vec<Codec> {
    let mut codecs: Vec<Codec> = video.map_or_else(|| CARRIED_VIDEO.to_vec(), |codec| vec![codec]);
    codecs.extend(audio.map_or_else(|| CARRIED_AUDIO.to_vec(), |codec| vec![codec]));
    codecs
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
