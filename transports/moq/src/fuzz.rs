//! Entry point for the fuzz targets in `fuzz/` (cargo feature `fuzzing`; not part of the API):
//! what a MoQ publisher's namespace holds, read as [`crate::ingest`] reads it — the `.catalog`
//! JSON, the CMAF init segment it names, then fragments of each media track into engine frames
//! (the same functions the ingest task calls; only the MoQ object delivery is left out).
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
            }
        }
    }
    frames
}
