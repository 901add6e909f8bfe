//! `junction bench fanout`: WHIP publishers of synthetic video + Opus in one room, and WHEP
//! subscribers ramped up at a steady rate, spread over the publishers. Measures the UDP floor
//! first, then a window with everyone connected: what arrives (loss, latency), what the server
//! spends per forwarded packet (and as a multiple of the floor), and its memory per subscriber.
//!
//! Against another server: `--whip-url`/`--whep-url` with `--token` (or `--whip-token` and
//! `--whep-token`, for servers whose tokens differ by role) skip Junction's REST API and use the
//! given endpoints and bearer tokens for every session; `--dtls-cert rsa` for a server whose DTLS
//! only signs with RSA (atm0s-media-server).
//!
//! `--find-max` measures a saturation point instead of one load: runs of `--subscribers`, then
//! `--step` more each time, each with a fresh room and its own window, until a run loses at
//! least `--loss-limit` % of its frames, its p99 latency reaches `--latency-limit`, not every
//! subscriber connects, or `--max-subscribers` is passed. The report is the largest clean run's,
//! with every step listed. With the server pinned to one core (as `scripts/bench` starts it),
//! the largest clean count is the subscribers one server core carries.
//!
//! `--via-turn` puts every subscriber behind the server's own TURN server (UDP): the difference
//! from the same run without it is what relaying costs per packet.
//!
//! Across a cluster: `--subscribe-at URL` (repeatable) sends the subscribers, round robin, to
//! other nodes of the same cluster while the publishers stay on the target, so every subscriber
//! is served through the node-to-node relay; CPU and memory are then the sum over the nodes, and
//! the report lists each node's share. Comparing such a run with one where the subscribers are
//! on the target (and `--cluster-node` counts the idle other node) gives the relay's cost per
//! subscriber and its added latency.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use junction_core::ids::random_id;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::find_max::Search;
use super::floor;
use super::media::Stream;
use super::media::{RunClock, SendLog, VideoPattern};
use super::probe::ServerProbe;
use super::report::Report;
use super::stats::{Outcome, Traffic};
use super::webrtc::{DtlsCertKind, PeerKit, VideoCodec, WhepViewer, WhipPublisher};
use super::{Target, VideoSize, parse_duration, window};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FanoutProtocol {
    /// WHIP publishers, WHEP subscribers.
    Whep,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    #[arg(long, value_enum, default_value = "whep")]
    pub protocol: FanoutProtocol,
    #[arg(long, value_enum, default_value = "720p")]
    pub video: VideoSize,
    #[arg(long, value_enum, default_value = "vp8")]
    pub codec: VideoCodec,
    /// Length of the measured window, after every subscriber joined.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time between the last subscriber joining and the window: for servers that pace each
    /// subscriber at its bandwidth estimate (and hold video back while the estimate ramps up),
    /// the window then sees the steady state, not the ramp.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Subscribers started per second while ramping up.
    #[arg(long, default_value_t = 50.0)]
    pub ramp: f64,
    /// Keyframe interval of the synthetic encoder (it also answers keyframe requests).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub keyframe_interval: Duration,
    /// Publish to this WHIP endpoint instead of the server's `/whip/<room>` (another server).
    #[arg(long, requires = "whep_url")]
    pub whip_url: Option<String>,
    /// Watch from this WHEP endpoint instead of the server's `/whep/<room>`.
    #[arg(long, requires = "whip_url")]
    pub whep_url: Option<String>,
    /// Bearer token for every WHIP and WHEP request when the endpoints are given.
    #[arg(long)]
    pub token: Option<String>,
    /// Bearer token for the WHIP requests (instead of `--token`).
    #[arg(long, requires = "whip_url")]
    pub whip_token: Option<String>,
    /// Bearer token for the WHEP requests (instead of `--token`).
    #[arg(long, requires = "whep_url")]
    pub whep_token: Option<String>,
    /// The DTLS certificate every peer presents: `rsa` runs the handshake on OpenSSL, for a server
    /// that only signs with RSA.
    #[arg(long, value_enum, default_value = "ecdsa")]
    pub dtls_cert: DtlsCertKind,
    /// HTTP base URL of another node of the target's cluster: subscribers join there (round robin
    /// over every `--subscribe-at`) instead of on the target, and watch through the relay.
    #[arg(long = "subscribe-at", conflicts_with_all = ["whip_url", "whep_url"])]
    pub subscribe_at: Vec<String>,
    /// HTTP base URL of another node of the target's cluster whose CPU and memory count with the
    /// target's even when no session goes to it (a baseline with the same processes running).
    #[arg(long = "cluster-node")]
    pub cluster_node: Vec<String>,
    /// Skip measuring the UDP floor.
    #[arg(long)]
    pub no_floor: bool,
    /// Subscribers to a room where nothing is published: they count as joined once connected,
    /// and the report gives the memory an idle subscriber costs.
    #[arg(long, conflicts_with = "publishers")]
    pub idle: bool,
    /// Ramp the subscriber count run after run (from `--subscribers`, `--step` more each time)
    /// and report the largest count carried cleanly.
    #[arg(long, conflicts_with = "idle")]
    pub find_max: bool,
    /// Subscribers added per `--find-max` step.
    #[arg(long, default_value_t = 50, requires = "find_max", value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,
    /// Largest subscriber count a `--find-max` ramp tries.
    #[arg(long, default_value_t = 2000, requires = "find_max")]
    pub max_subscribers: usize,
    /// Frame loss, in percent, at which a `--find-max` step is no longer clean.
    #[arg(long, default_value_t = 0.5, requires = "find_max")]
    pub loss_limit: f64,
    /// p99 forwarding latency at which a `--find-max` step is no longer clean.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, requires = "find_max")]
    pub latency_limit: Duration,
    /// Subscribers connect only through the server's own TURN server over UDP (one allocation
    /// each, their media as ChannelData): compare with a run without it for what relaying costs.
    /// The server needs `turn.enabled` and a `turn.max_allocations_per_credential` above the
    /// subscriber count (they share one credential).
    #[arg(long, conflicts_with_all = ["whip_url", "whep_url", "subscribe_at"])]
    pub via_turn: bool,
}

/// `--find-max`: fan-out runs of growing size until one is not clean; the largest clean run's
/// report, with every step in `find_max`.
pub async fn find_max(target: &Target, args: FanoutArgs) -> anyhow::Result<Report> {
    let search = Search::new(args.subscribers, args.step, args.max_subscribers, args.loss_limit, args.latency_limit);
    let step = |subscribers| run(target, FanoutArgs { subscribers, find_max: false, ..args.clone() });
    let mut report = super::find_max::search(search, "subscribers", step, |_| None).await?;
    report.mode = "fanout-find-max";
    Ok(report)
}

/// Where sessions go and with which credentials.
struct Endpoints {
    whip: String,
    whep: Vec<String>,
    publisher_tokens: Vec<String>,
    viewer_token: String,
    room: Option<String>,
    /// Where subscribers relay through (`--via-turn`).
    turn: Option<super::webrtc::turn::TurnServer>,
}

async fn endpoints(api: &Api, args: &FanoutArgs) -> anyhow::Result<Endpoints> {
    if let (Some(whip), Some(whep)) = (&args.whip_url, &args.whep_url) {
        let (Some(whip_token), Some(whep_token)) =
            (args.whip_token.as_ref().or(args.token.as_ref()), args.whep_token.as_ref().or(args.token.as_ref()))
        else {
            bail!("--whip-url and --whep-url need --token, or --whip-token and --whep-token");
        };
        return Ok(Endpoints {
            whip: whip.clone(),
            whep: vec![whep.clone()],
            publisher_tokens: vec![whip_token.clone(); args.publishers],
            viewer_token: whep_token.clone(),
            room: None,
            turn: None,
        });
    }
    let room = format!("bench-{}", random_id("", 8).to_lowercase());
    api.create_room(&room, 30).await?;
    let mut publisher_tokens = Vec::new();
    for p in 0..args.publishers {
        publisher_tokens.push(api.token(&room, &format!("publisher-{p}"), true, false).await?);
    }
    let base = api.base();
    let subscriber_bases: Vec<&str> = if args.subscribe_at.is_empty() {
        vec![base]
    } else {
        args.subscribe_at.iter().map(|url| url.trim_end_matches('/')).collect()
    };
    // Each subscriber watches one publisher and one node, round robin over both.
    let whep = (0..args.publishers.max(1) * subscriber_bases.len())
        .map(|i| {
            let nodes = subscriber_bases.len();
            let (node, p) = (subscriber_bases[i % nodes], (i / nodes) % args.publishers.max(1));
            format!("{node}/whep/{room}?identity=publisher-{p}")
        })
        .collect();
    Ok(Endpoints {
        whip: format!("{base}/whip/{room}"),
        whep,
        publisher_tokens,
        viewer_token: api.token(&room, "viewer", false, true).await?,
        turn: match args.via_turn {
            true => Some(api.turn_server(&room, "viewer").await?),
            false => None,
        },
        room: Some(room),
    })
}

pub async fn run(target: &Target, args: FanoutArgs) -> anyhow::Result<Report> {
    let api = Api::new(&target.url, target.api_key.clone());
    let probe = if args.subscribe_at.is_empty() && args.cluster_node.is_empty() {
        ServerProbe::new(&target.url, target.server_pid)
    } else {
        let mut nodes = vec![api.base().to_owned()];
        for url in args.subscribe_at.iter().chain(&args.cluster_node) {
            let url = url.trim_end_matches('/').to_owned();
            if !nodes.contains(&url) {
                nodes.push(url);
            }
        }
        ServerProbe::nodes(&nodes, target.server_pid)
    };
    let mut report = Report::new("fanout", "whep");
    report.server_url = api.base().to_owned();
    report.server_cpu_source = probe.source();
    report.publishers = args.publishers;
    report.subscribers_requested = args.subscribers;
    report.settings = serde_json::json!({
        "publishers": args.publishers, "subscribers": args.subscribers, "duration_s": args.duration.as_secs_f64(),
        "video": format!("{:?}", args.video), "video_bps": args.video.format().2,
        "codec": format!("{:?}", args.codec).to_lowercase(), "audio": "Opus 20 ms, 48 kb/s",
        "keyframe_interval_s": args.keyframe_interval.as_secs_f64(), "ramp_per_s": args.ramp, "settle_s": args.settle.as_secs_f64(), "idle": args.idle,
        "via_turn": args.via_turn, "dtls_cert": format!("{:?}", args.dtls_cert).to_lowercase(),
    });
    if args.idle {
        report.publishers = 0;
    }
    if !args.no_floor {
        report.floor = Some(tokio::task::spawn_blocking(|| floor::measure(50_000, 32)).await??);
    }
    let endpoints = endpoints(&api, &args).await?;
    let host = reqwest::Url::parse(&endpoints.whip)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .context("the WHIP URL has no host")?;
    let kit = PeerKit::new(args.codec, &host, args.dtls_cert)?;
    let result = load(&probe, &args, &endpoints, kit, &mut report).await;
    if let Some(room) = &endpoints.room {
        let _ = api.delete_room(room).await;
    }
    let (measured, baseline, streams, outcomes) = result?;
    window::fill(&mut report, &measured, baseline, &streams, &outcomes);
    Ok(report)
}

/// Each node's share: the sessions sent to it and its CPU and memory over the window.
fn node_figures(
    args: &FanoutArgs,
    endpoints: &Endpoints,
    before: &[(String, super::probe::Sample)],
    after: &[(String, super::probe::Sample)],
) -> Vec<super::report::NodeFigures> {
    let publisher_node = endpoints.whip.split("/whip/").next().unwrap_or_default();
    before
        .iter()
        .zip(after)
        .map(|((url, start), (_, end))| {
            let serves = |endpoint: &str| endpoint.starts_with(&format!("{url}/"));
            super::report::NodeFigures {
                url: url.clone(),
                publishers: if url == publisher_node { endpoints.publisher_tokens.len() } else { 0 },
                subscribers: (0..args.subscribers)
                    .filter(|v| serves(&endpoints.whep[v % endpoints.whep.len()]))
                    .count(),
                cpu_percent: super::probe::cpu_percent(start, end),
                rss_bytes: end.rss_bytes,
            }
        })
        .collect()
}

type Loaded = (window::Window, Option<super::probe::Sample>, Vec<Arc<SendLog>>, Vec<Outcome>);

async fn load(
    probe: &ServerProbe,
    args: &FanoutArgs,
    endpoints: &Endpoints,
    kit: PeerKit,
    report: &mut Report,
) -> anyhow::Result<Loaded> {
    let http = super::webrtc::whip::http_client();
    let clock = RunClock::new();
    let pattern = VideoPattern::new(args.video, 30, args.keyframe_interval);
    let traffic = Arc::new(Traffic::default());
    let stop_publishers = CancellationToken::new();
    let stop_viewers = CancellationToken::new();
    let mut publishers = JoinSet::new();
    let mut streams = Vec::new();

    let publisher_tokens = if args.idle { &[][..] } else { &endpoints.publisher_tokens[..] };
    for (p, token) in publisher_tokens.iter().enumerate() {
        let (video, audio) = (Stream::new(2 * p as u32), Stream::new(2 * p as u32 + 1));
        streams.push(video.log.clone());
        streams.push(audio.log.clone());
        let publisher = WhipPublisher {
            http: http.clone(),
            endpoint: endpoints.whip.clone(),
            token: token.clone(),
            kit: kit.clone(),
            pattern,
            clock,
            video,
            audio,
        };
        let connected = publisher.connect().await.with_context(|| format!("publisher {p} could not connect"))?;
        let stop = stop_publishers.clone();
        publishers.spawn(async move { publisher.run(connected, stop).await });
    }
    // Let the tracks appear and settle before anyone watches.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = probe.sample().await.ok();

    let mut viewers = JoinSet::new();
    let mut viewer_kit = kit.clone();
    viewer_kit.turn = endpoints.turn.clone();
    let interval = Duration::from_secs_f64(1.0 / args.ramp.max(0.1));
    let ramp = super::progress::Progress::counter(args.subscribers as u64, "subscribers");
    for v in 0..args.subscribers {
        let viewer = WhepViewer {
            http: http.clone(),
            endpoint: endpoints.whep[v % endpoints.whep.len()].clone(),
            token: endpoints.viewer_token.clone(),
            kit: viewer_kit.clone(),
            clock,
            traffic: traffic.clone(),
            idle: args.idle,
        };
        let stop = stop_viewers.clone();
        viewers.spawn(async move { viewer.run(stop).await });
        ramp.set(v as u64 + 1);
        tokio::time::sleep(interval).await;
    }
    ramp.finish();
    window::wait_for_joins(&traffic, args.subscribers as u64, Duration::from_secs(30)).await;
    tokio::time::sleep(args.settle).await;
    let nodes_before = probe.sample_each().await;
    let measured = window::measure(probe, &traffic, args.duration).await;
    if let (ServerProbe::Nodes(_), Ok(before), Ok(after)) = (probe, nodes_before, probe.sample_each().await) {
        report.nodes = node_figures(args, endpoints, &before, &after);
    }

    // Frames in flight reach the subscribers before they stop counting.
    let drain = Duration::from_millis(1000);
    let outcomes = window::wind_down(report, (publishers, stop_publishers), (viewers, stop_viewers), drain).await;
    Ok((measured?, baseline, streams, outcomes))
}
