//! Measures the CPU time each transcoder of `default_adapters()` spends per second of audio:
//! ten seconds of a tone, pre-encoded in the source codec, pushed through frame by frame on
//! one thread, timed with the thread's CPU clock (not wall time: the machine may be busy).
//!
//! Then AAC->Opus at several libopus complexities (`audio.opus_complexity`), on a chord with
//! noise rather than a tone, which gives the encoder's analysis something to do.
//!
//! Then the AAC->Opus route paced like a live publisher (one frame every 23.2 ms), timed with
//! the whole process's CPU clock: transcoded on the pacing thread itself, and as the engine runs
//! it — a variant on the transcoding runtime, fed through its subscription queue. The
//! difference is what running transcoders off the async workers costs (a wake-up per frame).
//!
//! `cargo run --release -p junction-audio --example transcode_cpu`

use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_audio::codec::aac::AacEncoder;
use junction_audio::codec::g711::G711Encoder;
use junction_audio::codec::opus::{OpusEncoder, OpusMode};
use junction_audio::codec::transcode::{build_transcoder, build_transcoder_with};
use junction_audio::codec::{AudioConfig, AudioEncoder, G711Law, default_adapters, tone};
use junction_core::{
    Codec, CodecParams, MediaFrame, MediaKind, MediaOut, MediaTime, PeerId, PublishRequest, RoomId, TrackId, TrackInfo,
    TrackSource, TransportKind,
};
use junction_engine::{Engine, EngineConfig, FrameTranscoder, JoinRequest, SystemClock};

const SECONDS: usize = 10;

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn process_cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// AAC->Opus through an engine variant (on the transcoding runtime), paced in real time;
/// returns process CPU per second of audio and the Opus frames the subscriber received.
fn through_a_variant(frames: &[MediaFrame], params: &CodecParams) -> (f64, usize) {
    let engine = Engine::with_parts(EngineConfig::default(), Arc::new(SystemClock), default_adapters());
    let room = RoomId::new("bench").unwrap();
    let publisher =
        engine.join(JoinRequest::new(room.clone(), PeerId::new("rtmp").unwrap(), TransportKind::Internal)).unwrap();
    let track =
        publisher.endpoint.rpc.publish(PublishRequest::new("audio", Codec::Aac).with_params(params.clone())).unwrap();
    let mut viewer = JoinRequest::new(room, PeerId::new("browser").unwrap(), TransportKind::Internal);
    viewer.accept_codecs = vec![Codec::Opus];
    let mut viewer = engine.join(viewer).unwrap().endpoint;
    let (started, cpu_started) = (Instant::now(), process_cpu_time());
    let mut received = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let mut frame = frame.clone();
        frame.arrival = Instant::now();
        track.send(frame).unwrap();
        viewer.media.drain_into(&mut received, usize::MAX);
        pace(started, i);
    }
    std::thread::sleep(Duration::from_millis(50));
    viewer.media.drain_into(&mut received, usize::MAX);
    let spent = process_cpu_time() - cpu_started;
    let opus =
        received.iter().filter(|m| matches!(m, MediaOut::Frame { frame, .. } if frame.codec == Codec::Opus)).count();
    (spent.as_secs_f64() * 1000.0 / SECONDS as f64, opus)
}

/// The track a transcoder is built for.
fn track_of(codec: Codec, params: &CodecParams) -> TrackInfo {
    TrackInfo {
        id: TrackId::new("t").unwrap(),
        peer: PeerId::new("p").unwrap(),
        name: "audio".into(),
        kind: MediaKind::Audio,
        source: TrackSource::Unknown,
        codec,
        params: params.clone(),
        layers: Vec::new(),
        muted: false,
    }
}

fn source(codec: Codec) -> (Vec<MediaFrame>, CodecParams) {
    source_of(codec, |rate, channels| tone::sine(440.0, 0.5, rate, channels, rate as usize * SECONDS))
}

/// Something closer to music than a tone for the encoder's analysis: a three-note chord with a
/// vibrato and noise 30 dB under it.
fn chord(rate: u32, channels: u8) -> Vec<f32> {
    let mut seed: u32 = 0x1234_5678;
    let mut noise = move || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
    };
    let samples = rate as usize * SECONDS;
    let mut pcm = Vec::with_capacity(samples * usize::from(channels));
    for n in 0..samples {
        let t = n as f32 / rate as f32;
        let vibrato = 1.0 + 0.01 * (2.0 * std::f32::consts::PI * 5.0 * t).sin();
        let note = |hz: f32| (2.0 * std::f32::consts::PI * hz * vibrato * t).sin();
        let value = 0.2 * (note(220.0) + note(277.2) + note(329.6)) + 0.02 * noise();
        pcm.extend(std::iter::repeat_n(value, usize::from(channels)));
    }
    pcm
}

fn source_of(codec: Codec, pcm: impl Fn(u32, u8) -> Vec<f32>) -> (Vec<MediaFrame>, CodecParams) {
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
    let pcm = pcm(rate, channels);
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
        let (transcoder, out_params) = build_transcoder(from, to, &track_of(from, &params)).unwrap();
        let (per_second, out) = hot_loop(transcoder, &frames);
        println!(
            "  {from:>4} ({} Hz x{}) -> {to:<4} ({} Hz x{}): {per_second:6.2} ms CPU per s of audio ({:.2}% of a core), {out} frames out",
            params.clock_rate,
            params.channels,
            out_params.clock_rate,
            out_params.channels,
            per_second / 10.0,
        );
    }

    let (frames, params) = source_of(Codec::Aac, chord);
    println!(
        "AAC (44100 Hz x2) -> Opus by libopus complexity (audio.opus_complexity), {SECONDS} s of a chord with noise:"
    );
    for opus_complexity in [10, 8, 7, 6, 5, 3, 0] {
        let config = AudioConfig { opus_complexity };
        let (transcoder, _) =
            build_transcoder_with(config, Codec::Aac, Codec::Opus, &track_of(Codec::Aac, &params)).unwrap();
        let (per_second, _) = hot_loop(transcoder, &frames);
        println!(
            "  complexity {opus_complexity:>2}: {per_second:6.2} ms CPU per s of audio ({:.2}% of a core)",
            per_second / 10.0
        );
    }

    let (frames, params) = source(Codec::Aac);
    println!("AAC (44100 Hz x2) -> Opus paced in real time (a frame every 23.2 ms), process CPU per s of audio:");
    let (per_second, opus) = paced_inline(&frames, &params);
    println!(
        "  on the pacing thread itself:               {per_second:6.2} ms ({:.2}% of a core), {opus} frames out",
        per_second / 10.0
    );
    let (per_second, opus) = through_a_variant(&frames, &params);
    println!(
        "  through an engine variant (transcoding runtime): {per_second:6.2} ms ({:.2}% of a core), {opus} frames out",
        per_second / 10.0
    );
}

/// Every frame through `transcoder` as fast as it goes: the thread's CPU milliseconds per second
/// of audio, and the frames out.
fn hot_loop(mut transcoder: Box<dyn FrameTranscoder>, frames: &[MediaFrame]) -> (f64, usize) {
    let mut out = Vec::new();
    let started = thread_cpu_time();
    for frame in frames {
        transcoder.transcode(frame, &mut out).unwrap();
    }
    ((thread_cpu_time() - started).as_secs_f64() * 1000.0 / SECONDS as f64, out.len())
}

/// Sleeps until frame `i`'s place in real time since `started`.
fn pace(started: Instant, i: usize) {
    let frame_time = Duration::from_secs_f64(1024.0 / 44_100.0);
    if let Some(wait) = (started + frame_time * (i as u32 + 1)).checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
}

/// AAC->Opus transcoded on the thread that paces the frames, as a runtime worker would.
fn paced_inline(frames: &[MediaFrame], params: &CodecParams) -> (f64, usize) {
    let (mut transcoder, _) = build_transcoder(Codec::Aac, Codec::Opus, &track_of(Codec::Aac, params)).unwrap();
    let (started, cpu_started) = (Instant::now(), process_cpu_time());
    let mut out = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        transcoder.transcode(frame, &mut out).unwrap();
        pace(started, i);
    }
    let spent = process_cpu_time() - cpu_started;
    (spent.as_secs_f64() * 1000.0 / SECONDS as f64, out.len())
}
