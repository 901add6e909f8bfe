//! Checks every RTP and RTCP datagram a call's sockets receive before any parser sees it.
//! Sans-I/O: bytes in, a verdict out.
//!
//! The `rtp` crate trusts the lengths inside a packet: a one-byte header-extension element whose
//! length runs past the datagram makes it panic (`advance out of bounds`), a two-byte element
//! cut after its id too, and elements that run past their extension block are silently misread.
//! So the whole structure is walked here first — version, CSRC count, the extension block and
//! each RFC 8285 element in it, padding — and a datagram that does not add up is dropped
//! (counted in `junction_sip_invalid_media_total{kind, reason}`), never handed on.

/// Largest RTP/RTCP datagram a call accepts; voice packets are a few hundred bytes. Receive
/// buffers are one byte longer, so a larger datagram shows as exactly `MAX_DATAGRAM + 1`.
pub const MAX_DATAGRAM: usize = 1500;

const RTP_HEADER: usize = 12;
/// RFC 8285 §4.2: the one-byte header form.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// RFC 8285 §4.3: the two-byte header form (`0x100` and four application bits).
const TWO_BYTE_PROFILE: u16 = 0x1000;
/// RFC 8285 §4.2: one-byte id 15 is reserved; parsers stop there and would take the rest of
/// the extension block for payload.
const RESERVED_ONE_BYTE_ID: u8 = 15;

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("shorter than a header")]
    Short,
    #[error("larger than {MAX_DATAGRAM} bytes")]
    TooLarge,
    #[error("version {0}, not 2")]
    Version(u8),
    #[error("the CSRC list runs past the datagram")]
    Csrc,
    #[error("the header extension runs past the datagram")]
    Extension,
    #[error("a header-extension element runs past its block")]
    ExtensionElement,
    #[error("a header-extension element uses the reserved id 15")]
    ReservedExtensionId,
    #[error("the padding count is zero or longer than the payload")]
    Padding,
    #[error("an RTCP packet type outside 192-223")]
    RtcpType,
    #[error("an RTCP length runs past the datagram")]
    RtcpLength,
    #[error("padding on an RTCP packet that is not the last")]
    RtcpPadding,
    #[error("the RTP parser refused it")]
    Unparsed,
}

impl Invalid {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Invalid::Short => "short",
            Invalid::TooLarge => "too_large",
            Invalid::Version(_) => "version",
            Invalid::Csrc => "csrc",
            Invalid::Extension => "extension",
            Invalid::ExtensionElement => "extension_element",
            Invalid::ReservedExtensionId => "extension_reserved_id",
            Invalid::Padding => "padding",
            Invalid::RtcpType => "rtcp_type",
            Invalid::RtcpLength => "rtcp_length",
            Invalid::RtcpPadding => "rtcp_padding",
            Invalid::Unparsed => "unparsed",
        }
    }
}

fn byte(datagram: &[u8], at: usize) -> Result<u8, Invalid> {
    datagram.get(at).copied().ok_or(Invalid::Short)
}

fn u16_at(datagram: &[u8], at: usize) -> Result<u16, Invalid> {
    Ok(u16::from_be_bytes([byte(datagram, at)?, byte(datagram, at + 1)?]))
}

/// Whether a datagram on an RTP port is RTCP multiplexed onto it (RFC 5761 §4: the second
/// byte of RTCP is a packet type in 192-223, which RTP payload types never reach).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|b| (192..=223).contains(b))
}

/// Checks an RTP packet's structure (RFC 3550 §5.1, RFC 8285). `Ok` means every length in it
/// lies inside the datagram and inside the block it belongs to.
pub fn check_rtp(datagram: &[u8]) -> Result<(), Invalid> {
    let offset = check_rtp_header(datagram)?;
    let len = datagram.len();
    if byte(datagram, 0)? & 0x20 != 0 {
        let payload = len - offset;
        let count = usize::from(*datagram.last().ok_or(Invalid::Padding)?);
        if payload == 0 || count == 0 || count > payload {
            return Err(Invalid::Padding);
        }
    }
    Ok(())
}

/// Checks an RTP header (fixed part, CSRCs, extension block) and returns where the payload
/// starts. For SRTP, whose payload (padding included) is encrypted and followed by the
/// authentication tag, this is all that can be checked before decryption.
pub fn check_rtp_header(datagram: &[u8]) -> Result<usize, Invalid> {
    let len = datagram.len();
    if len < RTP_HEADER {
        return Err(Invalid::Short);
    }
    if len > MAX_DATAGRAM {
        return Err(Invalid::TooLarge);
    }
    let first = byte(datagram, 0)?;
    let version = first >> 6;
    if version != 2 {
        return Err(Invalid::Version(version));
    }
    let extension = first & 0x10 != 0;
    let mut offset = RTP_HEADER + 4 * usize::from(first & 0x0f);
    if offset > len {
        return Err(Invalid::Csrc);
    }
    if extension {
        let profile = u16_at(datagram, offset).map_err(|_| Invalid::Extension)?;
        let words = u16_at(datagram, offset + 2).map_err(|_| Invalid::Extension)?;
        let start = offset + 4;
        let end = start + 4 * usize::from(words);
        if end > len {
            return Err(Invalid::Extension);
        }
        let block = datagram.get(start..end).ok_or(Invalid::Extension)?;
        if profile == ONE_BYTE_PROFILE {
            check_one_byte_elements(block)?;
        } else if profile & 0xfff0 == TWO_BYTE_PROFILE {
            check_two_byte_elements(block)?;
        }
        offset = end;
    }
    Ok(offset)
}

/// RFC 8285 §4.2: `ID(4) L(4)` then L+1 bytes; zero bytes are padding.
fn check_one_byte_elements(block: &[u8]) -> Result<(), Invalid> {
    let mut at = 0;
    while let Some(&head) = block.get(at) {
        at += 1;
        if head == 0 {
            continue;
        }
        if head >> 4 == RESERVED_ONE_BYTE_ID {
            return Err(Invalid::ReservedExtensionId);
        }
        at += usize::from(head & 0x0f) + 1;
        if at > block.len() {
            return Err(Invalid::ExtensionElement);
        }
    }
    Ok(())
}

/// RFC 8285 §4.3: `ID(8) L(8)` then L bytes; zero bytes are padding.
fn check_two_byte_elements(block: &[u8]) -> Result<(), Invalid> {
    let mut at = 0;
    while let Some(&id) = block.get(at) {
        at += 1;
        if id == 0 {
            continue;
        }
        let length = block.get(at).copied().ok_or(Invalid::ExtensionElement)?;
        at += 1 + usize::from(length);
        if at > block.len() {
            return Err(Invalid::ExtensionElement);
        }
    }
    Ok(())
}

/// Checks a compound RTCP packet (RFC 3550 §6.1 and appendix A.2, relaxed as RFC 5506 allows:
/// the first packet need not be a report): every packet version 2 with a type in 192-223, the
/// lengths adding up to the datagram exactly, padding only on the last packet and within it.
pub fn check_rtcp(datagram: &[u8]) -> Result<(), Invalid> {
    if datagram.len() < 4 {
        return Err(Invalid::Short);
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(Invalid::TooLarge);
    }
    let mut at = 0;
    while at < datagram.len() {
        let first = byte(datagram, at).map_err(|_| Invalid::RtcpLength)?;
        let version = first >> 6;
        if version != 2 {
            return Err(Invalid::Version(version));
        }
        let packet_type = byte(datagram, at + 1).map_err(|_| Invalid::RtcpLength)?;
        if !(192..=223).contains(&packet_type) {
            return Err(Invalid::RtcpType);
        }
        let words = u16_at(datagram, at + 2).map_err(|_| Invalid::RtcpLength)?;
        let end = at + 4 * (usize::from(words) + 1);
        if end > datagram.len() {
            return Err(Invalid::RtcpLength);
        }
        if first & 0x20 != 0 {
            if end != datagram.len() {
                return Err(Invalid::RtcpPadding);
            }
            let count = usize::from(byte(datagram, end - 1)?);
            if count == 0 || count > end - at - 4 {
                return Err(Invalid::Padding);
            }
        }
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The datagram of issue 12, attack 2: a one-byte extension element claiming 16 bytes in a
    /// block of 4.
    const ATTACK: [u8; 20] =
        [0x90, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xBE, 0xDE, 0x00, 0x01, 0x1F, 0x00, 0x00, 0x00];

    fn rtp(first: u8, tail: &[u8]) -> Vec<u8> {
        let mut packet = vec![first, 0, 0, 1, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        packet.extend_from_slice(tail);
        packet
    }

    #[test]
    fn the_attack_datagram_is_refused_and_would_panic_the_crate() {
        assert_eq!(check_rtp(&ATTACK), Err(Invalid::ExtensionElement));
        let crate_parse = std::panic::catch_unwind(|| {
            use webrtc_util::Unmarshal;
            let _ = rtp::packet::Packet::unmarshal(&mut &ATTACK[..]);
        });
        assert!(crate_parse.is_err(), "the rtp crate panics on it: this check is what stands in between");
    }

    #[test]
    fn ordinary_packets_pass() {
        assert_eq!(check_rtp(&rtp(0x80, &[0xff; 160])), Ok(()));
        // Two CSRCs, then a one-byte extension with two elements and padding.
        let mut with_ext = vec![0, 0, 0, 1, 0, 0, 0, 2];
        with_ext.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x02, 0x10, 0xAA, 0x22, 1, 2, 3, 0, 0]);
        with_ext.extend_from_slice(&[7; 20]);
        assert_eq!(check_rtp(&rtp(0x92, &with_ext)), Ok(()));
        // A two-byte extension (an element of length 0 is allowed there).
        assert_eq!(check_rtp(&rtp(0x90, &[0x10, 0x00, 0x00, 0x02, 5, 0, 6, 1, 9, 0, 0, 0, 9, 9])), Ok(()));
        // An RFC 3550 extension of another profile: only its block length matters.
        assert_eq!(check_rtp(&rtp(0x90, &[0xAB, 0xCD, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff])), Ok(()));
        // Padding of 3, counted in the last byte.
        assert_eq!(check_rtp(&rtp(0xA0, &[1, 2, 3, 0, 0, 3])), Ok(()));
    }

    #[test]
    fn every_length_is_checked() {
        assert_eq!(check_rtp(&[0x80; 11]), Err(Invalid::Short));
        assert_eq!(check_rtp(&vec![0x80; MAX_DATAGRAM + 1]), Err(Invalid::TooLarge));
        assert_eq!(check_rtp(&rtp(0x40, &[])), Err(Invalid::Version(1)));
        assert_eq!(check_rtp(&rtp(0x8f, &[0; 8])), Err(Invalid::Csrc));
        assert_eq!(check_rtp(&rtp(0x90, &[0xBE, 0xDE])), Err(Invalid::Extension));
        assert_eq!(check_rtp(&rtp(0x90, &[0xBE, 0xDE, 0x00, 0x02, 0, 0, 0, 0])), Err(Invalid::Extension));
        assert_eq!(check_rtp(&rtp(0x90, &[0xBE, 0xDE, 0x00, 0x01, 0xF0, 0, 0, 0])), Err(Invalid::ReservedExtensionId));
        // An element running past its block but not past the datagram would be misread.
        assert_eq!(
            check_rtp(&rtp(0x90, &[0xBE, 0xDE, 0x00, 0x01, 0x13, 1, 2, 3, 4, 5, 6])),
            Err(Invalid::ExtensionElement)
        );
        // A two-byte element cut after its id, and one longer than its block.
        assert_eq!(check_rtp(&rtp(0x90, &[0x10, 0x00, 0x00, 0x01, 0, 0, 0, 5])), Err(Invalid::ExtensionElement));
        assert_eq!(check_rtp(&rtp(0x90, &[0x10, 0x00, 0x00, 0x01, 5, 9, 0, 0])), Err(Invalid::ExtensionElement));
        assert_eq!(check_rtp(&rtp(0xA0, &[])), Err(Invalid::Padding));
        assert_eq!(check_rtp(&rtp(0xA0, &[1, 0])), Err(Invalid::Padding));
        assert_eq!(check_rtp(&rtp(0xA0, &[1, 9])), Err(Invalid::Padding));
    }

    #[test]
    fn whatever_passes_parses_without_a_panic() {
        // Random datagrams biased towards RTP with extensions: the crate must never see one
        // that makes it panic.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut passed = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(0..64);
            let mut datagram: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if let Some(first) = datagram.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            if datagram.len() > 14 && rng.random_bool(0.7) {
                let at = 12 + 4 * usize::from(datagram[0] & 0x0f);
                if let Some(profile) = datagram.get_mut(at..at + 2) {
                    profile.copy_from_slice(if rng.random_bool(0.5) { &[0xBE, 0xDE] } else { &[0x10, 0x00] });
                }
            }
            if check_rtp(&datagram).is_ok() && !is_rtcp(&datagram) {
                passed += 1;
                assert!(crate::media::rtp::parse(&datagram).is_some(), "{datagram:02x?}");
            }
        }
        assert!(passed > 1000, "the generator makes valid packets too ({passed})");
    }

    #[test]
    fn rtcp_compounds_add_up() {
        // A receiver report with no blocks, then an SDES chunk padded to its word.
        let rr = [0x80, 201, 0x00, 0x01, 0, 0, 0, 1];
        let sdes = [0x81, 202, 0x00, 0x02, 0, 0, 0, 1, 1, 1, b'a', 0];
        let compound = [&rr[..], &sdes[..]].concat();
        assert_eq!(check_rtcp(&compound), Ok(()));
        assert!(is_rtcp(&compound) && !is_rtcp(&rtp(0x80, &[0; 4])));
        assert_eq!(check_rtcp(&compound[..compound.len() - 1]), Err(Invalid::RtcpLength));
        assert_eq!(check_rtcp(&[0x80, 201, 0x00, 0x05, 0, 0, 0, 1]), Err(Invalid::RtcpLength));
        assert_eq!(check_rtcp(&[0x80, 100, 0x00, 0x01, 0, 0, 0, 1]), Err(Invalid::RtcpType));
        assert_eq!(check_rtcp(&[0x40, 201, 0x00, 0x01, 0, 0, 0, 1]), Err(Invalid::Version(1)));
        assert_eq!(check_rtcp(&[0x80, 201]), Err(Invalid::Short));
        // Padding only on the last packet, and not longer than it.
        let padded_first = [&[0xA0, 201, 0x00, 0x01, 0, 0, 0, 4][..], &sdes[..]].concat();
        assert_eq!(check_rtcp(&padded_first), Err(Invalid::RtcpPadding));
        assert_eq!(check_rtcp(&[0xA0, 201, 0x00, 0x01, 0, 0, 0, 4]), Ok(()));
        assert_eq!(check_rtcp(&[0xA0, 201, 0x00, 0x01, 0, 0, 0, 9]), Err(Invalid::Padding));
        assert_eq!(check_rtcp(&[0xA0, 201, 0x00, 0x01, 0, 0, 0, 0]), Err(Invalid::Padding));
    }
}
