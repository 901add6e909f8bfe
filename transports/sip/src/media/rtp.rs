//! RTP for one call's audio on the `rtp` crate: reading packets (payload type, sequence,
//! timestamp, marker) — only once [`super::validate`] has checked them, since the crate panics
//! on some malformed ones — and writing ours with a random SSRC, a running sequence number and
//! a timestamp that advances by one frame per packet.

use bytes::Bytes;
use rtp::header::Header;
use rtp::packet::Packet;
use webrtc_util::{Marshal, Unmarshal};

use super::validate::{self, Invalid};

/// One received RTP packet, reduced to what the call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpIn {
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Bytes,
}

/// What arrived on a call's RTP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Rtp(RtpIn),
    /// A valid RTCP compound multiplexed onto the RTP port (RFC 5761).
    Rtcp,
}

/// Checks a datagram from a call's RTP port and reads it.
pub fn read(datagram: &[u8]) -> Result<Received, Invalid> {
    if validate::is_rtcp(datagram) {
        validate::check_rtcp(datagram)?;
        return Ok(Received::Rtcp);
    }
    validate::check_rtp(datagram)?;
    let mut buf = datagram;
    let packet = Packet::unmarshal(&mut buf).map_err(|_| Invalid::Unparsed)?;
    Ok(Received::Rtp(RtpIn {
        payload_type: packet.header.payload_type,
        sequence: packet.header.sequence_number,
        timestamp: packet.header.timestamp,
        ssrc: packet.header.ssrc,
        marker: packet.header.marker,
        payload: packet.payload,
    }))
}

/// Parses an RTP packet; `None` for RTCP and anything invalid.
pub fn parse(datagram: &[u8]) -> Option<RtpIn> {
    match read(datagram) {
        Ok(Received::Rtp(packet)) => Some(packet),
        _ => None,
    }
}

/// Our outgoing RTP stream.
#[derive(Debug, Clone)]
pub struct RtpOut {
    ssrc: u32,
    sequence: u16,
    timestamp: u32,
    started: bool,
}

impl RtpOut {
    pub fn new() -> Self {
        Self { ssrc: rand::random(), sequence: rand::random(), timestamp: rand::random(), started: false }
    }

    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// A packet carrying `payload`, then advances the clock by `samples`. The first packet of
    /// the stream has the marker bit (RFC 3551 §4.1: start of a talkspurt).
    pub fn packet(&mut self, payload_type: u8, payload: Bytes, samples: u32) -> Bytes {
        let packet = self.packet_at(payload_type, payload, self.timestamp, !self.started);
        self.timestamp = self.timestamp.wrapping_add(samples);
        packet
    }

    /// The timestamp the next packet gets.
    pub fn timestamp(&self) -> u32 {
        self.timestamp
    }

    /// A packet at a given timestamp without moving the clock: the repeats of one RFC 4733
    /// event share their start's timestamp (the audio it replaces is [`Self::skip`]ped).
    pub fn packet_at(&mut self, payload_type: u8, payload: Bytes, timestamp: u32, marker: bool) -> Bytes {
        let header = Header {
            version: 2,
            marker,
            payload_type,
            sequence_number: self.sequence,
            timestamp,
            ssrc: self.ssrc,
            ..Header::default()
        };
        self.started = true;
        self.sequence = self.sequence.wrapping_add(1);
        Packet { header, payload }.marshal().unwrap_or_default()
    }

    /// Moves the clock on without sending (while the call is on hold the timeline keeps going).
    pub fn skip(&mut self, samples: u32) {
        self.timestamp = self.timestamp.wrapping_add(samples);
    }
}

impl Default for RtpOut {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_packets_parse_back() {
        let mut out = RtpOut::new();
        let first = parse(&out.packet(0, Bytes::from_static(&[0xff; 160]), 160)).unwrap();
        let second = parse(&out.packet(0, Bytes::from_static(&[0x7f; 160]), 160)).unwrap();
        assert!(first.marker && !second.marker);
        assert_eq!(second.sequence, first.sequence.wrapping_add(1));
        assert_eq!(second.timestamp, first.timestamp.wrapping_add(160));
        assert_eq!((second.ssrc, second.payload.len()), (out.ssrc(), 160));
    }

    #[test]
    fn junk_and_rtcp_are_not_rtp() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x80]), None);
        assert_eq!(parse(&[0x80, 200, 0, 6, 0, 0, 0, 1]), None, "an RTCP sender report");
        assert_eq!(read(&[0x80, 201, 0, 1, 0, 0, 0, 1]), Ok(Received::Rtcp), "a receiver report, muxed");
        assert_eq!(read(&[0x80, 200, 0, 6, 0, 0, 0, 1]), Err(Invalid::RtcpLength), "a report cut short");
        assert_eq!(parse(&[0x40; 20]), None, "version 1");
        // Every truncation and a CSRC count pointing past the end.
        let mut out = RtpOut::new();
        let good = out.packet(8, Bytes::from_static(&[1; 40]), 160);
        for len in 0..good.len() {
            let _ = parse(&good[..len]);
        }
        let mut lying = good.to_vec();
        lying[0] = 0x8f;
        assert_eq!(read(&lying), Err(Invalid::Csrc));
        lying[0] = 0x90; // extension bit, the payload read as an extension header
        assert_eq!(read(&lying), Err(Invalid::Extension));
    }
}
