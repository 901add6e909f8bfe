//! The media of one bench call: 20 ms RTP packets of PCMU (160 bytes) carrying the caller's own
//! tone, and the count of what comes back — the room's mix, which the server makes from the other
//! callers' voices (decoded, mixed, re-encoded), so it carries no stamp of ours: loss is read from
//! its RTP sequence numbers, and content from its loudness. G.711 µ-law is junction-audio's.

use junction_audio::codec::G711Law;

use crate::stats::SeqSet;

/// Samples per 20 ms packet at 8 kHz.
pub const SAMPLES_PER_PACKET: usize = 160;
pub const PACKETS_PER_SECOND: u64 = 50;
const PCMU: u8 = 0;

/// One second of a sine tone at `hz` (a whole number of cycles, so it loops without a click),
/// µ-law encoded.
pub fn tone(hz: u32) -> Vec<u8> {
    (0..SAMPLES_PER_PACKET * PACKETS_PER_SECOND as usize)
        .map(|n| {
            let phase = 2.0 * std::f64::consts::PI * f64::from(hz) * n as f64 / 8000.0;
            G711Law::MuLaw.encode((phase.sin() * 8000.0) as i16)
        })
        .collect()
}

/// The RTP packet number `index` of a call's stream (PCMU, 20 ms each, marker on the first).
pub fn packet(ssrc: u32, index: u64, tone: &[u8]) -> Vec<u8> {
    let seq = index as u16;
    let timestamp = (index as u32).wrapping_mul(SAMPLES_PER_PACKET as u32);
    let marker = if index == 0 { 0x80 } else { 0 };
    let mut packet = Vec::with_capacity(12 + SAMPLES_PER_PACKET);
    packet.extend_from_slice(&[0x80, marker | PCMU]);
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    let start = (index as usize % PACKETS_PER_SECOND as usize) * SAMPLES_PER_PACKET;
    packet.extend_from_slice(tone.get(start..start + SAMPLES_PER_PACKET).unwrap_or(&[0xff; SAMPLES_PER_PACKET]));
    packet
}

/// What one call received: PCMU packets of the mix, by extended sequence number.
#[derive(Debug, Default)]
pub struct MixLog {
    pub seen: SeqSet,
    /// The highest extended sequence number so far (wraps of the 16-bit number unrolled).
    last: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets whose audio is louder than quiet noise: the other callers' tones.
    pub audible: u64,
    /// Packets that were not PCMU RTP (another payload type, too short): a server bug if not 0.
    pub malformed: u64,
}

/// RMS above which a 20 ms packet counts as carrying a voice (the tones are ~5,600 RMS).
const AUDIBLE_RMS: f64 = 300.0;

impl MixLog {
    /// Takes one datagram from the RTP socket; returns its payload length if it was PCMU RTP.
    pub fn receive(&mut self, datagram: &[u8]) -> Option<usize> {
        let (Some(&first), Some(&second), Some(seq), Some(payload)) =
            (datagram.first(), datagram.get(1), datagram.get(2..4), datagram.get(12..))
        else {
            self.malformed += 1;
            return None;
        };
        if first >> 6 != 2 || second & 0x7f != PCMU || payload.is_empty() {
            self.malformed += 1;
            return None;
        }
        let seq = u16::from_be_bytes([seq[0], seq[1]]);
        let extended = extend(self.last, seq);
        self.last = Some(self.last.map_or(extended, |last| last.max(extended)));
        self.seen.insert(extended);
        self.packets += 1;
        self.bytes += datagram.len() as u64;
        let energy: f64 = payload.iter().map(|&b| f64::from(G711Law::MuLaw.decode(b)).powi(2)).sum();
        if (energy / payload.len() as f64).sqrt() > AUDIBLE_RMS {
            self.audible += 1;
        }
        Some(payload.len())
    }

    /// Sequence numbers from the first to the last received: what the server sent.
    #[cfg(test)]
    pub fn expected(&self) -> u64 {
        match (self.seen.first(), self.last) {
            (Some(first), Some(last)) => last + 1 - first,
            _ => 0,
        }
    }

    /// The end of the received range, for [`crate::stats::FrameCounts::add_stream`].
    pub fn end(&self) -> u64 {
        self.last.map_or(0, |last| last + 1)
    }
}

/// Unrolls a 16-bit sequence number next to the highest one seen (RFC 3550 A.1), starting at
/// 65536 so a late packet just before the first one stays positive.
fn extend(last: Option<u64>, seq: u16) -> u64 {
    let Some(last) = last else { return 65_536 + u64::from(seq) };
    let cycle = last & !0xffff;
    let candidates = [cycle.wrapping_sub(65_536), cycle, cycle + 65_536].map(|c| c + u64::from(seq));
    candidates.into_iter().filter(|&c| c >= 65_536).min_by_key(|&c| c.abs_diff(last)).unwrap_or(cycle + u64::from(seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_audible_and_silence_is_not() {
        let tone = tone(440);
        let mut log = MixLog::default();
        log.receive(&packet(7, 0, &tone));
        log.receive(&packet(7, 1, &[0xff; SAMPLES_PER_PACKET * 50]));
        assert_eq!((log.packets, log.audible, log.malformed), (2, 1, 0));
        assert_eq!(packet(7, 1, &tone).len(), 12 + 160);
        assert_eq!(log.receive(&[0x80, 0, 0]), None);
        assert_eq!(log.receive(&[0x80, 8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xd5]), None, "PCMA is not PCMU");
        assert_eq!(log.malformed, 2);
    }

    #[test]
    fn sequence_numbers_are_unrolled_across_the_wrap() {
        let mut log = MixLog::default();
        let tone = tone(440);
        for index in (65_530u64..65_546).filter(|i| i % 5 != 0) {
            log.receive(&packet(1, index, &tone));
        }
        log.receive(&packet(1, 65_531, &tone)); // a duplicate
        // 65531 ..= 65544 received but for 65535 and 65540.
        assert_eq!(log.expected(), 65_544 - 65_531 + 1);
        assert_eq!(log.seen.distinct(), 12);
        assert_eq!(log.seen.duplicates(), 1);
    }
}
