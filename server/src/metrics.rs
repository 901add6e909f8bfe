//! Prometheus metrics: installs the recorder the engine's and transports' `metrics` calls feed,
//! and adds process figures (CPU seconds, resident memory) read from `/proc/self` so load tools
//! can compute CPU per forwarded packet from the outside.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    metrics::describe_gauge!("junction_rooms", "Rooms currently open");
    metrics::describe_gauge!("junction_peers", "Peers currently connected");
    metrics::describe_gauge!("junction_tracks", "Tracks currently published");
    metrics::describe_gauge!("junction_video_transcodes", "Video transcoders running (one per track and target codec)");
    metrics::describe_counter!("junction_frames_forwarded_total", "Frames delivered to subscriber queues");
    metrics::describe_counter!("junction_frames_dropped_total", "Frames lost to full subscriber queues");
    metrics::describe_counter!("junction_transport_api_requests_total", "HTTP requests by response status");
    metrics::describe_counter!("process_cpu_seconds_total", "CPU time used by the server process");
    metrics::describe_gauge!("process_resident_memory_bytes", "Resident memory of the server process");
    metrics::describe_gauge!("junction_relay_tracks_in", "Tracks this node pulls from other nodes over the relay");
    metrics::describe_gauge!("junction_relay_tracks_out", "Track copies this node sends to other nodes over the relay");
    metrics::describe_counter!("junction_relay_bytes_in_total", "Relay bytes received from other nodes");
    metrics::describe_counter!("junction_relay_bytes_out_total", "Relay bytes sent to other nodes");
    metrics::describe_histogram!(
        "junction_relay_latency_seconds",
        "Relay transit time of a frame, origin send to arrival here"
    );
    metrics::describe_histogram!(
        "junction_webrtc_forward_latency_seconds",
        "WebRTC egress: a frame's arrival from its publisher (a WebRTC publisher's: its last datagram read) to its write to a subscriber's session, by kind"
    );
    Ok(handle)
}

/// Updates the process gauges from `/proc/self/stat`.
pub fn refresh_process_metrics() {
    if let Some((cpu_seconds, rss_bytes)) = read_proc_self() {
        metrics::counter!("process_cpu_seconds_total").absolute(cpu_seconds as u64);
        metrics::gauge!("process_cpu_seconds").set(cpu_seconds);
        metrics::gauge!("process_resident_memory_bytes").set(rss_bytes as f64);
    }
}

/// CPU seconds this process has used (the cluster's load figure).
pub fn cpu_seconds() -> Option<f64> {
    read_proc_self().map(|(cpu, _)| cpu)
}

/// (CPU seconds, resident bytes) of this process.
fn read_proc_self() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some(((utime + stime) / ticks_per_second, rss_pages * 4096))
}
