//! `junction bench rtmp --streams N`: N RTMP publishers of synthetic H.264 + AAC (one room and
//! ingress key each), each watched by a viewer, measured for a window: what the server spends per
//! ingested stream, and what reaches the viewers. The default viewer is a WHEP player, which
//! takes Opus only: the server runs its AAC->Opus transcoder for every stream, as it would for
//! browsers watching an OBS stream. With `--output recording` (or `hls`, `grid`), each stream's
//! room also gets that output component once every stream flows (a `tracks` recording: two files
//! per stream; an LL-HLS output of the publisher, nobody pulling it; an LL-HLS `grid`: the
//! publisher decoded, composed into a 720p picture and encoded again, with the room's mix), so a
//! run with and one without give what an output costs. `--hls-players N` adds N LL-HLS players
//! pulling each HLS output ([`hls_players`]). `--find-max` measures a saturation point instead of
//! one load ([`super::find_max`]): with WHEP viewers a step is clean only if the transcoded audio
//! kept up too — at least 99 % of the Opus frames due in the window (`--transcoded-audio-limit`),
//! and their p99 delay (against their media time, from the earliest one; they carry no stamp)
//! under the latency limit — as a transcoder that falls behind delays and then drops the audio
//! while the video stays on time. The RTMP client is junction-testkit's.

mod endpoints;
mod hls_players;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use junction_core::ids::random_id;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::find_max::Search;
use super::media::{AacSource, RunClock, Stream, VideoPattern};
use super::probe::ServerProbe;
use super::report::Report;
use super::stats::{Outcome, Traffic};
use super::webrtc::{DtlsCertKind, PeerKit, VideoCodec, WhepViewer};
use super::{Target, VideoSize, parse_duration, window};
pub use endpoints::{Player, Publisher};
pub use junction_testkit::rtmp::host_of;

/// Who watches each RTMP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Viewer {
    /// A WHEP player: H.264 as sent, audio transcoded from AAC to Opus by the server.
    Whep,
    /// An RTMP player (H.264 + AAC as sent).
    Rtmp,
    /// Nobody: ingest only.
    None,
}

#[derive(Debug, Clone, Args)]
pub struct RtmpArgs {
    /// Publishers, each in its own room.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, value_enum, default_value = "720p")]
    pub video: VideoSize,
    /// Who watches each stream.
    #[arg(long, value_enum, default_value = "whep")]
    pub viewer: Viewer,
    /// Publishers started per second while ramping up.
    #[arg(long, default_value_t = 20.0)]
    pub ramp: f64,
    /// An output component for each stream's room too: `recording` (one file per track, where
    /// the server's `recording.dir` says), `hls` (LL-HLS of the publisher, in memory) or `grid`
    /// (an LL-HLS grid: a 720p30 composition of the room with its audio mix).
    #[arg(long, value_enum)]
    pub output: Option<Output>,
    /// With `--output hls`: LL-HLS players pulling each room's output (made public), as hls.js
    /// does in its low-latency mode.
    #[arg(long, default_value_t = 0)]
    pub hls_players: usize,
    /// Ramp the stream count run after run (from `--streams`, `--step` more each time) and report
    /// the largest count carried cleanly: every viewer connected, loss and p99 video latency under
    /// their limits, and (WHEP viewers) the transcoded audio keeping up.
    #[arg(long, conflicts_with_all = ["output", "hls_players"])]
    pub find_max: bool,
    /// Streams added per `--find-max` step.
    #[arg(long, default_value_t = 8, requires = "find_max", value_parser = clap::value_parser!(u64).range(1..))]
    pub step: u64,
    /// Largest stream count a `--find-max` ramp tries.
    #[arg(long, default_value_t = 1000, requires = "find_max")]
    pub max_streams: usize,
    /// Frame loss, in percent, at which a `--find-max` step is no longer clean.
    #[arg(long, default_value_t = 0.5, requires = "find_max")]
    pub loss_limit: f64,
    /// p99 latency (publisher to viewer) at which a `--find-max` step is no longer clean; the
    /// transcoded audio's p99 delay is held to it too.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, requires = "find_max")]
    pub latency_limit: Duration,
    /// With WHEP viewers: the share of the transcoded audio frames due in the window (Opus, 20 ms),
    /// in percent, below which a `--find-max` step is not clean: the transcoders fell behind and
    /// dropped input (1 % is a gap every two seconds).
    #[arg(long, default_value_t = 99.0, requires = "find_max")]
    pub transcoded_audio_limit: f64,
}

/// `--find-max`: runs of growing stream count until one is not clean; the largest clean run's
/// report, with every step in `find_max`.
pub async fn find_max(target: &Target, args: RtmpArgs) -> anyhow::Result<Report> {
    let search = Search::new(args.streams, args.step, args.max_streams, args.loss_limit, args.latency_limit);
    let viewer = args.viewer;
    if viewer == Viewer::None {
        anyhow::bail!("--find-max needs viewers (--viewer whep or rtmp): without them nothing is measured");
    }
    let step = |streams| run(target, RtmpArgs { streams, find_max: false, ..args.clone() });
    let latency_limit_ms = args.latency_limit.as_secs_f64() * 1000.0;
    let audio_limit = args.transcoded_audio_limit / 100.0;
    let judge = move |report: &Report| {
        if viewer != Viewer::Whep {
            return None;
        }
        // What `run` measured and reported (`settings.transcoded_audio_share`).
        let share = report.settings.get("transcoded_audio_share").and_then(|v| v.as_f64()).unwrap_or(0.0);
        let delay = report.unstamped_delay_ms.p99;
        if share < audio_limit {
            Some(format!("transcoded audio {:.1} % of the Opus frames due", share * 100.0))
        } else if delay.is_some_and(|p99| p99 >= latency_limit_ms) {
            Some(format!("transcoded audio delayed p99 {:.1} ms", delay.unwrap_or_default()))
        } else {
            None
        }
    };
    let mut report = super::find_max::search(search, "viewers", step, judge).await?;
    report.mode = "rtmp-find-max";
    Ok(report)
}

/// Transcoded (Opus, 20 ms) frames the viewers got in the window, as a share of what every
/// connected viewer should have got; `None` when nothing was due.
fn transcoded_audio_share(report: &Report) -> Option<f64> {
    let due = report.subscribers_connected as f64 * report.duration_s * 50.0;
    (due > 0.0).then(|| report.frames.unstamped_in_window as f64 / due)
}

/// An output component the run adds to every room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Recording,
    Hls,
    Grid,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Recording => "recording",
            Output::Hls => "hls",
            Output::Grid => "grid",
        }
    }

    fn component(self) -> serde_json::Value {
        match self {
            Output::Recording => serde_json::json!({"type": "recording", "layout": "tracks"}),
            Output::Hls => serde_json::json!({"type": "hls", "peer": "publisher", "public": true}),
            Output::Grid => serde_json::json!({"type": "hls", "layout": "grid"}),
        }
    }
}

/// Rooms, ingress keys and viewer tokens of one run, removed again at the end.
struct Setup {
    rooms: Vec<String>,
    ingress: Vec<String>,
}

impl Setup {
    async fn remove(&self, api: &Api) {
        for id in &self.ingress {
            let _ = api.delete_ingress(id).await;
        }
        for room in &self.rooms {
            let _ = api.delete_room(room).await;
        }
    }
}

pub async fn run(target: &Target, args: RtmpArgs) -> anyhow::Result<Report> {
    if args.hls_players > 0 && args.output != Some(Output::Hls) {
        anyhow::bail!("--hls-players needs --output hls");
    }
    let api = Api::new(&target.url, target.api_key.clone());
    api.health().await?;
    let probe = ServerProbe::new(&target.url, target.server_pid);
    let clock = RunClock::new();
    let aac = tokio::task::spawn_blocking(AacSource::new).await??;
    let pattern = VideoPattern::new(args.video, 30, Duration::from_secs(2));
    let run_id = random_id("", 6).to_lowercase();
    let viewer = match args.viewer {
        Viewer::Whep => "rtmp+whep",
        Viewer::Rtmp => "rtmp",
        Viewer::None => "rtmp-ingest",
    };
    let label = match args.output {
        Some(output) => format!("{viewer}+{}", output.name()),
        None => viewer.to_owned(),
    };
    let mut report = Report::new("rtmp", label);
    report.server_url = api.base().to_owned();
    report.server_cpu_source = probe.source();
    report.settings = serde_json::json!({
        "streams": args.streams, "duration_s": args.duration.as_secs_f64(), "video": format!("{:?}", args.video),
        "viewer": format!("{:?}", args.viewer).to_lowercase(), "audio": "AAC-LC 44.1 kHz stereo 128 kb/s",
        "output": args.output.map(Output::name), "hls_players_per_stream": args.hls_players,
    });
    report.publishers = args.streams;
    report.subscribers_requested = if args.viewer == Viewer::None { 0 } else { args.streams };

    let baseline = probe.sample().await?;
    let mut setup = Setup { rooms: Vec::new(), ingress: Vec::new() };
    let hls_stats = Arc::new(hls_players::HlsStats::default());
    let result = load(&api, &probe, &args, &mut setup, (clock, aac, pattern), &run_id, &hls_stats, &mut report).await;
    setup.remove(&api).await;
    let (measured, streams, outcomes) = result?;
    window::fill(&mut report, &measured, Some(baseline), &streams, &outcomes);
    if args.hls_players > 0 {
        let players = args.hls_players * args.streams;
        report.settings["hls_players"] = hls_stats.report(players, report.duration_s);
        report.notes.push(format!(
            "{players} LL-HLS players pull the outputs (hinted part, then a blocking reload): CPU and memory include them"
        ));
    }
    if args.viewer == Viewer::None {
        // Nobody received anything: the per-stream figures are per ingest.
        report.notes.push("no viewers: CPU and memory are per ingested stream".to_owned());
    }
    if let Some(output) = args.output {
        report.notes.push(format!("each room has a {} output: CPU and memory per stream include it", output.name()));
    }
    report.notes.push(
        "RTMP has no keyframe request: join time includes waiting for the publisher's next keyframe (every 2 s)"
            .to_owned(),
    );
    if args.viewer == Viewer::Whep {
        report.notes.push(
            "WHEP viewers hear Opus transcoded from AAC: those frames carry no stamp and are counted apart".to_owned(),
        );
        if let Some(share) = transcoded_audio_share(&report) {
            report.settings["transcoded_audio_share"] = serde_json::json!(share);
            report.notes.push(format!(
                "transcoded audio in the window: {} Opus frames, {:.1} % of 50 per second per viewer",
                report.frames.unstamped_in_window,
                share * 100.0
            ));
        }
    }
    if args.streams > 0 && report.subscribers_connected == 0 && args.viewer == Viewer::None {
        report.bytes_per_subscriber =
            report.server_rss_bytes.map(|rss| (rss as f64 - baseline.rss_bytes as f64) / args.streams as f64);
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn load(
    api: &Api,
    probe: &ServerProbe,
    args: &RtmpArgs,
    setup: &mut Setup,
    (clock, aac, pattern): (RunClock, Arc<AacSource>, VideoPattern),
    run_id: &str,
    hls_stats: &Arc<hls_players::HlsStats>,
    report: &mut Report,
) -> anyhow::Result<(window::Window, Vec<Arc<super::media::SendLog>>, Vec<Outcome>)> {
    let traffic = Arc::new(Traffic::default());
    let (mut hls, stop_hls) = (JoinSet::new(), CancellationToken::new());
    let stop_publishers = CancellationToken::new();
    let stop_viewers = CancellationToken::new();
    let mut publishers = JoinSet::new();
    let mut viewers = JoinSet::new();
    let mut streams = Vec::new();
    let mut host = None;
    let http = super::webrtc::whip::http_client();
    let http_host = reqwest::Url::parse(api.base()).ok().and_then(|u| u.host_str().map(str::to_owned));
    let kit = PeerKit::new(VideoCodec::H264, http_host.as_deref().unwrap_or("127.0.0.1"), DtlsCertKind::Ecdsa)?;

    for i in 0..args.streams {
        let room = format!("bench-{run_id}-{i}");
        api.create_room(&room, 30).await?;
        setup.rooms.push(room.clone());
        let (id, key, url) = api.rtmp_ingress(&room, "publisher").await?;
        setup.ingress.push(id);
        let rtmp_host = host_of(&url)?;
        host.get_or_insert_with(|| rtmp_host.clone());
        let (video, audio) = (Stream::new(2 * i as u32), Stream::new(2 * i as u32 + 1));
        streams.push(video.log.clone());
        streams.push(audio.log.clone());
        let publisher =
            Publisher { host: rtmp_host.clone(), key, pattern, aac: aac.clone(), clock, video, audio: audio.clone() };
        let connection = publisher.start().await.with_context(|| format!("publisher {i} could not start"))?;
        let stop = stop_publishers.clone();
        publishers.spawn(async move { publisher.run(connection, stop).await });
        let stop = stop_viewers.clone();
        match args.viewer {
            Viewer::Whep => {
                let viewer = WhepViewer {
                    http: http.clone(),
                    endpoint: format!("{}/whep/{room}?identity=publisher", api.base()),
                    token: api.token(&room, "viewer", false, true).await?,
                    kit: kit.clone(),
                    clock,
                    traffic: traffic.clone(),
                    idle: false,
                };
                viewers.spawn(async move { viewer.run(stop).await });
            }
            Viewer::Rtmp => {
                let token = api.token(&room, "viewer", false, true).await?;
                let player = Player {
                    host: rtmp_host,
                    play_path: format!("{room}/publisher?token={token}"),
                    clock,
                    aac: aac.clone(),
                    audio,
                    traffic: traffic.clone(),
                };
                viewers.spawn(async move { player.run(stop).await });
            }
            Viewer::None => {}
        }
        tokio::time::sleep(Duration::from_secs_f64(1.0 / args.ramp.max(0.1))).await;
    }
    report.settings["rtmp_host"] = serde_json::json!(host);

    let expected = viewers.len() as u64;
    window::wait_for_joins(&traffic, expected, Duration::from_secs(15)).await;
    if let Some(output) = args.output {
        // The server's memory with every stream flowing, before the outputs: what they add is
        // measured within this run (a run before this one leaves the allocator's cache).
        let before = probe.sample().await?;
        report.settings["rss_before_outputs_bytes"] = serde_json::json!(before.rss_bytes);
        for room in &setup.rooms {
            // Deleting the room at the end stops its output.
            let id = api
                .create_component(room, output.component())
                .await
                .with_context(|| format!("{} output of room {room}", output.name()))?;
            for _ in 0..args.hls_players {
                let playlist = format!("{}/hls/{room}/{id}/index.m3u8", api.base());
                let (http, stats, stop) = (http.clone(), hls_stats.clone(), stop_hls.clone());
                hls.spawn(hls_players::play(http, playlist, stats, stop));
            }
        }
        // Every output begins at the next keyframe (every 2 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    hls_stats.set_measuring(true);
    let measured = window::measure(probe, &traffic, args.duration).await;
    hls_stats.set_measuring(false);
    stop_hls.cancel();
    while hls.join_next().await.is_some() {}

    // Frames in flight reach the viewers before they stop counting.
    let drain = Duration::from_millis(1500);
    let outcomes = window::wind_down(report, (publishers, stop_publishers), (viewers, stop_viewers), drain).await;
    Ok((measured?, streams, outcomes))
}
