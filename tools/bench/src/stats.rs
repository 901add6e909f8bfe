//! What receivers count: latency and join-time histograms (HdrHistogram, µs resolution) and,
//! per received stream, the set of frame sequence numbers that arrived — from which frames
//! sent, received and lost are computed against what the publisher actually sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of a distribution, in milliseconds; `None` when nothing was measured.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub samples: u64,
}

/// A histogram of durations recorded in µs, from 1 µs to 10 minutes at 3 significant digits.
pub struct Micros(Histogram<u64>);

impl Default for Micros {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Micros {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Micros({:?})", self.percentiles_ms())
    }
}

impl Micros {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts: 1 <= low, high >= 2 * low, sigfig <= 5.
        Micros(Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds")))
    }

    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    pub fn add(&mut self, other: &Micros) {
        // Same bounds on both sides, so adding never fails; saturate rather than panic anyway.
        for value in other.0.iter_recorded() {
            self.0.saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn percentiles_ms(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        let ms = |q: f64| Some(self.0.value_at_quantile(q) as f64 / 1000.0);
        Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: Some(self.0.max() as f64 / 1000.0),
            samples: self.len(),
        }
    }
}

/// The distinct sequence numbers one receiver got of one stream, as a bitmap from the lowest.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    base: u64,
    words: Vec<u64>,
    distinct: u64,
    duplicates: u64,
}

impl SeqSet {
    /// Records `seq`; returns false if it was already there (a duplicate).
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.words.is_empty() {
            self.base = seq - seq % 64;
        }
        if seq < self.base {
            // Reordered before the first one seen: grow at the front, in whole words.
            let new_base = seq - seq % 64;
            let extra = ((self.base - new_base) / 64) as usize;
            self.words.splice(0..0, std::iter::repeat_n(0, extra));
            self.base = new_base;
        }
        let offset = seq - self.base;
        let (word, bit) = ((offset / 64) as usize, offset % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        let mask = 1u64 << bit;
        let fresh = self.words[word] & mask == 0;
        if fresh {
            self.words[word] |= mask;
            self.distinct += 1;
        } else {
            self.duplicates += 1;
        }
        fresh
    }

    pub fn first(&self) -> Option<u64> {
        let (index, word) = self.words.iter().enumerate().find(|(_, w)| **w != 0)?;
        Some(self.base + index as u64 * 64 + u64::from(word.trailing_zeros()))
    }

    /// How many distinct sequence numbers below `end` were received.
    pub fn count_below(&self, end: u64) -> u64 {
        if end <= self.base {
            return 0;
        }
        let offset = end - self.base;
        let full = ((offset / 64) as usize).min(self.words.len());
        let mut count: u64 = self.words[..full].iter().map(|w| u64::from(w.count_ones())).sum();
        if let Some(word) = self.words.get(full) {
            let bits = offset % 64;
            if bits > 0 {
                count += u64::from((word & ((1u64 << bits) - 1)).count_ones());
            }
        }
        count
    }

    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// Frames of one run, summed over every (receiver, stream) pair.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames the publishers sent.
    pub published: u64,
    /// Frames sent towards receivers: for each receiver and stream, every frame the publisher
    /// sent from the first one that receiver got (video starts at a keyframe) to the end.
    pub sent: u64,
    /// Of those, the ones that arrived (duplicates counted once).
    pub received: u64,
    /// Of those, the ones that never arrived: `sent - received`.
    pub lost: u64,
    /// Copies of a frame that had already arrived.
    pub duplicated: u64,
    /// Frames that arrived with a sequence number the publisher never sent (a bug if not 0).
    pub unexpected: u64,
    /// Frames that carried no stamp and so are outside the counts above: media the server made
    /// itself, such as AAC transcoded to Opus.
    pub unstamped: u64,
    /// Of those, the ones that arrived during the measured window.
    pub unstamped_in_window: u64,
}

impl FrameCounts {
    /// Adds one receiver's view of one stream, whose publisher sent frames `0..published`.
    pub fn add_stream(&mut self, seen: &SeqSet, published: u64) {
        self.duplicated += seen.duplicates();
        let Some(first) = seen.first() else { return };
        let in_window = seen.count_below(published);
        let expected = published.saturating_sub(first);
        self.sent += expected;
        self.received += in_window;
        self.lost += expected.saturating_sub(in_window);
        self.unexpected += seen.distinct() - in_window;
    }

    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { self.lost as f64 * 100.0 / self.sent as f64 }
    }
}

/// Every stream one receiver got, keyed by the publisher's stream id. By convention a
/// publisher's video is stream `2p` and its audio `2p + 1`.
#[derive(Debug, Default)]
pub struct ReceiverLog {
    pub streams: HashMap<u32, SeqSet>,
    pub latency: Micros,
    pub video_latency: Micros,
    pub audio_latency: Micros,
    pub frames: u64,
    /// Frames that arrived without a stamp (made by the server, e.g. transcoded audio).
    pub unstamped: u64,
    /// Arrival time minus media time of the earliest server-made frame so far, in µs: the
    /// reference the delay of every later one is measured from (a receiver gets one server-made
    /// stream, the transcoded audio, so one media clock).
    unstamped_offset_floor: Option<i64>,
    /// How much later than that earliest one each server-made frame arrived, against its own
    /// media time, inside the window: the queueing the server added on their way (a transcoder
    /// falling behind), which no stamp can show.
    pub unstamped_delay: Micros,
    /// How long each media datagram waited in the receiver's socket before the tool read it,
    /// inside the window.
    pub tool_wait: Micros,
    pub packets: u64,
    pub bytes: u64,
}

impl ReceiverLog {
    /// Records a stamped frame; returns false if it was a duplicate.
    pub fn frame(&mut self, stream: u32, seq: u64, latency_us: Option<u64>) -> bool {
        self.frames += 1;
        let fresh = self.streams.entry(stream).or_default().insert(seq);
        if fresh && let Some(latency) = latency_us {
            self.latency.record(latency);
            if stream.is_multiple_of(2) { &mut self.video_latency } else { &mut self.audio_latency }.record(latency);
        }
        fresh
    }

    /// Records a frame the server made, with its media time and its arrival on the tool's clock
    /// (both µs); its delay counts when `measuring`.
    pub fn unstamped_frame(&mut self, media_time_us: u64, arrival_us: u64, measuring: bool) {
        self.unstamped += 1;
        let offset = arrival_us as i64 - media_time_us as i64;
        let floor = self.unstamped_offset_floor.map_or(offset, |floor| floor.min(offset));
        self.unstamped_offset_floor = Some(floor);
        if measuring {
            self.unstamped_delay.record((offset - floor) as u64);
        }
    }
}

/// Media packets and bytes all receivers got, counted live so a window can be cut out of a run.
#[derive(Debug, Default)]
pub struct Traffic {
    packets: AtomicU64,
    bytes: AtomicU64,
    unstamped: AtomicU64,
    joined: AtomicU64,
    failed: AtomicU64,
    measuring: AtomicBool,
}

impl Traffic {
    /// A receiver got its first frame.
    pub fn mark_joined(&self) {
        self.joined.fetch_add(1, Ordering::Relaxed);
    }

    /// Receivers that got their first frame so far.
    pub fn joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// Whether the measured window is on: latency counts only inside it (steady state, not the
    /// ramp-up).
    pub fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Relaxed);
    }

    /// A receiver gave up before its first frame.
    pub fn mark_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn add(&self, packets: u64, bytes: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A receiver got a frame the server made (transcoded audio), which carries no stamp.
    pub fn add_unstamped(&self) {
        self.unstamped.fetch_add(1, Ordering::Relaxed);
    }

    /// (packets, bytes) so far.
    pub fn totals(&self) -> (u64, u64) {
        (self.packets.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Unstamped frames so far.
    pub fn unstamped(&self) -> u64 {
        self.unstamped.load(Ordering::Relaxed)
    }
}

/// How one receiver's session went.
#[derive(Debug, Default)]
pub struct Outcome {
    pub log: ReceiverLog,
    /// From the join request to the first frame, in µs; `None` if no frame came.
    pub join_us: Option<u64>,
    /// Why the session failed or ended early.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_made_frames_are_delayed_against_the_earliest_one() {
        let mut log = ReceiverLog::default();
        // Media time advances 20 ms per frame; arrivals at +5 ms (the reference), then 30 ms late.
        log.unstamped_frame(1_000_000, 9_005_000, false);
        log.unstamped_frame(1_020_000, 9_025_000, true);
        log.unstamped_frame(1_040_000, 9_075_000, true);
        assert_eq!(log.unstamped, 3);
        assert_eq!(log.unstamped_delay.len(), 2, "only frames inside the window count");
        let p = log.unstamped_delay.percentiles_ms();
        assert!((p.max.unwrap() - 30.0).abs() < 0.1, "{p:?}");
        // A faster frame later becomes the reference.
        log.unstamped_frame(1_060_000, 9_060_000, true);
        log.unstamped_frame(1_080_000, 9_080_000, true);
        assert!(log.unstamped_delay.percentiles_ms().p50.unwrap() < 0.01, "{:?}", log.unstamped_delay.percentiles_ms());
    }

    #[test]
    fn seq_sets_count_distinct_numbers_in_a_window() {
        let mut set = SeqSet::default();
        for seq in [130, 131, 133, 200, 129, 131] {
            set.insert(seq);
        }
        assert_eq!(set.first(), Some(129));
        assert_eq!(set.distinct(), 5);
        assert_eq!(set.duplicates(), 1);
        assert_eq!(set.count_below(134), 4);
        assert_eq!(set.count_below(129), 0);
        assert_eq!(set.count_below(1_000), 5);
        set.insert(3);
        assert_eq!(set.first(), Some(3));
        assert_eq!(set.count_below(130), 2);
    }

    #[test]
    fn frame_counts_balance_sent_received_and_lost() {
        let mut set = SeqSet::default();
        for seq in (10..100).filter(|s| s % 10 != 0) {
            set.insert(seq);
        }
        set.insert(11);
        let mut counts = FrameCounts { published: 120, ..FrameCounts::default() };
        counts.add_stream(&set, 120);
        // From seq 11 (first received) to 119: 109 frames sent, 81 arrived.
        assert_eq!(counts.sent, 109);
        assert_eq!(counts.received, 81);
        assert_eq!(counts.lost, 28);
        assert_eq!(counts.duplicated, 1);
        assert_eq!(counts.sent, counts.received + counts.lost);
        counts.add_stream(&SeqSet::default(), 120);
        assert_eq!(counts.sent, 109, "a receiver that got nothing adds nothing");
    }

    #[test]
    fn frames_beyond_what_was_published_are_flagged() {
        let mut set = SeqSet::default();
        set.insert(5);
        set.insert(7);
        let mut counts = FrameCounts::default();
        counts.add_stream(&set, 6);
        assert_eq!((counts.sent, counts.received, counts.lost, counts.unexpected), (1, 1, 0, 1));
    }

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut micros = Micros::new();
        for us in 1..=1000 {
            micros.record(us * 10);
        }
        let p = micros.percentiles_ms();
        assert_eq!(p.samples, 1000);
        assert!((p.p50.unwrap() - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99.unwrap() - 9.9).abs() < 0.02, "{p:?}");
        assert_eq!(Micros::new().percentiles_ms(), Percentiles::default());
    }
}
