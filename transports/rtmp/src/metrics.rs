//! RTMP metrics, through the `metrics` facade (the binary exports them as Prometheus):
//! per published stream (labels `room`, `peer`) the ingest bytes, frames by kind and the
//! current bitrate; and the connections open, by role.

use std::time::{Duration, Instant};

use junction_core::MediaKind;
use metrics::{Counter, Gauge, counter, gauge};

/// How often the bitrate gauge is recomputed.
const BITRATE_WINDOW: Duration = Duration::from_secs(1);

pub fn describe() {
    metrics::describe_counter!("junction_rtmp_ingest_bytes_total", "Media payload bytes received from RTMP publishers");
    metrics::describe_counter!("junction_rtmp_ingest_frames_total", "Frames received from RTMP publishers, by kind");
    metrics::describe_gauge!("junction_rtmp_ingest_bitrate_bps", "Media bitrate of each RTMP publisher, bits/s");
    metrics::describe_gauge!("junction_rtmp_connections", "Open RTMP connections, by role");
    metrics::describe_counter!("junction_rtmp_refused_total", "RTMP publish/play requests refused, by status code");
}

/// One publisher's figures.
pub struct IngestMeter {
    bytes: Counter,
    video_frames: Counter,
    audio_frames: Counter,
    bitrate: Gauge,
    window_start: Instant,
    window_bytes: u64,
}

impl IngestMeter {
    pub fn new(room: &str, peer: &str, now: Instant) -> IngestMeter {
        let labels = [("room", room.to_owned()), ("peer", peer.to_owned())];
        let kind = |k: &'static str| counter!("junction_rtmp_ingest_frames_total", "room" => room.to_owned(), "peer" => peer.to_owned(), "kind" => k);
        IngestMeter {
            bytes: counter!("junction_rtmp_ingest_bytes_total", &labels),
            video_frames: kind("video"),
            audio_frames: kind("audio"),
            bitrate: gauge!("junction_rtmp_ingest_bitrate_bps", &labels),
            window_start: now,
            window_bytes: 0,
        }
    }

    pub fn frame(&mut self, kind: MediaKind, bytes: usize, now: Instant) {
        self.bytes.increment(bytes as u64);
        match kind {
            MediaKind::Video => self.video_frames.increment(1),
            MediaKind::Audio => self.audio_frames.increment(1),
        }
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= BITRATE_WINDOW {
            self.bitrate.set(self.window_bytes as f64 * 8.0 / elapsed.as_secs_f64());
            self.window_start = now;
            self.window_bytes = 0;
        }
    }
}

impl Drop for IngestMeter {
    fn drop(&mut self) {
        self.bitrate.set(0.0);
    }
}

/// Counts one open connection of a role for as long as it lives.
pub struct ConnectionGauge(Gauge);

impl ConnectionGauge {
    pub fn new(role: &'static str) -> ConnectionGauge {
        let gauge = gauge!("junction_rtmp_connections", "role" => role);
        gauge.increment(1.0);
        ConnectionGauge(gauge)
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

pub fn refused(code: &'static str) {
    counter!("junction_rtmp_refused_total", "code" => code).increment(1);
}
