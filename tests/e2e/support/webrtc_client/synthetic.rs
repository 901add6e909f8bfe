//! Synthetic media with known payloads: frames carry their index, so a receiver can tell which
//! frame it got and compare bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// A 33 ms video frame at 30 fps.
pub const VIDEO_FRAME: std::time::Duration = std::time::Duration::from_micros(33_333);
/// A 20 ms Opus packet.
pub const AUDIO_FRAME: std::time::Duration = std::time::Duration::from_millis(20);

const SPS: &[u8] = &[0x67, 0x42, 0xe0, 0x1f, 0x8c, 0x8d, 0x40, 0x50, 0x1e, 0xd0];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

/// The index (below 2^28) as four base-128 digits with the top bit set: never a zero byte.
fn index_bytes(index: u32) -> [u8; 4] {
    [3, 2, 1, 0].map(|digit| 0x80 | ((index >> (7 * digit)) & 0x7f) as u8)
}

fn index_from(bytes: &[u8]) -> Option<u32> {
    let digits = bytes.get(..4)?;
    Some(digits.iter().fold(0, |acc, b| (acc << 7) | (b & 0x7f) as u32))
}

/// NAL unit bytes that never contain a start code: the index, then a repeating pattern.
fn nal(header: u8, index: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.push(header);
    out.extend_from_slice(&index_bytes(index));
    while out.len() < len {
        out.push(0x11 + (out.len() % 200) as u8);
    }
    out
}

fn annexb(nals: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    out.freeze()
}

/// SPS, PPS and an IDR slice large enough to be fragmented (FU-A).
pub fn h264_keyframe(index: u32) -> Bytes {
    annexb(&[SPS, PPS, &nal(0x65, index, 3_000)])
}

/// A non-IDR slice.
pub fn h264_delta(index: u32) -> Bytes {
    annexb(&[&nal(0x41, index, 800)])
}

/// The frame index written by [`h264_keyframe`]/[`h264_delta`], from a received access unit.
pub fn h264_index(annexb: &Bytes) -> Option<u32> {
    let slice = nal_units(annexb).into_iter().find(|n| matches!(n.first().map(|b| b & 0x1f), Some(1 | 5)))?;
    index_from(slice.get(1..)?)
}

/// Checks that a received access unit is the frame [`h264_keyframe`]/[`h264_delta`] made for its
/// index (a keyframe every `gop` frames), NAL unit by NAL unit; returns the index.
pub fn assert_h264_unchanged(annexb: &Bytes, gop: u32, what: &str) -> u32 {
    let index = h264_index(annexb).expect("a frame index");
    let expected = if index.is_multiple_of(gop) { h264_keyframe(index) } else { h264_delta(index) };
    assert_eq!(nal_units(annexb), nal_units(&expected), "frame {index} {what}");
    index
}

/// An Opus packet (TOC byte of a 20 ms CELT frame, then the index and a pattern).
pub fn opus_packet(index: u32) -> Bytes {
    let mut out = vec![0xfc];
    out.extend_from_slice(&index.to_be_bytes());
    out.extend(std::iter::repeat_n(0x5a, 60));
    Bytes::from(out)
}

pub fn opus_index(packet: &Bytes) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(1..5)?.try_into().ok()?))
}

/// The NAL units of an Annex B access unit, without start codes.
pub fn nal_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut current: Option<usize> = None;
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(start) = current {
                let mut end = i;
                while end > start && data[end - 1] == 0 {
                    end -= 1;
                }
                units.push(data[start..end].to_vec());
            }
            current = Some(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    if let Some(start) = current {
        units.push(data[start..].to_vec());
    }
    units
}

/// A VP8 frame: the 3-byte frame tag (key frames add the start code and a 320x240 size), then
/// the index and a pattern. A key frame is large enough to span several RTP packets.
pub fn vp8_frame(index: u32, keyframe: bool) -> Bytes {
    let len: usize = if keyframe { 2_500 } else { 700 };
    let header: &[u8] = if keyframe { &[0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00] } else { &[] };
    // Frame tag (RFC 6386 §9.1): bit 0 clear for a key frame, version 0, show_frame, and the
    // first partition's size (everything after the headers).
    let partition = (len - 3 - header.len()) as u32;
    let tag = u32::from(!keyframe) | (1 << 4) | (partition << 5);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&tag.to_le_bytes()[..3]);
    out.extend_from_slice(header);
    out.extend_from_slice(&index.to_be_bytes());
    while out.len() < len {
        out.push(0x21 + (out.len() % 190) as u8);
    }
    Bytes::from(out)
}

/// The frame index written by [`vp8_frame`], from a received frame.
pub fn vp8_index(frame: &Bytes) -> Option<u32> {
    let at = if frame.first()? & 0x01 == 0 { 10 } else { 3 };
    Some(u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
}
