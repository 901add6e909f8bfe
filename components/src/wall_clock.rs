//! Server instants as wall-clock time, for outputs that stamp media with it (a recording's
//! manifest, an HLS playlist's `EXT-X-PROGRAM-DATE-TIME`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Both clocks read once, so every instant an output places gets the same offset (the monotonic clock does not jump when NTP steps the wall clock).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix_ms: f64,
}

impl WallClock {
    pub fn now() -> WallClock {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        WallClock { instant: Instant::now(), unix_ms }
    }

    pub fn unix_ms(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.unix_ms + after.as_secs_f64() * 1000.0,
            None => self.unix_ms - self.instant.duration_since(at).as_secs_f64() * 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn instants_before_and_after_the_reading_are_placed_on_one_clock() {
        let clock = WallClock::now();
        let later = clock.instant + Duration::from_millis(250);
        assert!((clock.unix_ms(later) - clock.unix_ms(clock.instant) - 250.0).abs() < 0.001);
        let earlier = clock.instant.checked_sub(Duration::from_millis(40)).unwrap();
        assert!((clock.unix_ms(clock.instant) - clock.unix_ms(earlier) - 40.0).abs() < 0.001);
    }
}
