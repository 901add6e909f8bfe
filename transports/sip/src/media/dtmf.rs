//! DTMF digits from a phone: RFC 4733 telephone-events in RTP (each event repeats in several
//! packets sharing one timestamp, the last three flagged "end") and SIP INFO bodies
//! (`application/dtmf-relay` `Signal=5`, or `application/dtmf` `5`); and digits to a phone
//! ([`EventSender`]): each a 100 ms event in 20 ms packets, its end sent three times, 60 ms of
//! audio between digits.

use std::collections::VecDeque;

/// Frames (20 ms) an event we send lasts, and the frames of audio between two.
const EVENT_FRAMES: u32 = 5;
const GAP_FRAMES: u32 = 3;
/// Digits waiting to be sent, at most (a longer string is cut).
const MAX_QUEUED: usize = 64;
/// RFC 4733 §2.5.1.1: the end packet is sent three times.
pub const END_REPEATS: usize = 3;

/// The digit of an RFC 4733 event code (0-9, `*`, `#`, A-D).
fn event_digit(event: u8) -> Option<char> {
    Some(match event {
        0..=9 => char::from(b'0' + event),
        10 => '*',
        11 => '#',
        12..=15 => char::from(b'A' + event - 12),
        _ => return None,
    })
}

/// The RFC 4733 event code of a digit.
pub fn digit_event(digit: char) -> Option<u8> {
    Some(match digit.to_ascii_uppercase() {
        d @ '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        d @ 'A'..='D' => d as u8 - b'A' + 12,
        _ => return None,
    })
}

/// One 20 ms tick's telephone-event: the payload, whether it starts the event (marker bit, a
/// new RTP timestamp) and whether it is the end (sent [`END_REPEATS`] times).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTick {
    pub payload: [u8; 4],
    pub first: bool,
    pub end: bool,
}

/// Paces digits out as RFC 4733 events, one call to [`EventSender::tick`] per 20 ms frame.
#[derive(Debug, Default)]
pub struct EventSender {
    queue: VecDeque<u8>,
    /// The event playing and its frames so far; then the gap's frames left.
    playing: Option<(u8, u32)>,
    gap: u32,
}

impl EventSender {
    /// Queues the digits of `digits` (others are skipped); returns how many were taken.
    pub fn push(&mut self, digits: &str) -> usize {
        let mut taken = 0;
        for event in digits.chars().filter_map(digit_event) {
            if self.queue.len() >= MAX_QUEUED {
                break;
            }
            self.queue.push_back(event);
            taken += 1;
        }
        taken
    }

    pub fn is_idle(&self) -> bool {
        self.playing.is_none() && self.queue.is_empty()
    }

    /// This frame's event packet, or `None` for a frame of audio. `rate` is the
    /// telephone-event clock (durations count in it).
    pub fn tick(&mut self, rate: u32) -> Option<EventTick> {
        if self.playing.is_none() {
            if self.gap > 0 {
                self.gap -= 1;
                return None;
            }
            self.playing = Some((self.queue.pop_front()?, 0));
        }
        let (event, frames) = self.playing.as_mut()?;
        *frames += 1;
        let (event, frames) = (*event, *frames);
        let end = frames >= EVENT_FRAMES;
        let duration = u16::try_from(u64::from(frames) * 20 * u64::from(rate) / 1000).unwrap_or(u16::MAX);
        let [high, low] = duration.to_be_bytes();
        let flags = if end { 0x80 } else { 0 } | 10;
        if end {
            self.playing = None;
            self.gap = GAP_FRAMES;
        }
        Some(EventTick { payload: [event, flags, high, low], first: frames == 1, end })
    }
}

/// Turns a telephone-event RTP stream into digits, each reported once.
#[derive(Debug, Default)]
pub struct EventReceiver {
    /// The RTP timestamp and event code of the last event reported: its repeats share them.
    last: Option<(u32, u8)>,
    /// Whether that event's end packet was seen.
    ended: bool,
}

impl EventReceiver {
    /// A telephone-event payload with its packet's RTP timestamp; returns a digit the first
    /// time an event is seen.
    pub fn receive(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let (&event, &flags) = (payload.first()?, payload.get(1)?);
        if payload.len() < 4 {
            return None;
        }
        let end = flags & 0x80 != 0;
        if self.last == Some((timestamp, event)) {
            // A repeat of the current event — unless it already ended and this one starts
            // afresh (senders replaying a recording reuse timestamps).
            if !self.ended || end {
                self.ended |= end;
                return None;
            }
        }
        let digit = event_digit(event)?;
        self.last = Some((timestamp, event));
        self.ended = end;
        Some(digit)
    }
}

/// The digit an INFO request carries, if it carries one.
pub fn info_digit(content_type: Option<&str>, body: &[u8]) -> Option<char> {
    let text = std::str::from_utf8(body).ok()?;
    let signal = match content_type? {
        "application/dtmf-relay" => text.lines().find_map(|line| {
            let (name, value) = line.split_once('=')?;
            name.trim().eq_ignore_ascii_case("signal").then(|| value.trim())
        })?,
        "application/dtmf" => text.trim(),
        _ => return None,
    };
    let mut chars = signal.chars();
    let digit = chars.next()?.to_ascii_uppercase();
    let valid = chars.next().is_none() && (digit.is_ascii_digit() || matches!(digit, '*' | '#' | 'A'..='D'));
    if valid {
        return Some(digit);
    }
    // Some phones send the event code instead of the character (`Signal=11` for `#`).
    signal.parse::<u8>().ok().and_then(event_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_digits_read_back_once_each_paced_with_gaps() {
        let mut sender = EventSender::default();
        assert_eq!(sender.push("1#x9"), 3, "x is not a digit");
        let mut receiver = EventReceiver::default();
        let (mut heard, mut timestamp, mut audio_frames) = (String::new(), 0u32, 0);
        for frame in 0..60u32 {
            match sender.tick(8000) {
                Some(tick) => {
                    if tick.first {
                        timestamp = frame * 160;
                    }
                    let repeats = if tick.end { END_REPEATS } else { 1 };
                    for _ in 0..repeats {
                        heard.extend(receiver.receive(timestamp, &tick.payload));
                    }
                    if tick.end {
                        assert_eq!(u16::from_be_bytes([tick.payload[2], tick.payload[3]]), 800, "100 ms at 8 kHz");
                    }
                }
                None => audio_frames += 1,
            }
        }
        assert_eq!(heard, "1#9");
        assert!(sender.is_idle());
        assert_eq!(audio_frames, 60 - 15, "three digits of five frames each");
    }

    #[test]
    fn repeated_event_packets_make_one_digit() {
        let mut rx = EventReceiver::default();
        // Event 1, volume 10, growing duration; then the end bit three times.
        let start = [1u8, 10, 0, 160];
        let end = [1u8, 0x80 | 10, 3, 32];
        assert_eq!(rx.receive(1000, &start), Some('1'));
        assert_eq!(rx.receive(1000, &start), None);
        for _ in 0..3 {
            assert_eq!(rx.receive(1000, &end), None);
        }
        assert_eq!(rx.receive(2000, &[11, 10, 0, 160]), Some('#'));
        // The same recording played again: same timestamp, a fresh start after the end.
        assert_eq!(rx.receive(2000, &[11, 0x80 | 10, 3, 32]), None);
        assert_eq!(rx.receive(2000, &[11, 10, 0, 160]), Some('#'));
        assert_eq!(rx.receive(3000, &[99, 10, 0, 160]), None, "not a DTMF event");
        assert_eq!(rx.receive(4000, &[5]), None, "too short");
    }

    #[test]
    fn info_bodies() {
        assert_eq!(info_digit(Some("application/dtmf-relay"), b"Signal=5\r\nDuration=160\r\n"), Some('5'));
        assert_eq!(info_digit(Some("application/dtmf-relay"), b"Signal= #\r\n"), Some('#'));
        assert_eq!(info_digit(Some("application/dtmf-relay"), b"Signal=11\r\n"), Some('#'));
        assert_eq!(info_digit(Some("application/dtmf"), b"7"), Some('7'));
        assert_eq!(info_digit(Some("text/plain"), b"7"), None);
        assert_eq!(info_digit(Some("application/dtmf-relay"), b"Duration=1"), None);
        assert_eq!(info_digit(None, b"7"), None);
    }
}
