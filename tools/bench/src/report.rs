//! The result of one bench run: the same shape for every mode, printed as a readable block or,
//! with `--json`, as one JSON object (fields a mode does not measure are `null` or 0).

use std::fmt;

use serde::Serialize;

use super::stats::{FrameCounts, Percentiles};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    /// How receivers (and publishers) connected: `whep`, `rtmp`, `rtmp+whep`, `udp`...
    pub protocol: String,
    pub server_url: String,
    /// The options of the run.
    pub settings: serde_json::Value,
    /// What else the machine was doing: load average before the run, cores, the tool's own CPU.
    pub conditions: Conditions,
    /// Length of the measured window (after ramp-up), in seconds.
    pub duration_s: f64,
    pub publishers: usize,
    pub subscribers_requested: usize,
    /// Receivers that completed their join and got media.
    pub subscribers_connected: usize,
    pub subscribers_failed: usize,
    /// From the join request (POST of the offer, RTMP connect) to the first frame.
    pub join_ms: Percentiles,
    pub frames: FrameCounts,
    /// Media packets received (RTP packets, RTMP media messages) by all receivers in the window.
    pub packets_received: u64,
    pub bytes_received: u64,
    /// `frames.lost / frames.sent`, in percent.
    pub loss_percent: f64,
    /// Send time (in the payload) to arrival at a receiver, through the server, for frames that
    /// arrived during the measured window. A WebRTC receiver's arrival is its socket's (the
    /// kernel's receive stamp), not when the tool read it: see `tool_receive_delay_ms`.
    pub latency_ms: Percentiles,
    /// The same, video frames only (a frame counts when its last packet arrived).
    pub video_latency_ms: Percentiles,
    pub audio_latency_ms: Percentiles,
    /// Frames the server made (transcoded audio), which carry no stamp: how much later than the
    /// earliest of its viewer each arrived against its media time, in the window.
    pub unstamped_delay_ms: Percentiles,
    /// How long WebRTC receivers' media datagrams waited in their sockets before the tool read
    /// them, in the window: the tool's own backlog, which the latencies leave out. When it
    /// nears the latencies, the tool's core, not the server, is the limit.
    pub tool_receive_delay_ms: Percentiles,
    /// `proc:<pid>` or `metrics`: where server CPU and memory were read.
    pub server_cpu_source: String,
    /// Server CPU during the window, in percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// Server CPU time per media packet received by the receivers, in µs.
    pub server_cpu_us_per_packet: Option<f64>,
    /// The kernel's cost of one datagram on this machine, measured in the same run.
    pub floor: Option<Floor>,
    /// `server_cpu_us_per_packet / floor.send_us`.
    pub cpu_per_packet_floor_multiple: Option<f64>,
    /// Receivers carried per core of server CPU (`subscribers_connected / cores used`).
    pub subscribers_per_core: Option<f64>,
    /// Server resident memory with every receiver connected.
    pub server_rss_bytes: Option<u64>,
    /// Server resident memory before the receivers joined.
    pub server_rss_baseline_bytes: Option<u64>,
    /// `(server_rss_bytes - server_rss_baseline_bytes) / subscribers_connected`.
    pub bytes_per_subscriber: Option<f64>,
    /// Per node when the load spans a cluster (`fanout --subscribe-at`): the server figures
    /// above are their sums.
    pub nodes: Vec<NodeFigures>,
    /// Churn mode only.
    pub churn: Option<ChurnFigures>,
    /// SIP mode only.
    pub sip: Option<SipFigures>,
    /// Transcode mode only.
    pub transcode: Option<TranscodeFigures>,
    /// `fanout --find-max` only: every step of the ramp (the rest of the report is the largest
    /// clean step's, or the first step's when none was clean).
    pub find_max: Option<FindMaxFigures>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FindMaxFigures {
    /// What a step had to stay under to count as clean.
    pub loss_limit_percent: f64,
    pub latency_limit_ms: f64,
    /// The most subscribers carried cleanly, if any step was clean.
    pub largest_clean: Option<usize>,
    /// Why the ramp stopped.
    pub stopped: String,
    pub steps: Vec<FindMaxStep>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FindMaxStep {
    /// Receivers asked for: WHEP subscribers (`fanout`), or streams with a viewer each (`rtmp`).
    pub subscribers: usize,
    pub connected: usize,
    pub loss_percent: f64,
    /// p99 of every frame's forwarding latency (audio and video).
    pub latency_p99_ms: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    pub client_cpu_percent: Option<f64>,
    /// p99 of how long WebRTC receivers' datagrams waited before the tool read them (its own
    /// backlog, left out of the latency).
    pub tool_receive_delay_p99_ms: Option<f64>,
    /// Server-made audio (`rtmp` with WHEP viewers: AAC transcoded to Opus): the share of the
    /// frames due in the window that arrived, and their p99 delay.
    pub transcoded_audio_share: Option<f64>,
    pub transcoded_audio_delay_p99_ms: Option<f64>,
    pub clean: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Conditions {
    pub cores: usize,
    pub load_average_before: Option<f64>,
    /// CPU the bench tool itself used during the window, in percent of one core.
    pub client_cpu_percent: Option<f64>,
    /// The cores the server and the tool were pinned to (`junction bench --pin`).
    pub placement: Option<crate::pin::Placement>,
}

/// One cluster node's share of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFigures {
    pub url: String,
    /// Publishers and subscribers whose sessions this node served.
    pub publishers: usize,
    pub subscribers: usize,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChurnFigures {
    pub cycles: usize,
    /// Sessions opened and closed over all cycles.
    pub sessions: usize,
    /// Peers still live on the server after everyone left (`/healthz`).
    pub leaked_peers: u64,
    pub leaked_tracks: u64,
    pub leaked_rooms: u64,
    pub rss_before_bytes: Option<u64>,
    pub rss_after_bytes: Option<u64>,
}

impl Report {
    pub fn new(mode: &'static str, protocol: impl Into<String>) -> Self {
        Report {
            mode,
            protocol: protocol.into(),
            server_url: String::new(),
            settings: serde_json::Value::Null,
            conditions: Conditions {
                cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
                load_average_before: super::probe::load_average(),
                client_cpu_percent: None,
                placement: None,
            },
            duration_s: 0.0,
            publishers: 0,
            subscribers_requested: 0,
            subscribers_connected: 0,
            subscribers_failed: 0,
            join_ms: Percentiles::default(),
            frames: FrameCounts::default(),
            packets_received: 0,
            bytes_received: 0,
            loss_percent: 0.0,
            latency_ms: Percentiles::default(),
            video_latency_ms: Percentiles::default(),
            audio_latency_ms: Percentiles::default(),
            unstamped_delay_ms: Percentiles::default(),
            tool_receive_delay_ms: Percentiles::default(),
            server_cpu_source: "none".to_owned(),
            server_cpu_percent: None,
            server_cpu_us_per_packet: None,
            floor: None,
            cpu_per_packet_floor_multiple: None,
            subscribers_per_core: None,
            server_rss_bytes: None,
            server_rss_baseline_bytes: None,
            bytes_per_subscriber: None,
            nodes: Vec::new(),
            churn: None,
            sip: None,
            transcode: None,
            find_max: None,
            notes: Vec::new(),
        }
    }

    /// Fills the figures derived from the others.
    pub fn derive(&mut self) {
        self.loss_percent = self.frames.loss_percent();
        if let Some(cpu) = self.server_cpu_percent {
            let cpu_seconds = cpu / 100.0 * self.duration_s;
            if self.packets_received > 0 {
                self.server_cpu_us_per_packet = Some(cpu_seconds * 1e6 / self.packets_received as f64);
            }
            if cpu > 0.0 && self.subscribers_connected > 0 {
                self.subscribers_per_core = Some(self.subscribers_connected as f64 / (cpu / 100.0));
            }
        }
        if let (Some(per_packet), Some(floor)) = (self.server_cpu_us_per_packet, self.floor)
            && floor.send_us > 0.0
        {
            self.cpu_per_packet_floor_multiple = Some(per_packet / floor.send_us);
        }
        if let (Some(rss), Some(base)) = (self.server_rss_bytes, self.server_rss_baseline_bytes)
            && self.subscribers_connected > 0
        {
            self.bytes_per_subscriber = Some((rss as f64 - base as f64) / self.subscribers_connected as f64);
        }
    }
}

fn opt(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}{unit}"))
}

fn percentiles(p: &Percentiles) -> String {
    if p.samples == 0 {
        return "-".to_owned();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  max {}  ({} samples)",
        opt(p.p50, " ms"),
        opt(p.p90, " ms"),
        opt(p.p99, " ms"),
        opt(p.max, " ms"),
        p.samples
    )
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "-".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "junction bench {} ({}) against {}", self.mode, self.protocol, self.server_url)?;
        let c = &self.conditions;
        writeln!(
            f,
            "  machine              {} cores, load average {} before, bench tool CPU {}",
            c.cores,
            opt(c.load_average_before, ""),
            opt(c.client_cpu_percent, " %")
        )?;
        if let Some(p) = &c.placement {
            let how = if p.server_moved { "pinned there by the tool" } else { "as started" };
            writeln!(f, "  cores                server {} ({how}), bench tool {}", p.server_cores, p.tool_cores)?;
        }
        if let Some(floor) = &self.floor {
            writeln!(
                f,
                "  floor                send {:.2} µs  sendmmsg({}) {:.2} µs  GSO({}) {} per 1200-byte datagram",
                floor.send_us,
                floor.batch,
                floor.sendmmsg_us,
                floor.batch,
                opt(floor.gso_us, " µs")
            )?;
        }
        if let Some(t) = &self.transcode {
            writeln!(
                f,
                "  transcode            {}->{} {}x{}, {} frames: {:.0} µs per frame (p50 {:.0}, p99 {:.0}) = {:.1} % of a core at 30 fps; {:.0} kb/s in, {:.0} kb/s out",
                t.from,
                t.to,
                t.width,
                t.height,
                t.frames,
                t.mean_us_per_frame,
                t.p50_us_per_frame,
                t.p99_us_per_frame,
                t.core_percent_at_30fps,
                t.input_kbps,
                t.output_kbps
            )?;
        }
        if self.mode == "floor" || self.mode == "transcode" {
            return Ok(());
        }
        writeln!(f, "  window               {:.1} s", self.duration_s)?;
        writeln!(
            f,
            "  publishers           {}    receivers {}/{} connected, {} failed",
            self.publishers, self.subscribers_connected, self.subscribers_requested, self.subscribers_failed
        )?;
        writeln!(f, "  join time            {}", percentiles(&self.join_ms))?;
        let fr = &self.frames;
        writeln!(
            f,
            "  frames               published {}  sent {}  received {}  lost {} ({:.3} %)  duplicated {}",
            fr.published, fr.sent, fr.received, fr.lost, self.loss_percent, fr.duplicated
        )?;
        if fr.unstamped > 0 {
            writeln!(f, "  server-made frames   {} (transcoded, not in the counts above)", fr.unstamped)?;
        }
        writeln!(f, "  packets received     {}  ({:.1} MB)", self.packets_received, self.bytes_received as f64 / 1e6)?;
        writeln!(f, "  latency              {}", percentiles(&self.latency_ms))?;
        writeln!(f, "    video              {}", percentiles(&self.video_latency_ms))?;
        writeln!(f, "    audio              {}", percentiles(&self.audio_latency_ms))?;
        if self.unstamped_delay_ms.samples > 0 {
            writeln!(f, "    server-made delay  {}", percentiles(&self.unstamped_delay_ms))?;
        }
        if self.tool_receive_delay_ms.samples > 0 {
            writeln!(f, "  tool's read delay    {}", percentiles(&self.tool_receive_delay_ms))?;
        }
        writeln!(
            f,
            "  server CPU           {} of a core ({})  {} per packet  = {} x floor",
            opt(self.server_cpu_percent, " %"),
            self.server_cpu_source,
            opt(self.server_cpu_us_per_packet, " µs"),
            opt(self.cpu_per_packet_floor_multiple, "")
        )?;
        for node in &self.nodes {
            writeln!(
                f,
                "    node {}  {} publishers, {} receivers, CPU {} of a core, RSS {}",
                node.url,
                node.publishers,
                node.subscribers,
                opt(node.cpu_percent, " %"),
                mib(Some(node.rss_bytes))
            )?;
        }
        writeln!(f, "  receivers per core   {}", opt(self.subscribers_per_core, ""))?;
        writeln!(
            f,
            "  server memory        {} with receivers, {} before  = {} per receiver",
            mib(self.server_rss_bytes),
            mib(self.server_rss_baseline_bytes),
            self.bytes_per_subscriber.map_or_else(|| "-".to_owned(), |b| format!("{:.1} KiB", b / 1024.0))
        )?;
        if let Some(find) = &self.find_max {
            writeln!(
                f,
                "  find-max             largest clean: {} receivers (loss < {} %, p99 < {} ms); stopped: {}",
                find.largest_clean.map_or_else(|| "none".to_owned(), |n| n.to_string()),
                find.loss_limit_percent,
                find.latency_limit_ms,
                find.stopped
            )?;
            for step in &find.steps {
                writeln!(
                    f,
                    "    {:>5} receivers: {} connected, loss {:.3} %, p99 {}, server CPU {}, tool CPU {} (read delay p99 {}){}{}",
                    step.subscribers,
                    step.connected,
                    step.loss_percent,
                    opt(step.latency_p99_ms, " ms"),
                    opt(step.server_cpu_percent, " %"),
                    opt(step.client_cpu_percent, " %"),
                    opt(step.tool_receive_delay_p99_ms, " ms"),
                    step.transcoded_audio_share.map_or_else(String::new, |share| format!(
                        ", transcoded audio {:.1} % (p99 delay {})",
                        share * 100.0,
                        opt(step.transcoded_audio_delay_p99_ms, " ms")
                    )),
                    if step.clean { "  clean" } else { "" }
                )?;
            }
        }
        if let Some(churn) = &self.churn {
            writeln!(
                f,
                "  churn                {} cycles, {} sessions; leaked peers {} tracks {} rooms {}; RSS {} -> {}",
                churn.cycles,
                churn.sessions,
                churn.leaked_peers,
                churn.leaked_tracks,
                churn.leaked_rooms,
                mib(churn.rss_before_bytes),
                mib(churn.rss_after_bytes)
            )?;
        }
        if let Some(sip) = &self.sip {
            writeln!(
                f,
                "  sip                  {} calls in {} rooms of {}; {} RTP packets sent; mix {} packets/s per call ({} expected), {} audible; {} malformed; {} hung up by the server",
                sip.calls,
                sip.rooms,
                sip.calls_per_room,
                sip.packets_sent,
                opt(sip.mix_packets_per_call_per_s, ""),
                sip.mix_packets_per_call_per_s_expected,
                opt(sip.audible_percent, " %"),
                sip.malformed_packets,
                sip.ended_by_server
            )?;
        }
        for note in &self.notes {
            writeln!(f, "  note: {note}")?;
        }
        Ok(())
    }
}

/// CPU µs per 1200-byte datagram, by way of sending.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Floor {
    /// One `send()` per datagram.
    pub send_us: f64,
    /// `sendmmsg()` with `batch` datagrams per call.
    pub sendmmsg_us: f64,
    /// UDP GSO: one `sendmsg()` of `batch` segments; `None` where the kernel refuses it.
    pub gso_us: Option<f64>,
    pub batch: usize,
    /// Share of the datagrams the receiver got (below 1.0 it could not keep up).
    pub delivered: f64,
}

/// What one video transcoder costs (transcode mode).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TranscodeFigures {
    pub from: &'static str,
    pub to: &'static str,
    pub width: u16,
    pub height: u16,
    pub frames: usize,
    /// CPU time per input frame, decode + scale + encode, in µs.
    pub mean_us_per_frame: f64,
    pub p50_us_per_frame: f64,
    pub p99_us_per_frame: f64,
    /// The share of one core a 30 frames/s stream takes.
    pub core_percent_at_30fps: f64,
    pub input_kbps: f64,
    pub output_kbps: f64,
}

/// What only a SIP run measures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SipFigures {
    pub calls: usize,
    pub rooms: usize,
    pub calls_per_room: usize,
    /// RTP packets the callers sent over the whole run.
    pub packets_sent: u64,
    /// Mix packets each connected call received per second during the window (50 expected).
    pub mix_packets_per_call_per_s: Option<f64>,
    pub mix_packets_per_call_per_s_expected: u64,
    /// Share of received mix packets louder than quiet noise: the other callers' tones.
    pub audible_percent: Option<f64>,
    /// Received datagrams that were not PCMU RTP (a server bug if not 0).
    pub malformed_packets: u64,
    /// Calls the server hung up before the end of the run.
    pub ended_by_server: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures_follow_from_the_measurements() {
        let mut report = Report::new("fanout", "whep");
        report.duration_s = 10.0;
        report.subscribers_connected = 100;
        report.packets_received = 1_000_000;
        report.server_cpu_percent = Some(50.0);
        report.frames = FrameCounts { published: 300, sent: 30_000, received: 29_970, lost: 30, ..Default::default() };
        report.floor = Some(Floor { send_us: 2.5, sendmmsg_us: 1.5, gso_us: None, batch: 32, delivered: 1.0 });
        report.server_rss_bytes = Some(200 << 20);
        report.server_rss_baseline_bytes = Some(100 << 20);
        report.derive();
        assert_eq!(report.server_cpu_us_per_packet, Some(5.0));
        assert_eq!(report.cpu_per_packet_floor_multiple, Some(2.0));
        assert_eq!(report.subscribers_per_core, Some(200.0));
        assert!((report.loss_percent - 0.1).abs() < 1e-9);
        assert_eq!(report.bytes_per_subscriber, Some((100 << 20) as f64 / 100.0));
        let json = serde_json::to_value(&report).unwrap();
        for key in ["subscribers_connected", "loss_percent", "server_cpu_percent", "server_cpu_us_per_packet"] {
            assert!(json[key].is_number(), "{key}: {json}");
        }
        assert!(json["latency_ms"]["p50"].is_null() && json["join_ms"].get("p99").is_some());
        assert!(report.to_string().contains("2.00 x floor"));
    }
}
