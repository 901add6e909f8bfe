//! Live counts (rooms, peers, tracks, subscriptions) and media counters, kept as atomics for
//! [`crate::Engine::stats`] and mirrored into the `metrics` facade for `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use metrics::{Counter, Gauge};
use serde::Serialize;

/// A point-in-time copy of the engine's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EngineStats {
    pub rooms: u64,
    pub peers: u64,
    pub tracks: u64,
    pub subscriptions: u64,
    /// Transcoded variants currently running (one per track and target codec).
    pub variants: u64,
    /// Peers and tracks of other nodes of the cluster that this node shows in its rooms.
    pub remote_peers: u64,
    pub remote_tracks: u64,
    pub frames_in: u64,
    pub frames_forwarded: u64,
    /// Payload bytes of the frames forwarded (the media this node sends out, before packetising).
    pub bytes_forwarded: u64,
    pub frames_dropped: u64,
    pub keyframe_requests: u64,
}

/// One live count: an atomic for the engine plus its gauge.
pub(crate) struct LiveCount {
    value: AtomicI64,
    gauge: Gauge,
}

impl LiveCount {
    fn new(name: &'static str) -> Self {
        Self { value: AtomicI64::new(0), gauge: metrics::gauge!(name) }
    }

    pub(crate) fn add(&self, delta: i64) {
        let now = self.value.fetch_add(delta, Ordering::Relaxed) + delta;
        self.gauge.set(now as f64);
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed).max(0) as u64
    }
}

pub(crate) struct Tally {
    value: AtomicU64,
    counter: Counter,
}

impl Tally {
    fn new(name: &'static str) -> Self {
        Self { value: AtomicU64::new(0), counter: metrics::counter!(name) }
    }

    pub(crate) fn add(&self, n: u64) {
        if n > 0 {
            self.value.fetch_add(n, Ordering::Relaxed);
            self.counter.increment(n);
        }
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub(crate) struct Counters {
    pub rooms: LiveCount,
    pub peers: LiveCount,
    pub tracks: LiveCount,
    pub subscriptions: LiveCount,
    pub variants: LiveCount,
    pub remote_peers: LiveCount,
    pub remote_tracks: LiveCount,
    pub frames_in: Tally,
    pub frames_forwarded: Tally,
    pub bytes_forwarded: Tally,
    pub frames_dropped: Tally,
    pub keyframe_requests: Tally,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            rooms: LiveCount::new("junction_rooms"),
            peers: LiveCount::new("junction_peers"),
            tracks: LiveCount::new("junction_tracks"),
            subscriptions: LiveCount::new("junction_subscriptions"),
            variants: LiveCount::new("junction_transcoded_variants"),
            remote_peers: LiveCount::new("junction_remote_peers"),
            remote_tracks: LiveCount::new("junction_remote_tracks"),
            frames_in: Tally::new("junction_frames_in_total"),
            frames_forwarded: Tally::new("junction_frames_forwarded_total"),
            bytes_forwarded: Tally::new("junction_bytes_forwarded_total"),
            frames_dropped: Tally::new("junction_frames_dropped_total"),
            keyframe_requests: Tally::new("junction_keyframe_requests_total"),
        }
    }

    pub(crate) fn snapshot(&self) -> EngineStats {
        EngineStats {
            rooms: self.rooms.get(),
            peers: self.peers.get(),
            tracks: self.tracks.get(),
            subscriptions: self.subscriptions.get(),
            variants: self.variants.get(),
            remote_peers: self.remote_peers.get(),
            remote_tracks: self.remote_tracks.get(),
            frames_in: self.frames_in.get(),
            frames_forwarded: self.frames_forwarded.get(),
            bytes_forwarded: self.bytes_forwarded.get(),
            frames_dropped: self.frames_dropped.get(),
            keyframe_requests: self.keyframe_requests.get(),
        }
    }
}
