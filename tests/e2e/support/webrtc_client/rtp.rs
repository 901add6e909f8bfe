//! The RTP side of the test clients: frames reassembled from received packets, a counter of
//! the keyframe requests (PLI, FIR) a publisher receives, and the sender reports a viewer gets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::packetizer::Depacketizer;
use rtc::sansio::Protocol;

use super::{ClientCodec, ReceivedFrame, synthetic};

/// Reassembles frames from RTP packets: everything up to the marker bit; a sequence gap
/// inside a frame discards it, as does a VP8 frame whose first packet is not the start of its
/// first partition (the packets before it never arrived, e.g. before the first sequence
/// number this receiver saw). As a decoder cannot start on a delta frame, each one before the
/// first keyframe counts as lost too (the receiver asks for a keyframe), though it is handed on
/// for tests to see what came first.
pub(super) struct FrameAssembler {
    codec: ClientCodec,
    h264: rtc::rtp::codec::h264::H264Packet,
    vp8: rtc::rtp::codec::vp8::Vp8Packet,
    buffer: BytesMut,
    next_seq: Option<u16>,
    broken: bool,
    /// Set when a frame was discarded for a gap, or could not be decoded: the receiver should
    /// ask for a keyframe.
    lost: bool,
    keyframe_seen: bool,
    /// The picture id of the VP8 frame being assembled (from its first packet).
    picture_id: Option<u16>,
}

impl FrameAssembler {
    pub(super) fn new(codec: ClientCodec) -> Self {
        Self {
            codec,
            h264: Default::default(),
            vp8: Default::default(),
            buffer: BytesMut::new(),
            next_seq: None,
            broken: false,
            lost: false,
            keyframe_seen: false,
            picture_id: None,
        }
    }

    /// Whether a video frame was discarded or undecodable since the last call: what follows
    /// cannot be decoded until a keyframe, which a real receiver asks for (PLI) as this one's
    /// owner should.
    pub(super) fn take_lost(&mut self) -> bool {
        std::mem::take(&mut self.lost)
    }

    pub(super) fn push(&mut self, packet: rtc::rtp::Packet) -> Option<ReceivedFrame> {
        let header = &packet.header;
        if self.next_seq.is_some_and(|seq| seq != header.sequence_number) {
            self.broken = true;
        }
        self.next_seq = Some(header.sequence_number.wrapping_add(1));
        let part = match self.codec {
            ClientCodec::Opus => Ok(packet.payload.clone()),
            ClientCodec::H264 => self.h264.depacketize(&packet.payload),
            ClientCodec::Vp8 => self.vp8.depacketize(&packet.payload),
        };
        let starts_frame = self.buffer.is_empty();
        match part {
            Ok(part) => self.buffer.extend_from_slice(&part),
            Err(_) => self.broken = true,
        }
        if starts_frame && self.codec == ClientCodec::Vp8 {
            self.broken |= self.vp8.s != 1 || self.vp8.pid != 0;
            self.picture_id = (self.vp8.i == 1).then_some(self.vp8.picture_id);
        }
        if !header.marker && self.codec != ClientCodec::Opus {
            return None;
        }
        let payload = std::mem::take(&mut self.buffer).freeze();
        let broken = std::mem::replace(&mut self.broken, false);
        if broken || payload.is_empty() {
            self.lost |= broken && self.codec != ClientCodec::Opus;
            return None;
        }
        let keyframe = match self.codec {
            ClientCodec::Opus => true,
            ClientCodec::H264 => {
                synthetic::nal_units(&payload).iter().any(|nal| nal.first().is_some_and(|b| b & 0x1f == 5))
            }
            ClientCodec::Vp8 => payload.first().is_some_and(|b| b & 0x01 == 0),
        };
        if self.codec != ClientCodec::Opus {
            self.lost |= !keyframe && !self.keyframe_seen;
            self.keyframe_seen |= keyframe;
        }
        Some(ReceivedFrame {
            codec: self.codec,
            payload,
            rtp_timestamp: header.timestamp,
            ssrc: header.ssrc,
            keyframe,
            vp8_picture_id: self.picture_id.take(),
            received_at: Instant::now(),
        })
    }
}

/// An RTCP sender report as a viewer received it: the sender's wall clock (NTP) and one
/// stream's RTP time at the same instant.
#[derive(Debug, Clone, Copy)]
pub struct SenderReportSeen {
    pub ssrc: u32,
    /// NTP timestamp: seconds since 1900 in the upper 32 bits, the fraction in the lower.
    pub ntp_time: u64,
    pub rtp_time: u32,
    /// RTP packets sent on the stream when the report was made.
    pub packet_count: u32,
    pub received_at: Instant,
}

impl SenderReportSeen {
    pub fn ntp_seconds(&self) -> f64 {
        (self.ntp_time >> 32) as f64 + (self.ntp_time & 0xffff_ffff) as f64 / 4_294_967_296.0
    }
}

/// Watches incoming RTCP: counts PLI and FIR packets (for the tracks a publisher sends) and
/// keeps sender reports (for the tracks a viewer receives).
pub(super) struct KeyframeRequestCounter {
    count: Arc<AtomicU64>,
    sender_reports: Arc<Mutex<Vec<SenderReportSeen>>>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl KeyframeRequestCounter {
    pub(super) fn new(count: Arc<AtomicU64>, sender_reports: Arc<Mutex<Vec<SenderReportSeen>>>) -> Self {
        Self { count, sender_reports, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestCounter {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests = packets
                .iter()
                .filter(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
                .count();
            self.count.fetch_add(requests as u64, Ordering::SeqCst);
            let reports =
                packets.iter().filter_map(|p| p.as_any().downcast_ref::<SenderReport>()).map(|sr| SenderReportSeen {
                    ssrc: sr.ssrc,
                    ntp_time: sr.ntp_time,
                    rtp_time: sr.rtp_time,
                    packet_count: sr.packet_count,
                    received_at: Instant::now(),
                });
            if let Ok(mut seen) = self.sender_reports.lock() {
                seen.extend(reports);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestCounter {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
