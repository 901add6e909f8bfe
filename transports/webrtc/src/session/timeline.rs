//! One outgoing RTP timeline per sending m-line, kept continuous while its source changes (the
//! publisher reconnects, the viewer is moved to another track): the first frame of a new source
//! continues from the last timestamp written, advanced by the wall-clock time between the two
//! frames, so the receiver's jitter buffer sees time move on normally.
//!
//! The first source starts at a random timestamp (RFC 3550 §5.1), not at its own: RTMP, SRT
//! and MoQ publishers count from zero, and str0m sends a sender report with RTP time 0 before a
//! stream's first packet. Chromium takes such a report as a real measurement when the stream's
//! timestamps are near it (it discards one more than 2^25 ticks away) and maps the stream's
//! clock through it for its next 20 reports: a room tab's audio then played up to half a
//! second off its video. From a random start, the early report is discarded.

use std::time::Instant;

use junction_core::{MediaTime, TrackId};

#[derive(Debug, Default)]
pub(crate) struct Timeline {
    source: Option<TrackId>,
    /// Added (wrapping) to the source's timestamps.
    offset: u64,
    last: Option<Written>,
}

#[derive(Debug, Clone, Copy)]
struct Written {
    ticks: u64,
    rate: u32,
    arrival: Instant,
}

impl Timeline {
    /// The outgoing timestamp, in `rate` Hz, of a frame of `source` stamped `time`.
    pub(crate) fn map(&mut self, source: &TrackId, time: MediaTime, arrival: Instant, rate: u32) -> u64 {
        let ticks = time.rebase(rate).ticks;
        if self.source.as_ref() != Some(source) {
            self.source = Some(source.clone());
            self.offset = match self.last {
                Some(last) => {
                    let last_ticks = MediaTime::new(last.ticks, last.rate).rebase(rate).ticks;
                    let elapsed = arrival.saturating_duration_since(last.arrival);
                    let step = (elapsed.as_nanos() * rate as u128 / 1_000_000_000).max(1) as u64;
                    last_ticks.wrapping_add(step).wrapping_sub(ticks)
                }
                None => rand::random::<u32>().into(),
            };
        }
        let out = ticks.wrapping_add(self.offset);
        self.last = Some(Written { ticks: out, rate, arrival });
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_new_source_continues_where_the_old_one_stopped() {
        let (a, b) = (TrackId::new("TR_a").unwrap(), TrackId::new("TR_b").unwrap());
        let start = Instant::now();
        let mut timeline = Timeline::default();
        let first = timeline.map(&a, MediaTime::new(90_000, 90_000), start, 90_000);
        let t = start + Duration::from_millis(33);
        assert_eq!(timeline.map(&a, MediaTime::new(93_000, 90_000), t, 90_000).wrapping_sub(first), 3_000);

        // The reconnected publisher starts its clock anywhere; 100 ms later on the wall clock.
        let t2 = t + Duration::from_millis(100);
        assert_eq!(timeline.map(&b, MediaTime::new(5, 90_000), t2, 90_000).wrapping_sub(first), 3_000 + 9_000);
        let t3 = t2 + Duration::from_millis(33);
        assert_eq!(
            timeline.map(&b, MediaTime::new(3_005, 90_000), t3, 90_000).wrapping_sub(first),
            3_000 + 9_000 + 3_000
        );
    }

    #[test]
    fn timestamps_are_rebased_to_the_payload_clock_and_never_stand_still() {
        let a = TrackId::new("TR_a").unwrap();
        let b = TrackId::new("TR_b").unwrap();
        let now = Instant::now();
        let mut timeline = Timeline::default();
        let first = timeline.map(&a, MediaTime::new(8_000, 8_000), now, 48_000);
        assert_eq!(first.wrapping_sub(48_000) >> 32, 0, "1 s at 8 kHz is 48 000 ticks at 48 kHz, from a 32-bit start");
        // Same instant, new source: still moves forward by at least one tick.
        assert_eq!(timeline.map(&b, MediaTime::new(0, 48_000), now, 48_000), first + 1);
    }
}
