//! junction-bench, the load tool behind `junction bench` (the server binary execs this one,
//! installed beside it). It is a client of a running server's public protocols only
//! (REST for rooms, tokens and ingress keys; RTMP; WHIP/WHEP), so what it measures is what a real
//! client would get: every frame it sends carries a sequence number and a send time, every
//! receiver counts what arrived, and the server's CPU and memory are read from the outside
//! (`/proc/<pid>` on this machine, else the server's `/metrics`).
//!
//! Modes: `floor` (the kernel's cost of one UDP datagram on loopback), `fanout` (WHIP publishers,
//! WHEP subscribers), `rtmp` (RTMP ingest with viewers), `sip` (G.711 calls into mixed rooms), `churn` (join/leave cycles, leaked peers),
//! `transcode` (one video transcoder's CPU per frame, in process). Each prints a [`report::Report`], or one
//! JSON object with `--json`.

mod api;
mod churn;
mod fanout;
mod find_max;
mod floor;
mod media;
mod pin;
mod probe;
mod progress;
mod report;
mod rtmp;
mod sip;
mod stats;
mod transcode;
mod webrtc;
mod window;

use std::time::Duration;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// `junction bench`: load-test a running server over its public protocols and report what it
/// carries.
#[derive(Debug, Parser)]
#[command(name = "junction bench", bin_name = "junction bench", version, subcommand_required = true)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: BenchCommand,
}

#[tokio::main]
async fn main() -> ExitCode {
    // Two rustls crypto providers end up in the build; pick one before anything uses TLS.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    if let Err(err) = run(&cli.target, cli.command).await {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Where the server under test is and how to reach its API.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// Base URL of the server's HTTP API.
    #[arg(long, env = "JUNCTION_URL", default_value = "http://127.0.0.1:7880", global = true)]
    pub url: String,
    /// The server's API key, used to create rooms, tokens and ingress keys.
    #[arg(long, env = "JUNCTION_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// The server's process id, for reading its CPU time and memory from /proc. Without it the
    /// tool looks for the process listening on the URL's port, then falls back to `/metrics`.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Print one JSON object instead of the readable report.
    #[arg(long, global = true)]
    pub json: bool,
    /// Keep the server and this tool on separate cores (load modes, one server on this
    /// machine): `auto` leaves a server confined to some cores there and takes the rest, and
    /// moves a server on every core to the first half of them; `off` pins nothing.
    #[arg(long, value_enum, default_value_t = pin::PinMode::Auto, global = true)]
    pub pin: pin::PinMode,
    /// The server's cores (`0`, `0-1`, `0,2`); the tool takes the others.
    #[arg(long, global = true)]
    pub server_cores: Option<String>,
}

impl Target {
    /// Places the server and the tool on their cores before a load mode runs.
    fn place(&self, command: &BenchCommand) -> anyhow::Result<Option<pin::Placement>> {
        let single_server = match command {
            BenchCommand::Floor(_) | BenchCommand::Transcode(_) => return Ok(None),
            BenchCommand::Fanout(args) => args.subscribe_at.is_empty() && args.cluster_node.is_empty(),
            BenchCommand::Rtmp(_) | BenchCommand::Sip(_) | BenchCommand::Churn(_) => true,
        };
        if !single_server {
            if self.server_cores.is_some() {
                bail!("--server-cores places one server; start cluster nodes under taskset instead");
            }
            return Ok(None);
        }
        let pid = self.server_pid.or_else(|| probe::listening_pid(&self.url));
        pin::place(pid, self.pin, self.server_cores.as_deref())
    }
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure the floor: the CPU time the kernel spends sending one 1200-byte UDP datagram to
    /// a receiver on loopback, with send() and with sendmmsg().
    Floor(floor::FloorArgs),
    /// Fan-out: WHIP publishers of synthetic video and Opus, WHEP subscribers ramped up, then a
    /// measured window (loss, latency, server CPU per forwarded packet vs the floor, memory).
    Fanout(Box<fanout::FanoutArgs>),
    /// RTMP ingest load: N publishers of synthetic H.264 + AAC, each watched by a viewer.
    Rtmp(rtmp::RtmpArgs),
    /// SIP load: N G.711 (PCMU) calls into mixed rooms; set-up time, the mix each call hears,
    /// server CPU and memory per call.
    Sip(sip::SipArgs),
    /// Join/leave cycles: publishers and viewers connect, stream briefly and leave; reports
    /// leaked peers and the server's memory before and after.
    Churn(churn::ChurnArgs),
    /// One video transcoder's cost, in this process: CPU per frame of a 720p/30 stream
    /// (VP8->H.264 as for RTMP/MoQ viewers of a browser, or H.264->VP8), and the share of a core.
    Transcode(transcode::TranscodeArgs),
}

/// A video format of the synthetic publishers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VideoSize {
    #[value(name = "360p")]
    P360,
    #[value(name = "720p")]
    P720,
    #[value(name = "1080p")]
    P1080,
}

impl VideoSize {
    /// (width, height, bits/s) — bitrates typical of real-time camera video.
    pub fn format(self) -> (u16, u16, u64) {
        match self {
            VideoSize::P360 => (640, 360, 800_000),
            VideoSize::P720 => (1280, 720, 2_500_000),
            VideoSize::P1080 => (1920, 1080, 4_500_000),
        }
    }
}

/// Parses `30s`, `2m`, `500ms` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("unknown unit {unit:?} in {text:?}: use ms, s or m")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub async fn run(target: &Target, command: BenchCommand) -> anyhow::Result<()> {
    let placement = target.place(&command)?;
    let mut report: report::Report = match command {
        BenchCommand::Floor(args) => floor::run(args).await?,
        BenchCommand::Fanout(args) if args.find_max => fanout::find_max(target, *args).await?,
        BenchCommand::Fanout(args) => fanout::run(target, *args).await?,
        BenchCommand::Rtmp(args) if args.find_max => rtmp::find_max(target, args).await?,
        BenchCommand::Rtmp(args) => rtmp::run(target, args).await?,
        BenchCommand::Sip(args) => sip::run(target, args).await?,
        BenchCommand::Churn(args) => churn::run(target, args).await?,
        BenchCommand::Transcode(args) => transcode::run(args).await?,
    };
    report.conditions.placement = placement;
    if target.json {
        println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?);
    } else {
        print!("{report}");
    }
    if report.subscribers_requested > 0 && report.subscribers_connected == 0 {
        bail!("no receiver connected: see the report above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("s").is_err());
    }
}
