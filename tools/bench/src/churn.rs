//! `junction bench churn --cycles N`: sessions that come and go. Each cycle starts `concurrency`
//! publishers (each in its own room) and a player for each, streams for `hold`, then everyone
//! leaves — publishers by closing their connection, players when their stream ends. After the
//! last cycle the server must be back to the live counts it started with; the report gives the
//! peers, tracks and rooms left over and the server's memory before and after.
//!
//! A first, unmeasured cycle warms the server up (allocator pools, lazily built state), so the
//! memory figures compare like with like.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use junction_core::ids::random_id;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::{Api, Health};
use super::media::Stream;
use super::media::{AacSource, RunClock, SendLog, VideoPattern};
use super::probe::{self, ServerProbe};
use super::progress::Progress;
use super::report::{ChurnFigures, Report};
use super::rtmp::{Player, Publisher, host_of};
use super::stats::{Outcome, Traffic};
use super::{Target, VideoSize, parse_duration, window};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChurnProtocol {
    Rtmp,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    /// Join/leave cycles measured (after one warm-up cycle).
    #[arg(long, default_value_t = 10)]
    pub cycles: usize,
    /// Publisher + player pairs per cycle.
    #[arg(long, default_value_t = 5)]
    pub concurrency: usize,
    /// How long each cycle streams before everyone leaves.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub hold: Duration,
    #[arg(long, value_enum, default_value = "rtmp")]
    pub protocol: ChurnProtocol,
    /// How long the server gets to release everything after the last cycle.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// What one cycle's run needs.
struct Cycle<'a> {
    api: &'a Api,
    clock: RunClock,
    aac: Arc<AacSource>,
    pattern: VideoPattern,
    traffic: Arc<Traffic>,
    run_id: String,
    /// Ingress keys made so far, deleted after the run (deleting one kicks a live publisher,
    /// which would hide whether leaving by itself releases everything).
    ingress: parking_lot::Mutex<Vec<String>>,
}

pub async fn run(target: &Target, args: ChurnArgs) -> anyhow::Result<Report> {
    let api = Api::new(&target.url, target.api_key.clone());
    let probe = ServerProbe::new(&target.url, target.server_pid);
    let started_at = api.health().await?;
    let mut report = Report::new("churn", "rtmp");
    report.server_url = api.base().to_owned();
    report.server_cpu_source = probe.source();
    report.settings = serde_json::json!({
        "cycles": args.cycles, "concurrency": args.concurrency, "hold_s": args.hold.as_secs_f64(),
        "protocol": "rtmp", "video": "360p, keyframe every second",
    });
    let cycle = Cycle {
        api: &api,
        clock: RunClock::new(),
        aac: tokio::task::spawn_blocking(AacSource::new).await??,
        pattern: VideoPattern::new(VideoSize::P360, 30, Duration::from_secs(1)),
        traffic: Arc::new(Traffic::default()),
        run_id: random_id("", 6).to_lowercase(),
        ingress: Default::default(),
    };

    cycle.run(usize::MAX, args.concurrency, args.hold).await?;
    let settled = wait_for_counts(&api, started_at, args.settle).await?;
    let before = probe.sample().await?;
    let own_before = probe::own_cpu_seconds();

    let mut streams = Vec::new();
    let mut outcomes = Vec::new();
    cycle.traffic.set_measuring(true);
    let progress = Progress::counter(args.cycles as u64, "cycles");
    for index in 0..args.cycles {
        let (mut logs, mut results) = cycle.run(index, args.concurrency, args.hold).await?;
        // Stream ids are indices into `streams`: renumber this cycle's after the earlier ones.
        let offset = streams.len() as u32;
        for outcome in &mut results {
            outcome.log.streams = std::mem::take(&mut outcome.log.streams)
                .into_iter()
                .map(|(stream, seen)| (stream + offset, seen))
                .collect();
        }
        streams.append(&mut logs);
        outcomes.append(&mut results);
        progress.set(index as u64 + 1);
    }
    progress.finish();

    let after_counts = wait_for_counts(&api, started_at, args.settle).await?;
    let after = probe.sample().await?;
    let ingress = std::mem::take(&mut *cycle.ingress.lock());
    for id in ingress {
        let _ = api.delete_ingress(&id).await;
    }
    let measured = window::Window {
        seconds: after.at.saturating_duration_since(before.at).as_secs_f64(),
        server_cpu_percent: probe::cpu_percent(&before, &after),
        client_cpu_percent: (probe::own_cpu_seconds() - own_before).max(0.0) * 100.0
            / after.at.saturating_duration_since(before.at).as_secs_f64().max(1e-9),
        packets: outcomes.iter().map(|o| o.log.packets).sum(),
        bytes: outcomes.iter().map(|o| o.log.bytes).sum(),
        unstamped: outcomes.iter().map(|o| o.log.unstamped).sum(),
        end: Some(after),
    };
    report.publishers = args.cycles * args.concurrency;
    report.subscribers_requested = args.cycles * args.concurrency;
    window::fill(&mut report, &measured, Some(before), &streams, &outcomes);
    // Per-receiver figures make no sense once they have all left; the churn figures say it.
    report.bytes_per_subscriber = None;
    report.subscribers_per_core = None;
    report.server_rss_baseline_bytes = Some(before.rss_bytes);
    report.churn = Some(ChurnFigures {
        cycles: args.cycles,
        sessions: args.cycles * args.concurrency * 2,
        leaked_peers: after_counts.peers.saturating_sub(started_at.peers),
        leaked_tracks: after_counts.tracks.saturating_sub(started_at.tracks),
        leaked_rooms: after_counts.rooms.saturating_sub(started_at.rooms),
        rss_before_bytes: Some(before.rss_bytes),
        rss_after_bytes: Some(after.rss_bytes),
    });
    if settled != started_at {
        report.notes.push(format!("after the warm-up cycle the server had {settled:?}, before it {started_at:?}"));
    }
    Ok(report)
}

/// Waits until the live counts are back to `baseline` (or `timeout`); returns the last counts.
async fn wait_for_counts(api: &Api, baseline: Health, timeout: Duration) -> anyhow::Result<Health> {
    let deadline = Instant::now() + timeout;
    loop {
        let health = api.health().await?;
        let back = health.peers <= baseline.peers && health.tracks <= baseline.tracks && health.rooms <= baseline.rooms;
        if back || Instant::now() >= deadline {
            return Ok(health);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl Cycle<'_> {
    /// One cycle: `pairs` rooms with a publisher and a player each, `hold` of streaming, then
    /// everyone leaves (the rooms then close on their own). Returns the streams published and the
    /// players' outcomes.
    async fn run(
        &self,
        index: usize,
        pairs: usize,
        hold: Duration,
    ) -> anyhow::Result<(Vec<Arc<SendLog>>, Vec<Outcome>)> {
        let stop_publishers = CancellationToken::new();
        let stop_players = CancellationToken::new();
        let mut publishers = JoinSet::new();
        let mut players = JoinSet::new();
        let mut logs = Vec::new();
        let result: anyhow::Result<()> = async {
            for pair in 0..pairs {
                let room = format!("churn-{}-{index}-{pair}", self.run_id);
                // Rooms close by themselves a second after the last peer left: nobody deletes them, so
                // the peers' own leaving is what the counts check.
                self.api.create_room(&room, 1).await?;
                let (id, key, url) = self.api.rtmp_ingress(&room, "publisher").await?;
                self.ingress.lock().push(id);
                let host = host_of(&url)?;
                let (video, audio) = (Stream::new(2 * pair as u32), Stream::new(2 * pair as u32 + 1));
                logs.push(video.log.clone());
                logs.push(audio.log.clone());
                let token = self.api.token(&room, "viewer", false, true).await?;
                let publisher = Publisher {
                    host: host.clone(),
                    key,
                    pattern: self.pattern,
                    aac: self.aac.clone(),
                    clock: self.clock,
                    video,
                    audio: audio.clone(),
                };
                let connection = publisher.start().await?;
                let stop = stop_publishers.clone();
                publishers.spawn(async move { publisher.run(connection, stop).await });
                let player = Player {
                    host,
                    play_path: format!("{room}/publisher?token={token}"),
                    clock: self.clock,
                    aac: self.aac.clone(),
                    audio,
                    traffic: self.traffic.clone(),
                };
                let stop = stop_players.clone();
                players.spawn(async move { player.run(stop).await });
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            tokio::time::sleep(hold).await;
        }
        // Publishers drop their connections; players hear the end of the stream, then stop.
        stop_publishers.cancel();
        while publishers.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_players.cancel();
        let mut outcomes = Vec::new();
        while let Some(done) = players.join_next().await {
            outcomes.push(done.unwrap_or_default());
        }
        result.map(|()| (logs, outcomes))
    }
}
