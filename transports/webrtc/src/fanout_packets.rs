//! Video frames packetised once for every WebRTC subscriber of their track. The engine hands
//! each subscriber the same frame (one shared payload buffer); the first session to write a
//! frame packetises it here and the others reuse its packets, whose payloads are shared
//! (`Arc<[u8]>`) down to str0m's resend cache. Through str0m's frame `Writer` each subscriber
//! copied the frame, packetised it into fresh buffers and kept its own copy of every packet
//! for resends: about 140 KB per 720p subscriber, and the copies and allocations per packet
//! per subscriber that showed in the profile (docs/benchmarks.md).
//!
//! A frame is known by its payload buffer (address and length) and codec; the entry holds the
//! buffer, so no other frame can take its address while the entry lives. Entries live for
//! [`KEEP`], a subscriber's queue bound with room to spare, and at most [`MAX_ENTRIES`] are kept:
//! a frame asked for after that is packetised again, which costs time, never correctness.
//!
//! VP8 and H.264 are shared. The VP8 packetiser is written here: str0m's writes a 7- or 15-bit
//! picture id depending on its counter's value, and each subscriber needs its own picture-id
//! sequence (continuous across the sources it is switched between), which a `Vp8Patch`
//! rewrites while str0m serialises the packet, in place, so the shared packets always carry the
//! 15-bit form. H.264 uses str0m's packetiser, afresh for each frame: a frame is an access unit,
//! and a keyframe's carries its parameter sets, which go out as a STAP-A before the slice as
//! they did (parameter sets with no slice after them go out on their own: `h264_packets`).
//! Other codecs (and all audio, which str0m may wrap in RED) go through the `Writer`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{Codec, MediaFrame, h264};
use parking_lot::Mutex;
use str0m::rtp::Vp8Descriptor;
use str0m::unversioned::{H264Packetizer, Packetizer};

/// How long a frame's packets stay shared: twice the engine's default subscriber queue bound
/// (250 ms), so every subscriber of a frame finds them while the frame can still be sent.
pub(crate) const KEEP: Duration = Duration::from_millis(500);
/// Frames kept at most: 500 ms of about 60 video tracks at 30 frames per second.
pub(crate) const MAX_ENTRIES: usize = 1024;

/// The largest RTP payload a packet may carry: str0m's datagram size, less the SRTP tag, down
/// to the cipher's block size, as str0m's own payloader sizes packets (Junction keeps str0m's
/// default MTU).
const PAYLOAD_MTU: usize = {
    let rtp = str0m::DATAGRAM_MTU_TARGET - SRTP_TAG;
    rtp - rtp % SRTP_BLOCK
};
const SRTP_TAG: usize = 16;
const SRTP_BLOCK: usize = 16;

/// The VP8 payload descriptor written here: X and S (first packet), I, and a 15-bit picture id.
const VP8_DESCRIPTOR_LEN: usize = 4;

/// One RTP payload of a frame.
#[derive(Debug)]
pub(crate) struct Packet {
    pub(crate) payload: Arc<[u8]>,
    /// Where the picture id is, for each subscriber's rewrite (VP8 only).
    pub(crate) vp8: Option<Vp8Descriptor>,
}

/// The shared packetisations, one per WebRTC media plane. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct FanoutPackets {
    cache: Arc<Mutex<Cache>>,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were added, with when: the oldest go first.
    order: VecDeque<(Key, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    address: usize,
    len: usize,
    codec: Codec,
}

struct Entry {
    /// Holds the frame's buffer, so its address names this frame while the entry lives.
    _frame: Bytes,
    packets: Arc<[Packet]>,
}

impl FanoutPackets {
    /// Whether frames of `codec` are packetised here.
    pub(crate) fn shares(codec: Codec) -> bool {
        matches!(codec, Codec::Vp8 | Codec::H264)
    }

    /// The packets of `frame` (of a codec this [`shares`](Self::shares)), packetised by the
    /// first caller. Empty when the frame has nothing to send.
    pub(crate) fn packets(&self, frame: &MediaFrame, now: Instant) -> Arc<[Packet]> {
        let key = Key { address: frame.payload.as_ptr() as usize, len: frame.payload.len(), codec: frame.codec };
        {
            let mut cache = self.cache.lock();
            cache.expire(now);
            if let Some(entry) = cache.entries.get(&key) {
                return entry.packets.clone();
            }
        }
        // Packetised outside the lock: two sessions that miss at once both packetise, and
        // the first to come back is kept.
        let packets: Arc<[Packet]> = packetise(frame.codec, &frame.payload).into();
        let mut cache = self.cache.lock();
        if let Some(entry) = cache.entries.get(&key) {
            return entry.packets.clone();
        }
        cache.entries.insert(key, Entry { _frame: frame.payload.clone(), packets: packets.clone() });
        cache.order.push_back((key, now));
        cache.expire(now);
        packets
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.lock().entries.len()
    }
}

impl Cache {
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, added)) = self.order.front() {
            if self.order.len() <= MAX_ENTRIES && now.saturating_duration_since(added) < KEEP {
                break;
            }
            self.order.pop_front();
            self.entries.remove(&key);
        }
    }
}

fn packetise(codec: Codec, frame: &[u8]) -> Vec<Packet> {
    match codec {
        Codec::Vp8 => vp8_packets(frame, PAYLOAD_MTU),
        Codec::H264 => h264_packets(frame, PAYLOAD_MTU),
        _ => Vec::new(),
    }
}

/// An H.264 access unit (Annex B) in packets of at most `mtu` bytes, by str0m's packetiser (it
/// cannot fail on H.264: it drops what it cannot packetise). It holds SPS and PPS back to send
/// them in a STAP-A before the next NAL unit; a frame's parameter sets with nothing after them
/// (a frame of only parameter sets) would wait for a frame this fresh packetiser never sees, so
/// they go out as packets of their own, as a receiver takes them (it keeps the last it saw).
fn h264_packets(frame: &[u8], mtu: usize) -> Vec<Packet> {
    let mut payloads = H264Packetizer::default().packetize(mtu, frame).unwrap_or_default();
    // The parameter sets after the frame's last other NAL unit (access unit delimiters aside):
    // nothing is collected for a frame without them, as most are.
    let mut held: Vec<&[u8]> = Vec::new();
    for nal in h264::annexb_nals(frame) {
        match h264::nal_type(nal) {
            h264::NAL_SPS | h264::NAL_PPS => held.push(nal),
            h264::NAL_AUD => {}
            _ => held.clear(),
        }
    }
    payloads.extend(held.into_iter().filter(|nal| nal.len() <= mtu).map(<[u8]>::to_vec));
    payloads.into_iter().map(|payload| Packet { payload: payload.into(), vp8: None }).collect()
}

/// A VP8 frame in packets of at most `mtu` bytes, each with a 4-byte descriptor (RFC 7741 §4.2)
/// carrying picture id 0 in its 15-bit form, for each subscriber to rewrite. The frame is split
/// evenly, so no packet is a small tail.
fn vp8_packets(frame: &[u8], mtu: usize) -> Vec<Packet> {
    let Some(room) = mtu.checked_sub(VP8_DESCRIPTOR_LEN).filter(|room| *room > 0) else { return Vec::new() };
    if frame.is_empty() {
        return Vec::new();
    }
    let count = frame.len().div_ceil(room);
    let (base, longer) = (frame.len() / count, frame.len() % count);
    let mut packets = Vec::with_capacity(count);
    let mut rest = frame;
    for index in 0..count {
        let (chunk, after) = rest.split_at(base + usize::from(index < longer));
        rest = after;
        let start = if index == 0 { 0x10 } else { 0 };
        let mut payload = Vec::with_capacity(VP8_DESCRIPTOR_LEN + chunk.len());
        payload.extend_from_slice(&[0x80 | start, 0x80, 0x80, 0x00]);
        payload.extend_from_slice(chunk);
        let vp8 = Vp8Descriptor::parse(&payload).ok();
        packets.push(Packet { payload: payload.into(), vp8 });
    }
    packets
}

#[cfg(test)]
mod tests {
    use junction_core::MediaTime;
    use str0m::format::CodecExtra;
    use str0m::unversioned::{Depacketizer, H264Depacketizer, Vp8Depacketizer};

    use super::*;

    fn frame(codec: Codec, payload: Vec<u8>) -> MediaFrame {
        MediaFrame::video(codec, MediaTime::new(0, 90_000), true, Instant::now(), Bytes::from(payload))
    }

    fn vp8_frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_subscriber_of_a_frame_gets_the_same_packets() {
        let shared = FanoutPackets::default();
        let sent = frame(Codec::Vp8, vp8_frame(5_000));
        let now = Instant::now();
        let (first, second) = (shared.packets(&sent.clone(), now), shared.packets(&sent.clone(), now));
        assert!(Arc::ptr_eq(&first, &second));
        assert!(first.len() > 1);
        // Another frame with the same bytes is another frame.
        let other = shared.packets(&frame(Codec::Vp8, vp8_frame(5_000)), now);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(shared.len(), 2);
    }

    #[test]
    fn frames_are_kept_for_a_while_and_a_bounded_number() {
        let shared = FanoutPackets::default();
        let start = Instant::now();
        let first = frame(Codec::Vp8, vp8_frame(100));
        let packets = shared.packets(&first, start);
        let later = start + KEEP + Duration::from_millis(1);
        let again = shared.packets(&first, later);
        assert!(!Arc::ptr_eq(&packets, &again), "an expired frame is packetised again");
        assert_eq!(shared.len(), 1);

        let frames: Vec<_> = (0..MAX_ENTRIES + 10).map(|_| frame(Codec::Vp8, vp8_frame(10))).collect();
        for sent in &frames {
            shared.packets(sent, later);
        }
        assert_eq!(shared.len(), MAX_ENTRIES);
    }

    #[test]
    fn vp8_packets_fit_the_mtu_carry_a_patchable_picture_id_and_reassemble_the_frame() {
        let payload = vp8_frame(10_000);
        let packets = vp8_packets(&payload, PAYLOAD_MTU);
        assert_eq!(packets.len(), payload.len().div_ceil(PAYLOAD_MTU - VP8_DESCRIPTOR_LEN));
        let sizes: Vec<_> = packets.iter().map(|p| p.payload.len()).collect();
        assert!(sizes.iter().all(|len| *len <= PAYLOAD_MTU));
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "split evenly: {sizes:?}");

        let mut depacketizer = Vp8Depacketizer::default();
        let mut out = Vec::new();
        for (index, packet) in packets.iter().enumerate() {
            let descriptor = packet.vp8.expect("a parsable descriptor");
            assert_eq!(descriptor.picture_id(), Some(0));
            // A subscriber's picture id past 7 bits fits in place.
            descriptor.patch().picture_id(0x7abc).build().expect("a patch");
            depacketizer.depacketize(&packet.payload, &mut out, &mut CodecExtra::None).expect("depacketized");
            assert_eq!(depacketizer.s, u8::from(index == 0));
        }
        assert_eq!(out, payload);
    }

    #[test]
    fn an_h264_keyframe_sends_its_parameter_sets_first() {
        let sps = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let idr: Vec<u8> = [0x65].into_iter().chain((0..3_000).map(|i| (i % 200 + 1) as u8)).collect();
        let mut access_unit = Vec::new();
        for nalu in [&sps[..], &pps[..], &idr[..]] {
            access_unit.extend_from_slice(&[0, 0, 0, 1]);
            access_unit.extend_from_slice(nalu);
        }
        let packets = packetise(Codec::H264, &access_unit);
        assert_eq!(packets[0].payload[0] & 0x1f, 24, "a STAP-A of the parameter sets comes first");
        assert!(packets.iter().all(|p| p.payload.len() <= PAYLOAD_MTU && p.vp8.is_none()));

        let mut depacketizer = H264Depacketizer::default();
        let mut out = Vec::new();
        for packet in packets.iter() {
            depacketizer.depacketize(&packet.payload, &mut out, &mut CodecExtra::None).expect("depacketized");
        }
        assert!(out.windows(idr.len()).any(|w| w == idr.as_slice()), "the slice comes through whole");

        // Parameter sets in a frame of their own go out as they are.
        let mut alone = Vec::new();
        for nalu in [&sps[..], &pps[..]] {
            alone.extend_from_slice(&[0, 0, 0, 1]);
            alone.extend_from_slice(nalu);
        }
        let packets = packetise(Codec::H264, &alone);
        let payloads: Vec<&[u8]> = packets.iter().map(|p| &p.payload[..]).collect();
        assert_eq!(payloads, [&sps[..], &pps[..]]);
    }
}
