//! The engine's unit of media: one encoded access unit with its codec, timestamp, keyframe flag
//! and simulcast layer. Payloads are `Bytes`, so fanning a frame out to many subscribers shares
//! the payload instead of copying it.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::Codec;

/// A timestamp in a codec's clock: `ticks` counted at `rate` Hz, extended to 64 bits so it never
/// wraps within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime {
    pub ticks: u64,
    pub rate: u32,
}

impl MediaTime {
    pub fn new(ticks: u64, rate: u32) -> Self {
        debug_assert!(rate > 0, "a clock rate of 0 Hz");
        Self { ticks, rate: rate.max(1) }
    }

    /// The same instant expressed in another clock, rounded down.
    pub fn rebase(self, rate: u32) -> MediaTime {
        let rate = rate.max(1);
        if rate == self.rate {
            return self;
        }
        MediaTime { ticks: (self.ticks as u128 * rate as u128 / self.rate as u128) as u64, rate }
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_nanos((self.ticks as u128 * 1_000_000_000 / self.rate as u128) as u64)
    }

    pub fn as_micros(self) -> u64 {
        (self.ticks as u128 * 1_000_000 / self.rate as u128) as u64
    }

    /// This time moved forward by `d`, in the same clock.
    pub fn add_duration(self, d: Duration) -> MediaTime {
        let extra = (d.as_nanos() * self.rate as u128 / 1_000_000_000) as u64;
        MediaTime { ticks: self.ticks.wrapping_add(extra), rate: self.rate }
    }
}

/// One encoded access unit. See [`Codec`] for the payload convention of each codec.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    pub codec: Codec,
    pub time: MediaTime,
    /// A frame a decoder can start from. Audio frames are always keyframes.
    pub keyframe: bool,
    /// Simulcast layer index, 0 = lowest (and the only one when the track is not simulcast).
    pub layer: u8,
    /// When the frame entered the server: the base for forwarding latency and for keeping
    /// timestamps continuous when a subscriber switches simulcast layers.
    pub arrival: Instant,
    /// When the frame was captured, on the server's clock, as well as the publisher tells: from
    /// a WebRTC publisher's sender reports; its arrival otherwise. Never later than `arrival`.
    /// Frames of one publisher captured together have the same instant whatever each queued on
    /// the way: WebRTC sender reports are built from it (lip sync).
    pub captured: Instant,
    pub payload: Bytes,
}

impl MediaFrame {
    /// An audio frame: always a keyframe, layer 0.
    pub fn audio(codec: Codec, time: MediaTime, arrival: Instant, payload: Bytes) -> Self {
        Self { codec, time, keyframe: true, layer: 0, arrival, captured: arrival, payload }
    }

    pub fn video(codec: Codec, time: MediaTime, keyframe: bool, arrival: Instant, payload: Bytes) -> Self {
        Self { codec, time, keyframe, layer: 0, arrival, captured: arrival, payload }
    }

    /// The frame, captured at `at` (at most its arrival).
    pub fn captured_at(mut self, at: Instant) -> Self {
        self.captured = at.min(self.arrival);
        self
    }

    pub fn with_layer(mut self, layer: u8) -> Self {
        self.layer = layer;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_captured_when_it_arrived_unless_told_earlier_never_later() {
        let arrival = Instant::now() + Duration::from_secs(1);
        let frame = MediaFrame::audio(Codec::Opus, MediaTime::new(0, 48_000), arrival, Bytes::new());
        assert_eq!(frame.captured, arrival);
        let earlier = arrival - Duration::from_millis(40);
        assert_eq!(frame.clone().captured_at(earlier).captured, earlier);
        assert_eq!(frame.captured_at(arrival + Duration::from_millis(40)).captured, arrival);
    }

    #[test]
    fn media_time_converts_between_clocks() {
        let t = MediaTime::new(90_000, 90_000);
        assert_eq!(t.rebase(48_000), MediaTime::new(48_000, 48_000));
        assert_eq!(t.as_duration(), Duration::from_secs(1));
        assert_eq!(MediaTime::new(960, 48_000).as_micros(), 20_000);
        assert_eq!(MediaTime::new(0, 8_000).add_duration(Duration::from_millis(20)).ticks, 160);
    }
}
