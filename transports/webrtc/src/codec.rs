//! Codecs on the wire versus codecs in the engine: which payload formats Junction negotiates,
//! how a negotiated payload type becomes a track's [`Codec`] and [`CodecParams`], and which
//! payload type an engine frame goes out with. Payload type numbers are never assumed: they
//! are whatever the SDP negotiated.

use std::cmp::Reverse;

use junction_core::{Codec, CodecParams};
use str0m::format::{Codec as WireCodec, PayloadParams};
use str0m::media::Pt;
use str0m::{Rtc, RtcConfig};

/// H.264 profiles offered and accepted, all with packetization-mode 1 (the only mode browsers
/// send in practice): constrained baseline, baseline, main, constrained high, high — level 3.1.
/// The payload type numbers are only defaults for our own offers; answers use the offerer's.
const H264_PROFILES: &[(u8, u8, u32)] =
    &[(108, 109, 0x42e01f), (127, 121, 0x42001f), (123, 119, 0x4d001f), (112, 113, 0x640c1f), (114, 115, 0x64001f)];

/// The codecs every session negotiates: Opus, G.711, VP8, VP9, H.264 and AV1, with RTX for
/// video (NACK), PLI/FIR and transport-wide congestion control (str0m's defaults). Audio sender
/// reports go out every second like video's (str0m's default is 5 s): a receiver needs two of
/// each stream before it can line audio up with video. str0m reports each stream's loss, round
/// trip and jitter every second, for the stats API.
///
/// str0m lists an answer's codecs in this configured order, and a browser sends the first
/// codec of the answer: `prefer_video` goes first among the video codecs, which is how a room
/// steers its publishers (to H.264 while it has RTMP players, say). Without it VP8 leads.
pub(crate) fn rtc_builder(prefer_video: Option<Codec>) -> RtcConfig {
    let mut config = Rtc::builder()
        .set_rtcp_report_interval_audio(std::time::Duration::from_secs(1))
        .set_stats_interval(Some(std::time::Duration::from_secs(1)))
        .clear_codecs()
        .enable_opus(true, false)
        .enable_pcmu(true, false)
        .enable_pcma(true, false);
    let mut video = [Codec::Vp8, Codec::Vp9, Codec::Av1, Codec::H264];
    if let Some(first) = prefer_video {
        video.sort_by_key(|codec| *codec != first);
    }
    for codec in video {
        config = match codec {
            Codec::Vp8 => config.enable_vp8(true),
            Codec::Vp9 => config.enable_vp9(true),
            Codec::Av1 => config.enable_av1(true),
            _ => {
                for (pt, rtx, profile) in H264_PROFILES {
                    config.codec_config().add_h264((*pt).into(), Some((*rtx).into()), true, *profile);
                }
                config
            }
        };
    }
    config
}

/// The engine codec a wire codec carries, if the engine knows it.
pub(crate) fn from_wire(codec: WireCodec) -> Option<Codec> {
    Some(match codec {
        WireCodec::Opus => Codec::Opus,
        WireCodec::PCMU => Codec::Pcmu,
        WireCodec::PCMA => Codec::Pcma,
        WireCodec::H264 => Codec::H264,
        WireCodec::Vp8 => Codec::Vp8,
        WireCodec::Vp9 => Codec::Vp9,
        WireCodec::Av1 => Codec::Av1,
        _ => return None,
    })
}

/// A track's parameters from the payload type it was negotiated with.
pub(crate) fn params_of(payload: &PayloadParams) -> CodecParams {
    let spec = payload.spec();
    let fmtp = spec.format.to_string();
    CodecParams {
        clock_rate: spec.clock_rate.get(),
        channels: spec.channels.unwrap_or(0),
        fmtp: (!fmtp.is_empty()).then_some(fmtp),
        ..CodecParams::default()
    }
}

/// The engine codecs among negotiated payload types, in negotiation order, without repeats.
pub(crate) fn codecs_of<'a>(payloads: impl IntoIterator<Item = &'a PayloadParams>) -> Vec<Codec> {
    let mut codecs = Vec::new();
    for payload in payloads {
        if let Some(codec) = from_wire(payload.spec().codec)
            && !codecs.contains(&codec)
        {
            codecs.push(codec);
        }
    }
    codecs
}

/// The payload type a frame of `codec` goes out with on an m-line that negotiated `payloads`.
///
/// H.264 prefers packetization-mode 1 and the same profile as the source (`fmtp` carries its
/// profile-level-id); decoders accept other profiles too, so any H.264 payload type will do
/// when none matches.
pub(crate) fn pick_pt<'a>(
    payloads: impl IntoIterator<Item = &'a PayloadParams>,
    codec: Codec,
    fmtp: Option<&str>,
) -> Option<Pt> {
    let wanted_profile = fmtp.and_then(profile_level_id).map(|id| id >> 8);
    payloads
        .into_iter()
        .filter(|p| from_wire(p.spec().codec) == Some(codec))
        // The first of the best: negotiation order is the peer's preference.
        .min_by_key(|p| {
            let format = p.spec().format;
            let mode_one = format.packetization_mode == Some(1);
            let same_profile = wanted_profile.is_some() && format.profile_level_id.map(|id| id >> 8) == wanted_profile;
            (Reverse(codec == Codec::H264 && mode_one), Reverse(same_profile))
        })
        .map(|p| p.pt())
}

/// `profile-level-id` from an fmtp line, as a number (`42e01f` -> 0x42e01f).
fn profile_level_id(fmtp: &str) -> Option<u32> {
    fmtp.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == "profile-level-id").then(|| u32::from_str_radix(value.trim(), 16).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<PayloadParams> {
        let mut builder = rtc_builder(None);
        builder.codec_config().params().to_vec()
    }

    #[test]
    fn a_preferred_video_codec_leads_the_video_codecs() {
        let mut builder = rtc_builder(Some(Codec::H264));
        assert_eq!(
            codecs_of(builder.codec_config().params()),
            [Codec::Opus, Codec::Pcmu, Codec::Pcma, Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1]
        );
        let mut builder = rtc_builder(Some(Codec::Av1));
        assert_eq!(codecs_of(builder.codec_config().params())[3..], [Codec::Av1, Codec::Vp8, Codec::Vp9, Codec::H264]);
    }

    #[test]
    fn every_browser_codec_is_configured_and_h264_is_mode_one_only() {
        let params = configured();
        assert_eq!(
            codecs_of(&params),
            [Codec::Opus, Codec::Pcmu, Codec::Pcma, Codec::Vp8, Codec::Vp9, Codec::Av1, Codec::H264]
        );
        let h264: Vec<_> = params.iter().filter(|p| p.spec().codec == WireCodec::H264).collect();
        assert_eq!(h264.len(), 5);
        assert!(h264.iter().all(|p| p.spec().format.packetization_mode == Some(1)));
    }

    #[test]
    fn frames_go_out_on_the_matching_payload_type() {
        let params = configured();
        let opus = pick_pt(&params, Codec::Opus, None).unwrap();
        assert_eq!(*opus, 111);
        let high = pick_pt(&params, Codec::H264, Some("packetization-mode=1;profile-level-id=64001f")).unwrap();
        let high_params = params.iter().find(|p| p.pt() == high).unwrap();
        assert_eq!(high_params.spec().format.profile_level_id, Some(0x64001f));
        let baseline = pick_pt(&params, Codec::H264, Some("profile-level-id=42e01f")).unwrap();
        assert_eq!(params.iter().find(|p| p.pt() == baseline).unwrap().spec().format.profile_level_id, Some(0x42e01f));
        assert!(pick_pt(&params, Codec::H264, None).is_some(), "no fmtp: any mode-1 H.264 will do");
        assert_eq!(pick_pt(&params, Codec::Aac, None), None);
    }

    #[test]
    fn track_parameters_come_from_the_negotiated_payload() {
        let params = configured();
        let opus = params.iter().find(|p| p.spec().codec == WireCodec::Opus).unwrap();
        let track = params_of(opus);
        assert_eq!((track.clock_rate, track.channels), (48_000, 2));
        assert!(track.fmtp.unwrap().contains("useinbandfec=1"));
        assert_eq!(profile_level_id("level-asymmetry-allowed=1; profile-level-id=640c1f"), Some(0x640c1f));
        assert_eq!(profile_level_id("profile-level-id=zz"), None);
    }
}
