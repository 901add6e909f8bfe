//! Measures the CPU time each transcoder of `default_adapters()` spends per second of audio:
//! ten seconds of a tone, pre-encoded in the source codec, pushed through frame by frame on
//! one thread, timed with the thread's CPU clock (not wall time: the machine may be busy).
//!
//! `cargo run --release -p junction-endpoint --example transcode_cpu`

use std::time::{Duration, Instant};

use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime, PeerId, TrackId, TrackInfo, TrackSource};
use junction_endpoint::codec::aac::AacEncoder;
use junction_endpoint::codec::g711::G711Encoder;
use junction_endpoint::codec::opus::{OpusEncoder, OpusMode};
use junction_endpoint::codec::transcode::build_transcoder;
use junction_endpoint::codec::{AudioEncoder, G711Law, default_adapters, tone};

const SECONDS: usize = 10;

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn source(codec: Codec) -> (Vec<MediaFrame>, CodecParams) {
    let (mut encoder, params): (Box<dyn AudioEncoder>, CodecParams) = match codec {
        Codec::Aac => {
            let encoder = AacEncoder::new(44_100, 2, 128_000).unwrap();
            let config = Some(encoder.audio_specific_config());
            (Box::new(encoder), CodecParams { clock_rate: 44_100, channels: 2, config, ..Default::default() })
        }
        Codec::Opus => (
            Box::new(OpusEncoder::new(2, OpusMode::Music, None).unwrap()),
            CodecParams { fmtp: Some("minptime=10;useinbandfec=1;stereo=1".into()), ..CodecParams::for_codec(codec) },
        ),
        _ => (Box::new(G711Encoder::new(G711Law::from_codec(codec).unwrap())), CodecParams::for_codec(codec)),
    };
    let (rate, channels, frame) = (encoder.sample_rate(), encoder.channels(), encoder.frame_samples());
    let pcm = tone::sine(440.0, 0.5, rate, channels, rate as usize * SECONDS);
    let now = Instant::now();
    let frames = pcm
        .chunks_exact(frame * usize::from(channels))
        .enumerate()
        .map(|(i, chunk)| {
            MediaFrame::audio(codec, MediaTime::new((i * frame) as u64, rate), now, encoder.encode(chunk).unwrap())
        })
        .collect();
    (frames, params)
}

fn main() {
    let adapters = default_adapters();
    println!("CPU time per second of audio (one thread), {SECONDS} s of a 440 Hz tone:");
    for (from, to) in adapters.routes() {
        let (frames, params) = source(from);
        let track = TrackInfo {
            id: TrackId::new("t").unwrap(),
            peer: PeerId::new("p").unwrap(),
            name: "audio".into(),
            kind: MediaKind::Audio,
            source: TrackSource::Unknown,
            codec: from,
            params: params.clone(),
            layers: Vec::new(),
            muted: false,
        };
        let (mut transcoder, out_params) = build_transcoder(from, to, &track).unwrap();
        let mut out = Vec::new();
        let started = thread_cpu_time();
        for frame in &frames {
            transcoder.transcode(frame, &mut out).unwrap();
        }
        let spent = thread_cpu_time() - started;
        let per_second = spent.as_secs_f64() * 1000.0 / SECONDS as f64;
        println!(
            "  {from:>4} ({} Hz x{}) -> {to:<4} ({} Hz x{}): {per_second:6.2} ms CPU per s of audio ({:.2}% of a core), {} frames out",
            params.clock_rate,
            params.channels,
            out_params.clock_rate,
            out_params.channels,
            per_second / 10.0,
            out.len()
        );
    }
}
