//! RTMP metrics, through the `metrics` facade (the binary exports them as Prometheus): ingest
//! bytes and frames by kind, connections open by role, refusals by status code. Series carry no
//! room or peer labels: a Prometheus series lives as long as the process, so per-stream labels
//! would grow without bound on a long-running server. Per-stream bitrate is
//! `rate(junction_rtmp_ingest_bytes_total)` for the whole server, and the room API lists streams.

use junction_core::MediaKind;
use metrics::{Counter, Gauge, counter, gauge};

pub fn describe() {
    metrics::describe_counter!("junction_rtmp_ingest_bytes_total", "Media payload bytes received from RTMP publishers");
    metrics::describe_counter!("junction_rtmp_ingest_frames_total", "Frames received from RTMP publishers, by kind");
    metrics::describe_gauge!("junction_rtmp_connections", "Open RTMP connections, by role");
    metrics::describe_counter!("junction_rtmp_refused_total", "RTMP publish/play requests refused, by status code");
}

/// Counts one publisher's media into the server-wide ingest counters.
pub struct IngestMeter {
    bytes: Counter,
    video_frames: Counter,
    audio_frames: Counter,
}

impl IngestMeter {
    pub fn new() -> IngestMeter {
        IngestMeter {
            bytes: counter!("junction_rtmp_ingest_bytes_total"),
            video_frames: counter!("junction_rtmp_ingest_frames_total", "kind" => "video"),
            audio_frames: counter!("junction_rtmp_ingest_frames_total", "kind" => "audio"),
        }
    }

    pub fn frame(&mut self, kind: MediaKind, bytes: usize) {
        self.bytes.increment(bytes as u64);
        match kind {
            MediaKind::Video => self.video_frames.increment(1),
            MediaKind::Audio => self.audio_frames.increment(1),
        }
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
