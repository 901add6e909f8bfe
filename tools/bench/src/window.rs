//! What every load mode does the same way: wait for receivers to join, measure a window (server
//! CPU and memory, the tool's own CPU, traffic), and turn receivers' outcomes into a report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::media::SendLog;
use super::probe::{self, Sample, ServerProbe};
use super::progress::Progress;
use super::report::Report;
use super::stats::{FrameCounts, Micros, Outcome, Traffic};

/// Waits until `expected` receivers joined (got a first frame) or failed, or `timeout`; shows
/// progress.
pub async fn wait_for_joins(traffic: &Traffic, expected: u64, timeout: Duration) {
    let progress = Progress::counter(expected, "joined");
    let deadline = Instant::now() + timeout;
    loop {
        let joined = traffic.joined();
        progress.set(joined);
        if joined + traffic.failed() >= expected || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish();
}

/// What one measured window saw.
pub struct Window {
    pub seconds: f64,
    pub server_cpu_percent: Option<f64>,
    pub client_cpu_percent: f64,
    pub packets: u64,
    pub bytes: u64,
    /// Frames the server made (transcoded audio) that reached the receivers.
    pub unstamped: u64,
    pub end: Option<Sample>,
}

/// Measures for `duration` with a progress bar.
pub async fn measure(probe: &ServerProbe, traffic: &Traffic, duration: Duration) -> anyhow::Result<Window> {
    let server_start = probe.sample().await?;
    let own_start = (Instant::now(), probe::own_cpu_seconds());
    let (packets_start, bytes_start) = traffic.totals();
    let unstamped_start = traffic.unstamped();
    traffic.set_measuring(true);
    let progress = Progress::timer(duration, "measuring");
    let started = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(250).min(duration.saturating_sub(started.elapsed()))).await;
        progress.set(started.elapsed().as_secs());
    }
    progress.finish();
    traffic.set_measuring(false);
    let (packets_end, bytes_end) = traffic.totals();
    let unstamped_end = traffic.unstamped();
    let own_end = (Instant::now(), probe::own_cpu_seconds());
    let server_end = probe.sample().await?;
    let seconds = server_end.at.saturating_duration_since(server_start.at).as_secs_f64();
    let own_wall = own_end.0.saturating_duration_since(own_start.0).as_secs_f64().max(1e-9);
    Ok(Window {
        seconds,
        server_cpu_percent: probe::cpu_percent(&server_start, &server_end),
        client_cpu_percent: (own_end.1 - own_start.1).max(0.0) * 100.0 / own_wall,
        packets: packets_end - packets_start,
        bytes: bytes_end - bytes_start,
        unstamped: unstamped_end - unstamped_start,
        end: Some(server_end),
    })
}

/// Stops the publishers (their errors become report notes), lets frames in flight arrive for
/// `drain`, then stops the receivers and returns their outcomes.
pub async fn wind_down(
    report: &mut Report,
    (mut publishers, stop_publishers): (JoinSet<anyhow::Result<()>>, CancellationToken),
    (mut receivers, stop_receivers): (JoinSet<Outcome>, CancellationToken),
    drain: Duration,
) -> Vec<Outcome> {
    stop_publishers.cancel();
    let mut publisher_errors = Vec::new();
    while let Some(done) = publishers.join_next().await {
        if let Ok(Err(err)) = done {
            publisher_errors.push(format!("{err:#}"));
        }
    }
    tokio::time::sleep(drain).await;
    stop_receivers.cancel();
    let mut outcomes = Vec::with_capacity(receivers.len());
    while let Some(done) = receivers.join_next().await {
        outcomes.push(done.unwrap_or_default());
    }
    publisher_errors.dedup();
    for error in publisher_errors.into_iter().take(5) {
        report.notes.push(format!("publisher failed: {error}"));
    }
    outcomes
}

/// The report's figures every mode measures the same way: the window's CPU, traffic and memory.
pub fn fill_window(report: &mut Report, window: &Window, baseline: Option<Sample>) {
    report.duration_s = window.seconds;
    report.server_cpu_percent = window.server_cpu_percent;
    report.conditions.client_cpu_percent = Some(window.client_cpu_percent);
    report.packets_received = window.packets;
    report.bytes_received = window.bytes;
    report.server_rss_bytes = window.end.map(|s| s.rss_bytes);
    report.server_rss_baseline_bytes = baseline.map(|s| s.rss_bytes);
}

/// Fills a report from the window, the baseline memory sample, every published stream (its id is
/// its index) and every receiver's outcome.
pub fn fill(
    report: &mut Report,
    window: &Window,
    baseline: Option<Sample>,
    streams: &[Arc<SendLog>],
    outcomes: &[Outcome],
) {
    fill_window(report, window, baseline);

    let published: Vec<u64> = streams.iter().map(|s| s.len()).collect();
    let mut frames = FrameCounts {
        published: published.iter().sum(),
        unstamped_in_window: window.unstamped,
        ..FrameCounts::default()
    };
    let (mut latency, mut video, mut audio) = (Micros::new(), Micros::new(), Micros::new());
    let (mut unstamped_delay, mut tool_wait) = (Micros::new(), Micros::new());
    let mut joins = Micros::new();
    let mut errors: Vec<String> = Vec::new();
    for outcome in outcomes {
        for (stream, seen) in &outcome.log.streams {
            let sent = published.get(*stream as usize).copied().unwrap_or(0);
            frames.add_stream(seen, sent);
        }
        frames.unstamped += outcome.log.unstamped;
        latency.add(&outcome.log.latency);
        video.add(&outcome.log.video_latency);
        audio.add(&outcome.log.audio_latency);
        unstamped_delay.add(&outcome.log.unstamped_delay);
        tool_wait.add(&outcome.log.tool_wait);
        match outcome.join_us {
            Some(join) => joins.record(join),
            None => errors.push(outcome.error.clone().unwrap_or_else(|| "no media arrived".to_owned())),
        }
    }
    report.frames = frames;
    report.latency_ms = latency.percentiles_ms();
    report.video_latency_ms = video.percentiles_ms();
    report.audio_latency_ms = audio.percentiles_ms();
    report.unstamped_delay_ms = unstamped_delay.percentiles_ms();
    report.tool_receive_delay_ms = tool_wait.percentiles_ms();
    report.join_ms = joins.percentiles_ms();
    report.subscribers_connected = outcomes.iter().filter(|o| o.join_us.is_some()).count();
    report.subscribers_failed = outcomes.len() - report.subscribers_connected;
    errors.sort();
    errors.dedup();
    for error in errors.into_iter().take(5) {
        report.notes.push(format!("receiver failed: {error}"));
    }
    report.derive();
}
