//! Stream samples for tests (the `fixtures` feature): a 320x240 SPS and a PPS as x264 writes
//! them, and H.264 frames made of them.

use std::time::Instant;

use junction_core::{Codec, MediaFrame, MediaTime, h264};

/// A 320x240 SPS as x264 writes it (High 4:4:4 Predictive, level 1.3).
pub const SPS: &[u8] = &[
    0x67, 0xf4, 0x00, 0x0d, 0x91, 0x96, 0x40, 0x50, 0x7e, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03,
    0x00, 0xca, 0x3c, 0x50, 0xa9, 0x20,
];
pub const PPS: &[u8] = &[0x68, 0xeb, 0xc3, 0xc4, 0x48, 0x44];

/// An H.264 frame at `ticks` of 90 kHz: a keyframe (SPS, PPS, IDR slice) or a P slice whose
/// last byte is `ticks`, so frames differ.
pub fn h264_frame(ticks: u64, keyframe: bool, at: Instant) -> MediaFrame {
    let payload = if keyframe {
        h264::to_annexb([SPS, PPS, &[0x65, 0x88, 0x80, 0x10][..]])
    } else {
        h264::to_annexb([&[0x41, 0x9a, 0x02, ticks as u8][..]])
    };
    MediaFrame::video(Codec::H264, MediaTime::new(ticks, 90_000), keyframe, at, payload)
}
