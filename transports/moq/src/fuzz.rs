//! Entry point for the fuzz targets in `fuzz/` (cargo feature `fuzzing`; not part of the API):
//! what a MoQ publisher's namespace holds, read as [`crate::ingest`] reads it — the `.catalog`
//! JSON, the CMAF init segment it names, then fragments of each media track into engine frames
//! (the same functions the ingest task calls; only the MoQ object delivery is left out) — and
//! what a subscriber's broadcast reads from video keyframes: the VP8/VP9 frame headers and AV1
//! sequence headers its `vp08`/`vp09`/`av01` sample entries come from, written into an init
//! segment that must parse back the same.
#![cfg(feature = "fuzzing")]
#![doc(hidden)]

use bytes::Bytes;

use crate::MoqConfig;
use crate::codecs;
use crate::ingest::{fragment_frames, read_catalog, trak_for};
use junction_cmaf::{ParsedTrack, TrackCodec, parse_init};

/// Ingests `fragments` for the tracks `catalog` picks out of `init`. When the catalog cannot be
/// read (the network path would stop there), every supported trak gets the fragments, so the
/// fragment parser is reached either way. Returns the number of frames produced.
pub fn cmaf_ingest(catalog: &[u8], init: &[u8], fragments: &[&[u8]]) -> usize {
    let Ok(parsed) = parse_init(init) else { return 0 };
    let chosen: Vec<&ParsedTrack> = match read_catalog(catalog) {
        Ok((catalog, _init_name)) => catalog
            .tracks
            .iter()
            .enumerate()
            .filter_map(|(index, entry)| trak_for(index, &entry.name, &parsed))
            .collect(),
        Err(_) => parsed.iter().collect(),
    };
    for fragment in fragments {
        keyframe_configs(fragment);
    }
    let mut frames = 0;
    for found in chosen {
        let ParsedTrack::Supported(track) = found else { continue };
        let _params = codecs::publish_params(track);
        let avc = match &track.codec {
            TrackCodec::H264 { avc, .. } => Some(avc.clone()),
            _ => None,
        };
        for fragment in fragments {
            if let Ok(out) = fragment_frames(
                &Bytes::copy_from_slice(fragment),
                track,
                avc.as_ref(),
                MoqConfig::default().max_samples_per_fragment,
            ) {
                frames += out.len();
                for frame in out.iter().filter(|f| f.keyframe) {
                    keyframe_configs(&frame.payload);
                }
            }
        }
    }
    frames
}

/// Reads `keyframe` as each video codec's keyframe, as egress does; a configuration it gives
/// must survive an init segment round trip.
fn keyframe_configs(keyframe: &[u8]) {
    use junction_core::{Codec, CodecParams};
    let _ = junction_cmaf::av1_sample(&Bytes::copy_from_slice(keyframe));
    for codec in [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1] {
        let Some(config) = codecs::video_config(codec, keyframe, &CodecParams::for_codec(codec)) else { continue };
        let _ = config.codec_string();
        let track = junction_cmaf::InitTrack {
            id: 1,
            timescale: 90_000,
            codec: config,
            defaults: junction_cmaf::SampleDefaults::default(),
        };
        let init = junction_cmaf::build_init(std::slice::from_ref(&track)).expect("an init segment of a parsed config");
        let parsed = parse_init(&init).expect("our own init segment parses");
        assert_eq!(
            parsed,
            vec![ParsedTrack::Supported(track)],
            "a {codec} configuration does not survive the init segment"
        );
    }
}
