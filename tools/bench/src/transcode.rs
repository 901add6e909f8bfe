//! `junction bench transcode`: what one video transcoder costs — the CPU time the server's
//! transcoder (junction-video's, the one the engine runs for a viewer that cannot take a track's
//! codec) spends per frame of a real 720p/30 stream, and so the share of a core one transcoded
//! stream takes. Runs in this process, on the thread's own CPU clock, like `floor`: the input is
//! encoded first (libvpx or libx264, a moving picture with sensor-like noise) and only the
//! transcoding is timed. With `--grid N`, what a room output's `grid` layout costs instead: N
//! such streams (each its own moving picture) decoded and composed into one 1280x720 picture,
//! encoded as H.264 (junction-video's grid), timed per composed picture.

use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use ffmpeg_next as ff;
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime, PeerId, TrackId, TrackInfo, TrackSource};
use junction_engine::adapt::AdapterRegistry;
use junction_video::codec::{Encoder, EncoderSettings, bitrate_for};
use junction_video::grid::{Fed, Grid, GridSettings};
use junction_video::{VideoConfig, register_adapters};

use super::VideoSize;
use super::floor::thread_cpu_time;
use super::report::{Report, TranscodeFigures};

/// A codec the transcoder can read here and this tool can produce input in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceCodec {
    Vp8,
    H264,
}

#[derive(Debug, Clone, Args)]
pub struct TranscodeArgs {
    /// The publisher's codec.
    #[arg(long, value_enum, default_value = "vp8")]
    pub from: SourceCodec,
    #[arg(long, value_enum, default_value = "720p")]
    pub video: VideoSize,
    /// Seconds of 30 frames/s video to transcode.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Compose this many sources into a 1280x720 grid instead of transcoding one.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub grid: Option<u16>,
}

const FPS: u32 = 30;

pub async fn run(args: TranscodeArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let grid = args.grid;
    let figures = tokio::task::spawn_blocking(move || match args.grid {
        Some(sources) => measure_grid(&args, usize::from(sources)),
        None => measure(&args),
    })
    .await??;
    let mut report = Report::new("transcode", "in-process");
    report.duration_s = started.elapsed().as_secs_f64();
    report.settings = serde_json::json!({
        "from": figures.from, "to": figures.to, "width": figures.width, "height": figures.height, "fps": FPS,
        "grid_sources": grid,
    });
    report.transcode = Some(figures);
    Ok(report)
}

fn measure(args: &TranscodeArgs) -> anyhow::Result<TranscodeFigures> {
    let (from, to) = match args.from {
        SourceCodec::Vp8 => (Codec::Vp8, Codec::H264),
        SourceCodec::H264 => (Codec::H264, Codec::Vp8),
    };
    let (width, height, _) = args.video.format();
    let frames = source(from, u32::from(width), u32::from(height), args.seconds.max(1) * FPS, 0)?;

    let mut registry = AdapterRegistry::default();
    register_adapters(&mut registry, VideoConfig { max_transcodes: 1, ..VideoConfig::default() });
    let (_, factory) = registry.route(from, &[to]).with_context(|| format!("no {from}->{to} transcoder here"))?;
    let track = TrackInfo {
        id: TrackId::generate(),
        peer: PeerId::new("bench")?,
        name: "camera".into(),
        kind: MediaKind::Video,
        source: TrackSource::Camera,
        codec: from,
        params: CodecParams {
            width: Some(u32::from(width)),
            height: Some(u32::from(height)),
            ..CodecParams::for_codec(from)
        },
        layers: Vec::new(),
        muted: false,
    };
    let (mut transcoder, _) = factory(&track).map_err(|err| anyhow::anyhow!("{err}"))?;
    let mut out = Vec::new();
    let mut per_frame = Vec::with_capacity(frames.len());
    let mut output_bytes = 0usize;
    for frame in &frames {
        let before = thread_cpu_time();
        transcoder.transcode(frame, &mut out).map_err(|err| anyhow::anyhow!("{err}"))?;
        per_frame.push((thread_cpu_time() - before).as_secs_f64() * 1e6);
        output_bytes += out.drain(..).map(|f| f.payload.len()).sum::<usize>();
    }
    let input_bytes = frames.iter().map(|f| f.payload.len()).sum();
    Ok(figures((from.as_str(), to.as_str()), (width, height), per_frame, input_bytes, output_bytes))
}

/// A grid of `sources` streams in `args.from`, composed at 1280x720 and encoded as H.264.
fn measure_grid(args: &TranscodeArgs, sources: usize) -> anyhow::Result<TranscodeFigures> {
    let from = match args.from {
        SourceCodec::Vp8 => Codec::Vp8,
        SourceCodec::H264 => Codec::H264,
    };
    let (width, height, _) = args.video.format();
    let count = args.seconds.max(1) * FPS;
    let streams = (0..sources)
        .map(|phase| source(from, u32::from(width), u32::from(height), count, phase as u32))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let settings = GridSettings { width: 1280, height: 720, fps: FPS, keyframe_interval: 2 * FPS };
    let mut grid = Grid::new(settings).context("the grid's encoder")?;
    for key in 0..sources {
        grid.add(key, from).context("a grid source")?;
    }
    let mut per_picture = Vec::with_capacity(count as usize);
    let mut output_bytes = 0usize;
    for n in 0..count as usize {
        let before = thread_cpu_time();
        for (key, stream) in streams.iter().enumerate() {
            let frame = &stream[n];
            if grid.feed(&key, &frame.payload, frame.keyframe) != Fed::Decoded {
                bail!("source {key} did not decode frame {n}");
            }
        }
        let packet = grid.compose(false).context("composing")?;
        per_picture.push((thread_cpu_time() - before).as_secs_f64() * 1e6);
        output_bytes += packet.map_or(0, |p| p.payload.len());
    }
    let input_bytes = streams.iter().flatten().map(|f| f.payload.len()).sum();
    Ok(figures((from.as_str(), "h264 grid"), (1280, 720), per_picture, input_bytes, output_bytes))
}

/// The figures of a run: `per_frame` µs of CPU per output picture at 30 frames/s.
fn figures(
    (from, to): (&'static str, &'static str),
    (width, height): (u16, u16),
    mut per_frame: Vec<f64>,
    input_bytes: usize,
    output_bytes: usize,
) -> TranscodeFigures {
    let total_us: f64 = per_frame.iter().sum();
    per_frame.sort_by(f64::total_cmp);
    let mean_us = total_us / per_frame.len().max(1) as f64;
    let seconds = per_frame.len() as f64 / f64::from(FPS);
    TranscodeFigures {
        from,
        to,
        width,
        height,
        frames: per_frame.len(),
        mean_us_per_frame: mean_us,
        p50_us_per_frame: per_frame[per_frame.len() / 2],
        p99_us_per_frame: per_frame[per_frame.len() * 99 / 100],
        core_percent_at_30fps: mean_us * f64::from(FPS) / 1e4,
        input_kbps: input_bytes as f64 * 8.0 / seconds / 1000.0,
        output_kbps: output_bytes as f64 * 8.0 / seconds / 1000.0,
    }
}

/// `count` frames of a camera-like picture (a moving gradient and bar, with a little noise that
/// changes every frame, as a sensor's does) encoded in `codec`, keyframe every 2 s; `phase`
/// moves the picture on, so that streams of different phases differ.
fn source(codec: Codec, width: u32, height: u32, count: u32, phase: u32) -> anyhow::Result<Vec<MediaFrame>> {
    let settings = EncoderSettings {
        width,
        height,
        bitrate_bps: bitrate_for(width, height),
        fps: FPS,
        keyframe_interval: 2 * FPS,
    };
    let mut encoder = Encoder::new(codec, settings).with_context(|| format!("no {codec} encoder for the input"))?;
    let mut packets = Vec::new();
    let mut noise = 0x2545_f491_u32 ^ phase;
    for index in 0..count {
        // The picture's moment: streams of other phases are further on.
        let n = index + phase * 17;
        let mut picture = ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height);
        let stride = picture.stride(0);
        let bar = (n * 12) % width;
        for (i, px) in picture.data_mut(0).iter_mut().enumerate() {
            let (x, y) = ((i % stride) as u32, (i / stride) as u32);
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let base = if x.abs_diff(bar) < 40 { 220 } else { 40 + (x + y + n * 2) % 160 };
            *px = (base + (noise & 7)) as u8;
        }
        let (w2, h2) = (width / 2, height / 2);
        for plane in 1..3 {
            let stride = picture.stride(plane);
            for (i, px) in picture.data_mut(plane).iter_mut().enumerate() {
                let (x, y) = ((i % stride) as u32, (i / stride) as u32);
                *px = if x < w2 && y < h2 { (96 + (x + n) % 64) as u8 } else { 128 };
            }
        }
        encoder.encode(&mut picture, i64::from(index), index.is_multiple_of(2 * FPS), &mut packets)?;
    }
    if packets.len() != count as usize {
        bail!("the {codec} encoder gave {} packets for {count} pictures", packets.len());
    }
    let arrival = Instant::now();
    Ok(packets
        .into_iter()
        .map(|p| {
            let time = MediaTime::new(p.sequence as u64 * u64::from(90_000 / FPS), 90_000);
            MediaFrame::video(codec, time, p.keyframe, arrival, Bytes::clone(&p.payload))
        })
        .collect())
}
