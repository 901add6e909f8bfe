//! Makes every H.264 keyframe decodable on its own, as the engine's frame convention requires
//! (Annex B, SPS and PPS in front of every IDR): remembers the last parameter sets a stream
//! carried and puts them in front of IDR frames that arrive without them. Browsers send the
//! parameter sets with each IDR already; some encoders send them only once.

use bytes::{Bytes, BytesMut};
use junction_core::h264::{self, NAL_IDR, NAL_PPS, NAL_SPS};

#[derive(Debug, Default)]
pub(crate) struct ParameterSets {
    sps: Option<Bytes>,
    pps: Option<Bytes>,
}

/// One access unit after the fix-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct FixedFrame {
    pub(crate) payload: Bytes,
    /// An IDR with its parameter sets: a decoder can start here.
    pub(crate) keyframe: bool,
}

impl ParameterSets {
    /// Takes one Annex B access unit as depacketised.
    pub(crate) fn fix(&mut self, annexb: Bytes) -> FixedFrame {
        let (mut has_sps, mut has_pps, mut has_idr) = (false, false, false);
        for nal in h264::annexb_nals(&annexb) {
            match h264::nal_type(nal) {
                NAL_SPS => {
                    has_sps = true;
                    self.sps = Some(Bytes::copy_from_slice(nal));
                }
                NAL_PPS => {
                    has_pps = true;
                    self.pps = Some(Bytes::copy_from_slice(nal));
                }
                NAL_IDR => has_idr = true,
                _ => {}
            }
        }
        if !has_idr {
            return FixedFrame { payload: annexb, keyframe: false };
        }
        if has_sps && has_pps {
            return FixedFrame { payload: annexb, keyframe: true };
        }
        let (Some(sps), Some(pps)) = (&self.sps, &self.pps) else {
            // An IDR nobody can decode yet: forward it, but not as a starting point.
            return FixedFrame { payload: annexb, keyframe: false };
        };
        let mut out = BytesMut::with_capacity(annexb.len() + sps.len() + pps.len() + 8);
        if !has_sps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(sps);
        }
        if !has_pps {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(pps);
        }
        out.extend_from_slice(&annexb);
        FixedFrame { payload: out.freeze(), keyframe: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0xda];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x21];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x22];

    fn annexb(nals: &[&[u8]]) -> Bytes {
        h264::to_annexb(nals.iter().copied())
    }

    #[test]
    fn parameter_sets_are_remembered_and_put_before_bare_idrs() {
        let mut sets = ParameterSets::default();
        let first = sets.fix(annexb(&[SPS, PPS, IDR]));
        assert!(first.keyframe);
        assert_eq!(first.payload, annexb(&[SPS, PPS, IDR]));

        let delta = sets.fix(annexb(&[SLICE]));
        assert!(!delta.keyframe);
        assert_eq!(delta.payload, annexb(&[SLICE]));

        let bare = sets.fix(annexb(&[IDR]));
        assert!(bare.keyframe);
        assert_eq!(h264::annexb_nals(&bare.payload).collect::<Vec<_>>(), vec![SPS, PPS, IDR]);
    }

    #[test]
    fn an_idr_without_any_parameter_sets_is_not_a_keyframe() {
        let mut sets = ParameterSets::default();
        let frame = sets.fix(annexb(&[IDR]));
        assert!(!frame.keyframe);
        assert_eq!(frame.payload, annexb(&[IDR]));
        assert!(!sets.fix(Bytes::new()).keyframe);
        assert!(!sets.fix(Bytes::from_static(&[0, 0, 1])).keyframe);
    }
}
