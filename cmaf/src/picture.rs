//! The picture size a video keyframe carries, for every video codec Junction takes: from an
//! H.264 SPS (h264-reader does the parsing), a VP8 or VP9 frame header, an AV1 sequence header.

use junction_core::Codec;

use crate::vpx_av1::{av1_sequence_config, vp8_keyframe_size, vp9_keyframe_config};

/// The picture size (width, height) of a keyframe in `codec` (H.264 in Annex B with its
/// parameter sets in band); `None` for audio, for frames that carry none, and for malformed ones.
pub fn picture_size(codec: Codec, keyframe: &[u8]) -> Option<(u32, u32)> {
    let (width, height) = match codec {
        Codec::H264 => return h264_dimensions(junction_core::h264::parameter_sets(keyframe).0?),
        Codec::Vp8 => vp8_keyframe_size(keyframe)?,
        Codec::Vp9 => vp9_keyframe_config(keyframe).map(|(_, w, h)| (w, h))?,
        Codec::Av1 => av1_sequence_config(keyframe).map(|(_, w, h)| (w, h))?,
        _ => return None,
    };
    Some((u32::from(width), u32::from(height)))
}

/// The picture size an H.264 SPS (with its NAL header byte) describes.
pub fn h264_dimensions(sps: &[u8]) -> Option<(u32, u32)> {
    use h264_reader::nal::{Nal, RefNal, sps::SeqParameterSet};
    if sps.is_empty() {
        return None;
    }
    let nal = RefNal::new(sps, &[], true);
    SeqParameterSet::from_bits(nal.rbsp_bits()).ok()?.pixel_dimensions().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SPS;

    #[test]
    fn sps_gives_the_picture_size() {
        assert_eq!(h264_dimensions(SPS), Some((320, 240)));
        assert_eq!(h264_dimensions(&[0x67]), None);
        assert_eq!(h264_dimensions(&[]), None);
    }

    #[test]
    fn an_annex_b_keyframe_gives_its_sps_picture_size_and_garbage_gives_none() {
        let mut keyframe = vec![0, 0, 0, 1];
        keyframe.extend_from_slice(SPS);
        keyframe.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0, 0, 0, 1, 0x65, 0x88, 0x84]);
        assert_eq!(picture_size(Codec::H264, &keyframe), Some((320, 240)));
        assert_eq!(picture_size(Codec::H264, &[0, 0, 1, 0x65, 1, 2]), None);
        assert_eq!(picture_size(Codec::Vp8, &[1, 2, 3]), None);
        assert_eq!(picture_size(Codec::Opus, &keyframe), None);
    }
}
