//! Live measures of tracks and subscriptions for `/v1/rooms/{room}/stats` and the dashboard:
//! frame and byte rates counted as frames pass (in whole-second windows, so a reading is the
//! last complete second, never an average since some old reading), the last video keyframe of
//! each simulcast layer (its picture size is read only when someone asks), and the link quality
//! (loss, round trip, jitter) the transports report for each connection.
//!
//! Counting costs the publisher's thread two relaxed atomic additions per frame and, once per
//! second, a window turn; the one writer of a meter is the thread sending that track's frames.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use junction_core::{Codec, MediaKind, PeerId, RoomId, TrackId, TrackSource, TransportKind};
use parking_lot::Mutex;
use serde::Serialize;

const NS_PER_S: u64 = 1_000_000_000;

/// How a connection carries media, as its transport measures it (RTCP receiver reports for
/// WebRTC). `None` where the transport cannot tell (TCP-based protocols have no loss).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LinkQuality {
    /// Fraction of packets lost, 0.0–1.0.
    pub loss: Option<f32>,
    pub rtt_ms: Option<f32>,
    pub jitter_ms: Option<f32>,
}

impl LinkQuality {
    /// Drops values that are not finite or out of range: reports come from the network.
    pub fn sanitized(self) -> Self {
        let keep = |v: Option<f32>, max: f32| v.filter(|v| v.is_finite() && (0.0..=max).contains(v));
        Self {
            loss: keep(self.loss, 1.0),
            rtt_ms: keep(self.rtt_ms, 600_000.0),
            jitter_ms: keep(self.jitter_ms, 600_000.0),
        }
    }
}

/// Frames and bytes per second of one stream, counted in whole-second windows.
#[derive(Default)]
pub(crate) struct RateMeter {
    /// The second (since the engine's epoch) the `frames`/`bytes` counts belong to.
    window: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    /// The counts of the window before `window`, when it was the second just before.
    last_frames: AtomicU64,
    last_bytes: AtomicU64,
}

/// One reading of a [`RateMeter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Rate {
    pub bitrate_bps: u64,
    pub fps: u64,
}

impl RateMeter {
    /// Counts one frame of `bytes` that passed at `now_ns` (since the epoch).
    pub(crate) fn count(&self, now_ns: u64, bytes: usize) {
        let second = now_ns / NS_PER_S;
        let window = self.window.load(Ordering::Relaxed);
        if window != second {
            let (frames, size) = (self.frames.swap(0, Ordering::Relaxed), self.bytes.swap(0, Ordering::Relaxed));
            let adjacent = second == window + 1;
            self.last_frames.store(if adjacent { frames } else { 0 }, Ordering::Relaxed);
            self.last_bytes.store(if adjacent { size } else { 0 }, Ordering::Relaxed);
            self.window.store(second, Ordering::Relaxed);
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The last complete second before `now_ns`: zero when nothing passed in it.
    pub(crate) fn read(&self, now_ns: u64) -> Rate {
        let second = now_ns / NS_PER_S;
        let window = self.window.load(Ordering::Relaxed);
        let (frames, bytes) = if window == second {
            (self.last_frames.load(Ordering::Relaxed), self.last_bytes.load(Ordering::Relaxed))
        } else if window + 1 == second {
            (self.frames.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
        } else {
            (0, 0)
        };
        Rate { bitrate_bps: bytes * 8, fps: frames }
    }
}

/// What a track keeps per simulcast layer for its readings.
#[derive(Default)]
pub(crate) struct LayerMeter {
    pub(crate) rate: RateMeter,
    /// The layer's last video keyframe: a reference to the frame's buffer, not a copy.
    pub(crate) keyframe: Mutex<Option<Bytes>>,
    /// The publisher's connection as its transport measures this layer's stream.
    pub(crate) link: Mutex<Option<LinkQuality>>,
}

/// Reads a video keyframe's picture size (width, height): the engine stores keyframes, the
/// caller knows the bitstream formats.
pub type PictureSize = fn(Codec, &[u8]) -> Option<(u32, u32)>;

/// A room's live measures, one entry per peer (`GET /v1/rooms/{room}/stats`).
#[derive(Debug, Clone, Serialize)]
pub struct RoomStats {
    pub room: RoomId,
    /// Unix time in milliseconds of this reading.
    pub at_ms: u64,
    pub peers: Vec<PeerStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStats {
    pub identity: PeerId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub transport: TransportKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub joined_at_ms: u64,
    /// What the peer publishes.
    pub tracks: Vec<TrackStats>,
    /// What the peer receives.
    pub subscriptions: Vec<SubscriptionStats>,
}

/// One published track: the sum of its layers, and each layer.
#[derive(Debug, Clone, Serialize)]
pub struct TrackStats {
    pub id: TrackId,
    pub kind: MediaKind,
    pub source: TrackSource,
    pub codec: Codec,
    /// Muted by its publisher or by an operator.
    pub muted: bool,
    /// Muted by an operator (`POST …/tracks/{track}/mute`): nothing is forwarded.
    pub muted_by_operator: bool,
    pub bitrate_bps: u64,
    /// Frames per second of the best layer being sent.
    pub fps: u64,
    /// The picture size of the best layer being sent (video, once a keyframe was seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// The publisher's connection (the best layer's stream when simulcast).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkQuality>,
    pub subscribers: usize,
    /// Codecs it is transcoded to for some subscribers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transcoded_to: Vec<Codec>,
    /// Simulcast layers, lowest first (one entry without simulcast).
    pub layers: Vec<LayerStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerStats {
    pub layer: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rid: Option<String>,
    /// A frame of it arrived in the last 1.5 s.
    pub active: bool,
    pub bitrate_bps: u64,
    pub fps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkQuality>,
}

/// One track a peer receives.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionStats {
    pub track: TrackId,
    /// The codec it arrives in (differs from the track's when transcoded).
    pub codec: Codec,
    /// The simulcast layer being forwarded (`None` while waiting for a keyframe).
    pub layer: Option<u8>,
    pub bitrate_bps: u64,
    pub fps: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkQuality>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NS_PER_S;

    #[test]
    fn a_reading_is_the_last_whole_second_and_nothing_after_a_pause() {
        let meter = RateMeter::default();
        assert_eq!(meter.read(10 * S), Rate::default());
        for i in 0..30 {
            meter.count(10 * S + i * S / 30, 1000);
        }
        // During second 10: the second before had nothing.
        assert_eq!(meter.read(10 * S + S / 2), Rate::default());
        // During second 11: second 10 is complete.
        assert_eq!(meter.read(11 * S + 1), Rate { bitrate_bps: 240_000, fps: 30 });
        meter.count(11 * S + 5, 500);
        assert_eq!(meter.read(11 * S + 10), Rate { bitrate_bps: 240_000, fps: 30 });
        assert_eq!(meter.read(12 * S), Rate { bitrate_bps: 4_000, fps: 1 });
        // Nothing for two seconds: zero, not the last second that had frames.
        assert_eq!(meter.read(13 * S), Rate::default());
        meter.count(20 * S, 100);
        assert_eq!(meter.read(20 * S + 1), Rate::default(), "second 19 had nothing, whatever came before");
    }

    #[test]
    fn reported_link_values_out_of_range_are_dropped() {
        let report = LinkQuality { loss: Some(1.5), rtt_ms: Some(f32::NAN), jitter_ms: Some(3.0) }.sanitized();
        assert_eq!(report, LinkQuality { loss: None, rtt_ms: None, jitter_ms: Some(3.0) });
    }
}
