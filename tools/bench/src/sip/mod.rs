//! `junction bench sip --calls N`: N G.711 phone calls into mixed rooms (`--per-room` callers
//! each), made by the bench's own SIP client over UDP, measured for a window: call set-up time
//! (INVITE to 200 OK), the mix each caller hears back (one 20 ms PCMU packet every 20 ms: ~50
//! packets/s, counted by RTP sequence number, with its loudness as a check of content), and what
//! the server spends per call. Before the calls, the tool creates over REST a trunk admitting its
//! own address and a dial-in rule for its rooms; it removes them (and the rooms) at the end.

mod call;
mod rtp;
mod uac;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use junction_core::ids::random_id;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::probe::ServerProbe;
use super::report::{Report, SipFigures};
use super::stats::{FrameCounts, Micros, Traffic};
use super::{Target, parse_duration, window};
use call::{Call, CallOutcome};

#[derive(Debug, Clone, Args)]
pub struct SipArgs {
    /// Phone calls, spread over rooms of `--per-room` callers.
    #[arg(long, default_value_t = 10)]
    pub calls: usize,
    /// Callers per room: each hears the mix of the others.
    #[arg(long, default_value_t = 4)]
    pub per_room: usize,
    /// The server's SIP address (UDP).
    #[arg(long, env = "JUNCTION_SIP", default_value = "127.0.0.1:5060")]
    pub sip: String,
    /// Length of the measured window.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Calls started per second while ramping up.
    #[arg(long, default_value_t = 20.0)]
    pub ramp: f64,
}

/// The trunk, rule and rooms of one run, removed again at the end.
#[derive(Default)]
struct Setup {
    trunk: Option<String>,
    rule: Option<String>,
    rooms: Vec<String>,
}

impl Setup {
    async fn remove(&self, api: &Api) {
        if let Some(rule) = &self.rule {
            let _ = api.delete_sip_rule(rule).await;
        }
        if let Some(trunk) = &self.trunk {
            let _ = api.delete_sip_trunk(trunk).await;
        }
        for room in &self.rooms {
            let _ = api.delete_room(room).await;
        }
    }
}

pub async fn run(target: &Target, args: SipArgs) -> anyhow::Result<Report> {
    let api = Api::new(&target.url, target.api_key.clone());
    api.health().await?;
    let server = args
        .sip
        .to_socket_addrs()
        .with_context(|| format!("--sip {:?} is not a host:port", args.sip))?
        .next()
        .with_context(|| format!("--sip {:?} resolves to no address", args.sip))?;
    let probe = ServerProbe::new(&target.url, target.server_pid);
    let per_room = args.per_room.max(1);
    let rooms = args.calls.div_ceil(per_room);
    let mut report = Report::new("sip", "sip-udp+pcmu");
    report.server_url = api.base().to_owned();
    report.server_cpu_source = probe.source();
    report.settings = serde_json::json!({
        "calls": args.calls, "per_room": per_room, "rooms": rooms, "sip": server.to_string(),
        "duration_s": args.duration.as_secs_f64(), "codec": "PCMU 8 kHz, 20 ms packets",
    });
    report.publishers = args.calls;
    report.subscribers_requested = args.calls;

    let baseline = probe.sample().await?;
    let mut setup = Setup::default();
    let result = load(&api, &probe, &args, server, per_room, &mut setup).await;
    setup.remove(&api).await;
    let (measured, outcomes) = result?;
    fill(&mut report, &measured, baseline, &outcomes, rooms, per_room);
    Ok(report)
}

async fn load(
    api: &Api,
    probe: &ServerProbe,
    args: &SipArgs,
    server: SocketAddr,
    per_room: usize,
    setup: &mut Setup,
) -> anyhow::Result<(window::Window, Vec<CallOutcome>)> {
    let run_id = random_id("", 6).to_lowercase();
    // The trunk admits the address the calls come from.
    let local_ip = {
        let probe_socket = std::net::UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        probe_socket.connect(server).with_context(|| format!("no route to SIP at {server}"))?;
        probe_socket.local_addr()?.ip()
    };
    let network = format!("{local_ip}/{}", if local_ip.is_ipv4() { 32 } else { 128 });
    setup.trunk = Some(api.create_sip_trunk(&format!("bench-{run_id}"), &network).await?);
    for room in 0..args.calls.div_ceil(per_room) {
        let name = format!("bench-{run_id}-{room}");
        api.create_room(&name, 30).await?;
        setup.rooms.push(name);
    }
    if !setup.rooms.is_empty() {
        setup.rule = Some(api.create_sip_rule(&setup.rooms).await?);
    }

    let traffic = Arc::new(Traffic::default());
    let stop = CancellationToken::new();
    let mut calls = JoinSet::new();
    for i in 0..args.calls {
        let call = Call {
            server,
            room: setup.rooms.get(i / per_room).cloned().unwrap_or_default(),
            caller: format!("bench{i}"),
            // A different tone per caller, each a whole number of cycles per second.
            tone_hz: 300 + 40 * (i % per_room) as u32,
            traffic: traffic.clone(),
        };
        let stop = stop.clone();
        calls.spawn(async move { call.run(stop).await });
        tokio::time::sleep(Duration::from_secs_f64(1.0 / args.ramp.max(0.1))).await;
    }
    window::wait_for_joins(&traffic, args.calls as u64, Duration::from_secs(40)).await;
    // Every room's mix is running before the window opens.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let measured = window::measure(probe, &traffic, args.duration).await;
    stop.cancel();
    let mut outcomes = Vec::new();
    while let Some(done) = calls.join_next().await {
        outcomes.push(
            done.unwrap_or_else(|err| CallOutcome { error: Some(format!("call task: {err}")), ..Default::default() }),
        );
    }
    Ok((measured?, outcomes))
}

fn fill(
    report: &mut Report,
    window: &window::Window,
    baseline: super::probe::Sample,
    outcomes: &[CallOutcome],
    rooms: usize,
    per_room: usize,
) {
    window::fill_window(report, window, Some(baseline));

    let mut frames = FrameCounts::default();
    let mut setup = Micros::new();
    let mut figures = SipFigures {
        calls: outcomes.len(),
        rooms,
        calls_per_room: per_room,
        mix_packets_per_call_per_s_expected: rtp::PACKETS_PER_SECOND,
        ..SipFigures::default()
    };
    let (mut received, mut audible) = (0u64, 0u64);
    let mut errors = Vec::new();
    for outcome in outcomes {
        frames.published += outcome.sent;
        figures.packets_sent += outcome.sent;
        frames.add_stream(&outcome.mix.seen, outcome.mix.end());
        received += outcome.mix.packets;
        audible += outcome.mix.audible;
        figures.malformed_packets += outcome.mix.malformed;
        if let Some(us) = outcome.setup_us {
            setup.record(us);
        }
        if let Some(error) = &outcome.error {
            if error.contains("server hung up") {
                figures.ended_by_server += 1;
            }
            errors.push(error.clone());
        }
    }
    report.frames = frames;
    report.join_ms = setup.percentiles_ms();
    report.subscribers_connected = outcomes.iter().filter(|o| o.setup_us.is_some()).count();
    report.subscribers_failed = outcomes.len() - report.subscribers_connected;
    if report.subscribers_connected > 0 && window.seconds > 0.0 {
        figures.mix_packets_per_call_per_s =
            Some(window.packets as f64 / report.subscribers_connected as f64 / window.seconds);
    }
    if received > 0 {
        figures.audible_percent = Some(audible as f64 * 100.0 / received as f64);
    }
    report.notes.push(format!(
        "join time is call set-up (INVITE sent to 200 OK); each call hears {:.1} mix packets/s (50 expected), {} audible",
        figures.mix_packets_per_call_per_s.unwrap_or(0.0),
        figures.audible_percent.map_or_else(|| "-".to_owned(), |p| format!("{p:.1} %")),
    ));
    report.notes.push(
        "frames: published = RTP packets the callers sent; sent/received/lost = the mix's RTP sequence numbers, \
         first to last received per call (the mix is re-encoded audio: no latency stamp survives it)"
            .to_owned(),
    );
    errors.sort();
    errors.dedup();
    for error in errors.into_iter().take(5) {
        report.notes.push(format!("call failed: {error}"));
    }
    report.sip = Some(figures);
    report.derive();
}
