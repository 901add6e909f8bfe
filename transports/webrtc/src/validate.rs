//! The structural check every datagram from the shared UDP socket passes before anything parses
//! it: the UDP driver drops what fails (counted, never answered) so that neither the demux, nor
//! str0m, nor the DTLS stack under it ever sees a datagram whose own lengths lie.
//!
//! Datagrams are told apart as RFC 7983 says (first byte: STUN 0–1, DTLS 20–63, RTP/RTCP
//! 128–191, RTCP by payload type 64–95 after the marker bit). Then, with no allocation:
//! - STUN: the header's length is the datagram's, a multiple of 4, and every attribute (padded
//!   to 4 bytes) ends inside it.
//! - DTLS: every record with the classic 13-byte header has a length that ends inside the
//!   datagram (a DTLS 1.3 unified header is left to the DTLS stack, as its length is optional).
//! - RTP: the fixed header, the CSRC list and the header extension block fit, every element of a
//!   one-byte (`0xBEDE`) or two-byte (`0x100x`) extension block ends inside the block, and the
//!   SRTP authentication tag (10 bytes at least) follows the header. Padding is encrypted in SRTP
//!   and is checked by str0m after decryption (it refuses a padding count longer than the payload).
//! - RTCP: an SRTCP datagram holds at least the first header and SSRC (8 bytes), the SRTCP index
//!   (4) and the tag (10); the first packet is a known type whose length ends before the index.
//!   The rest of a compound packet is encrypted; str0m walks it after decryption, stopping at
//!   the first length that runs past the end.
//!
//! Written by hand: these are bounds checks over a few header fields, which no crate offers
//! apart from the parsers they guard.

/// What a datagram that passed the check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("first byte {0:#04x} is not STUN, DTLS, RTP or RTCP")]
    Unknown(u8),
    #[error("STUN: {0}")]
    Stun(&'static str),
    #[error("DTLS: {0}")]
    Dtls(&'static str),
    #[error("RTP: {0}")]
    Rtp(&'static str),
    #[error("RTCP: {0}")]
    Rtcp(&'static str),
}

impl Invalid {
    /// The protocol it claimed to be, for metrics.
    pub fn protocol(&self) -> &'static str {
        match self {
            Invalid::Unknown(_) => "unknown",
            Invalid::Stun(_) => "stun",
            Invalid::Dtls(_) => "dtls",
            Invalid::Rtp(_) => "rtp",
            Invalid::Rtcp(_) => "rtcp",
        }
    }
}

const STUN_HEADER: usize = 20;
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const DTLS_HEADER: usize = 13;
const RTP_HEADER: usize = 12;
/// The shortest SRTP/SRTCP authentication tag str0m negotiates (AES_CM_128_HMAC_SHA1_80).
const SRTP_MIN_TAG: usize = 10;
const SRTCP_INDEX: usize = 4;
/// The RTCP packet types str0m reads (SR, RR, SDES, BYE, APP, RTPFB, PSFB, XR).
const RTCP_TYPES: std::ops::RangeInclusive<u8> = 200..=207;

/// Checks one datagram; `Ok` says what it is.
pub fn check(datagram: &[u8]) -> Result<Kind, Invalid> {
    let Some(&first) = datagram.first() else { return Err(Invalid::Unknown(0)) };
    match first {
        0..=1 => check_stun(datagram).map(|()| Kind::Stun).map_err(Invalid::Stun),
        20..=63 => check_dtls(datagram).map(|()| Kind::Dtls).map_err(Invalid::Dtls),
        128..=191 => match datagram.get(1) {
            Some(second) if (64..96).contains(&(second & 0x7f)) => {
                check_rtcp(datagram).map(|()| Kind::Rtcp).map_err(Invalid::Rtcp)
            }
            _ => check_rtp(datagram).map(|()| Kind::Rtp).map_err(Invalid::Rtp),
        },
        other => Err(Invalid::Unknown(other)),
    }
}

fn be16(bytes: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]) as usize)
}

fn check_stun(datagram: &[u8]) -> Result<(), &'static str> {
    if datagram.len() < STUN_HEADER {
        return Err("shorter than its 20-byte header");
    }
    if datagram[4..8] != STUN_MAGIC {
        return Err("no magic cookie");
    }
    let body = be16(datagram, 2).ok_or("no length")?;
    if body % 4 != 0 || STUN_HEADER + body != datagram.len() {
        return Err("length field does not match the datagram");
    }
    let mut pos = STUN_HEADER;
    while pos < datagram.len() {
        let len = be16(datagram, pos + 2).ok_or("truncated attribute header")?;
        let end = pos + 4 + len.div_ceil(4) * 4;
        if end > datagram.len() {
            return Err("an attribute runs past the end");
        }
        pos = end;
    }
    Ok(())
}

fn check_dtls(datagram: &[u8]) -> Result<(), &'static str> {
    let mut rest = datagram;
    while let Some(&content_type) = rest.first() {
        if !(20..=31).contains(&content_type) {
            // A DTLS 1.3 unified header (0b001xxxxx) may carry no length: the DTLS stack reads it.
            return if (32..=63).contains(&content_type) { Ok(()) } else { Err("bad record content type") };
        }
        if rest.len() < DTLS_HEADER {
            return Err("record shorter than its 13-byte header");
        }
        if rest[1] != 0xfe {
            return Err("record version is not DTLS");
        }
        let len = be16(rest, 11).ok_or("truncated record header")?;
        let end = DTLS_HEADER + len;
        if end > rest.len() {
            return Err("a record runs past the end");
        }
        rest = &rest[end..];
    }
    Ok(())
}

/// The length of an RTP header (fixed part, CSRCs and extension block) once checked.
pub fn rtp_header_len(datagram: &[u8]) -> Result<usize, &'static str> {
    if datagram.len() < RTP_HEADER {
        return Err("shorter than its 12-byte header");
    }
    if datagram[0] >> 6 != 2 {
        return Err("version is not 2");
    }
    let csrc_end = RTP_HEADER + 4 * (datagram[0] & 0x0f) as usize;
    if csrc_end > datagram.len() {
        return Err("the CSRC list runs past the end");
    }
    if datagram[0] & 0x10 == 0 {
        return Ok(csrc_end);
    }
    let profile = be16(datagram, csrc_end).ok_or("truncated extension header")?;
    let words = be16(datagram, csrc_end + 2).ok_or("truncated extension header")?;
    let block_start = csrc_end + 4;
    let block_end = block_start + 4 * words;
    if block_end > datagram.len() {
        return Err("the header extension runs past the end");
    }
    let block = &datagram[block_start..block_end];
    match profile {
        0xbede => check_one_byte_elements(block)?,
        p if p & 0xfff0 == 0x1000 => check_two_byte_elements(block)?,
        // Other profiles are opaque (RFC 3550 §5.3.1): only the block's length matters.
        _ => {}
    }
    Ok(block_end)
}

/// RFC 8285 §4.2: `ID:4 L:4` then L+1 bytes; zero bytes pad; ID 15 ends the block.
fn check_one_byte_elements(mut block: &[u8]) -> Result<(), &'static str> {
    while let Some(&head) = block.first() {
        if head == 0 {
            block = &block[1..];
            continue;
        }
        if head >> 4 == 15 {
            return Ok(());
        }
        let end = 1 + (head & 0x0f) as usize + 1;
        if end > block.len() {
            return Err("a one-byte header extension element runs past its block");
        }
        block = &block[end..];
    }
    Ok(())
}

/// RFC 8285 §4.3: `ID:8 L:8` then L bytes; zero bytes pad.
fn check_two_byte_elements(mut block: &[u8]) -> Result<(), &'static str> {
    while let Some(&id) = block.first() {
        if id == 0 {
            block = &block[1..];
            continue;
        }
        let Some(&len) = block.get(1) else { return Err("a two-byte header extension element is truncated") };
        let end = 2 + len as usize;
        if end > block.len() {
            return Err("a two-byte header extension element runs past its block");
        }
        block = &block[end..];
    }
    Ok(())
}

fn check_rtp(datagram: &[u8]) -> Result<(), &'static str> {
    let header = rtp_header_len(datagram)?;
    if header + SRTP_MIN_TAG > datagram.len() {
        return Err("no room for the SRTP authentication tag after the header");
    }
    Ok(())
}

fn check_rtcp(datagram: &[u8]) -> Result<(), &'static str> {
    if datagram.len() < 8 + SRTCP_INDEX + SRTP_MIN_TAG {
        return Err("shorter than an SRTCP packet can be");
    }
    if datagram[0] >> 6 != 2 {
        return Err("version is not 2");
    }
    if !RTCP_TYPES.contains(&datagram[1]) {
        return Err("unknown packet type");
    }
    let first_len = (be16(datagram, 2).ok_or("no length")? + 1) * 4;
    if first_len > datagram.len() - SRTCP_INDEX - SRTP_MIN_TAG {
        return Err("the first packet's length runs past the end");
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The RTP header-extension bomb of issue 12: a one-byte element (ID 1, 16 bytes) in a
    /// block of one word.
    pub(crate) const EXTENSION_BOMB: [u8; 20] =
        [0x90, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0x00, 0x01, 0x1f, 0x00, 0x00, 0x00];

    fn rtp(extension: &[u8], payload_len: usize) -> Vec<u8> {
        let mut packet = vec![if extension.is_empty() { 0x80 } else { 0x90 }, 96, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4];
        packet.extend_from_slice(extension);
        packet.extend(std::iter::repeat_n(0xaa, payload_len));
        packet
    }

    #[test]
    fn the_extension_bomb_and_its_relatives_are_refused() {
        assert_eq!(
            check(&EXTENSION_BOMB),
            Err(Invalid::Rtp("a one-byte header extension element runs past its block"))
        );
        let mut padded = EXTENSION_BOMB.to_vec();
        padded.extend_from_slice(&[0; 16]);
        assert!(check(&padded).is_err(), "the element still runs past its block, whatever follows");
        // A two-byte element of 200 bytes in a one-word block.
        assert!(check(&rtp(&[0x10, 0x00, 0x00, 0x01, 0x01, 200, 0, 0], 20)).is_err());
        // A block longer than the packet.
        assert!(check(&rtp(&[0xbe, 0xde, 0xff, 0xff], 20)).is_err());
        // Fifteen CSRCs announced in a 12-byte packet.
        assert_eq!(
            check(&[0x8f, 96, 0, 1, 0, 0, 0, 9, 1, 2, 3, 4]),
            Err(Invalid::Rtp("the CSRC list runs past the end"))
        );
        assert!(check(&[0x80, 96, 0]).is_err());
    }

    #[test]
    fn well_formed_rtp_passes() {
        assert_eq!(check(&rtp(&[], 30)), Ok(Kind::Rtp));
        // mid (ID 1, "0") and transport-cc (ID 3, 2 bytes), padded to the word.
        assert_eq!(check(&rtp(&[0xbe, 0xde, 0x00, 0x02, 0x10, b'0', 0x31, 0x00, 0x07, 0, 0, 0], 30)), Ok(Kind::Rtp));
        // ID 15 stops the walk whatever its length says.
        assert_eq!(check(&rtp(&[0xbe, 0xde, 0x00, 0x01, 0xff, 0, 0, 0], 30)), Ok(Kind::Rtp));
        // Two-byte form with an empty element.
        assert_eq!(check(&rtp(&[0x10, 0x00, 0x00, 0x01, 0x05, 0x00, 0x06, 0x00], 30)), Ok(Kind::Rtp));
        assert_eq!(rtp_header_len(&rtp(&[0xbe, 0xde, 0x00, 0x01, 0x10, 1, 0, 0], 0)), Ok(20));
        assert!(check(&rtp(&[], 9)).is_err(), "an SRTP packet carries a tag of 10 bytes at least");
    }

    #[test]
    fn rtcp_lengths_must_fit() {
        // A receiver report header (one word of SSRC), SRTCP index and tag: 8 + 4 + 10.
        let mut srtcp = vec![0x80, 201, 0x00, 0x01, 1, 2, 3, 4];
        srtcp.extend_from_slice(&[0x80, 0, 0, 1]);
        srtcp.extend_from_slice(&[0xcc; 10]);
        assert_eq!(check(&srtcp), Ok(Kind::Rtcp));
        let mut absurd = srtcp.clone();
        absurd[2..4].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(check(&absurd), Err(Invalid::Rtcp("the first packet's length runs past the end")));
        assert!(check(&srtcp[..12]).is_err(), "truncated");
        let mut unknown = srtcp.clone();
        unknown[1] = 210;
        assert!(check(&unknown).is_err());
    }

    #[test]
    fn stun_and_dtls_lengths_must_fit() {
        let mut stun = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
        stun.extend_from_slice(&[7; 12]);
        stun.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        assert_eq!(check(&stun), Ok(Kind::Stun));
        let mut lying = stun.clone();
        lying[22..24].copy_from_slice(&[0x00, 0x40]);
        assert_eq!(check(&lying), Err(Invalid::Stun("an attribute runs past the end")));
        assert!(check(&stun[..24]).is_err(), "length field and datagram disagree");

        let mut dtls = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 1, 2, 3];
        assert_eq!(check(&dtls), Ok(Kind::Dtls));
        dtls.extend_from_slice(&[21, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 2, 0x40, 0x00]);
        assert_eq!(check(&dtls), Err(Invalid::Dtls("a record runs past the end")));
        assert_eq!(check(&[0x2f, 1, 2]), Ok(Kind::Dtls), "DTLS 1.3 unified headers are left to the DTLS stack");
        assert_eq!(check(&[0xff]), Err(Invalid::Unknown(0xff)));
        assert_eq!(check(&[]), Err(Invalid::Unknown(0)));
    }

    #[test]
    fn no_prefix_of_any_datagram_panics() {
        let samples: Vec<Vec<u8>> = vec![EXTENSION_BOMB.to_vec(), rtp(&[0x10, 0, 0, 2, 1, 3, 0, 0, 0, 0, 0, 0], 12)];
        for sample in samples {
            for cut in 0..=sample.len() {
                let _ = check(&sample[..cut]);
            }
        }
        // Every two-byte prefix followed by a spread of bytes.
        for a in 0..=255u8 {
            for b in [0u8, 1, 72, 96, 200, 201, 255] {
                let mut datagram = vec![a, b];
                datagram.extend((0..40u8).map(|i| i.wrapping_mul(37)));
                let _ = check(&datagram);
            }
        }
    }
}
