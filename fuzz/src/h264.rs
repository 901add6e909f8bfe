//! H.264 parsing (core/src/h264.rs), used by RTMP ingest, MoQ ingest and the WebRTC plane:
//! Annex B NAL splitting, AVCC length-prefixed NAL splitting (1, 2 and 4-byte lengths),
//! the AVCDecoderConfigurationRecord (`avcC`, FLV sequence headers), AVCC access units to
//! Annex B frames with parameter sets in front of IDRs, keyframe detection; and the picture
//! size the stats API reads from a keyframe of each video codec (`junction_cmaf::picture_size`).
//!
//! Input: an `avcC` record, then access units, separated by [`crate::SEPARATOR`]. Checked: a
//! record that parses writes back into one that parses to the same thing, and so does a record
//! built from the parameter sets of an Annex B frame.

use junction_core::Codec;
use junction_core::h264::{self, AvcConfig};

pub fn run(data: &[u8]) {
    let mut records = crate::records(data);
    let record = records.next().unwrap_or_default();
    let config = AvcConfig::parse(record).ok();
    if let Some(config) = &config {
        let again = AvcConfig::parse(&config.to_bytes());
        assert_eq!(again.as_ref(), Ok(config), "an avcC record does not survive writing");
        let _ = (config.codec_string(), config.parameter_sets_annexb());
    }
    for unit in records {
        for nal in h264::annexb_nals(unit) {
            let _ = h264::nal_type(nal);
        }
        let _ = h264::is_keyframe(unit);
        for codec in [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1] {
            let _ = junction_cmaf::picture_size(codec, unit);
        }
        if let (Some(sps), Some(pps)) = h264::parameter_sets(unit)
            && let Some(built) = AvcConfig::from_parameter_sets(sps, pps)
            && sps.len() <= usize::from(u16::MAX)
            && pps.len() <= usize::from(u16::MAX)
        {
            assert_eq!(AvcConfig::parse(&built.to_bytes()).as_ref(), Ok(&built), "a built avcC does not parse back");
        }
        for length_size in [1, 2, 4] {
            let _ = h264::avcc_nals(unit, length_size);
        }
        if let Some(config) = &config
            && let Ok(annexb) = h264::avcc_to_annexb_frame(unit, config)
        {
            let _ = h264::is_keyframe(&annexb);
        }
    }
}
