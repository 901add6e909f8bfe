//! DTMF digits from a phone: RFC 4733 telephone-events in RTP (each event repeats in several
//! packets sharing one timestamp, the last three flagged "end") and SIP INFO bodies
//! (`application/dtmf-relay` `Signal=5`, or `application/dtmf` `5`).

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
