//! The codec toolkit against a third party: ffmpeg (Debian's 5.1) encodes what we decode and
//! decodes what we encode.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bytes::Bytes;
use junction_audio::codec::aac::{AacConfig, parse_adts};
use junction_audio::codec::g711::{self, G711Law};
use junction_audio::codec::opus::{OpusDecoder, OpusEncoder, OpusMode};
use junction_audio::codec::transcode::build_transcoder;
use junction_audio::codec::{AudioDecoder, AudioEncoder, tone};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime, PeerId, TrackId, TrackInfo, TrackSource};

/// Runs ffmpeg with `args` (quietly, bounded by a timeout); returns its stdout.
fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let output = Command::new("timeout")
        .args(["60", "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running ffmpeg (scripts/test installs it)");
    assert!(output.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

fn s16le(bytes: &[u8]) -> Vec<i16> {
    bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect()
}

fn track(codec: Codec, params: CodecParams) -> TrackInfo {
    TrackInfo {
        id: TrackId::new("t").unwrap(),
        peer: PeerId::new("p").unwrap(),
        name: "audio".into(),
        kind: MediaKind::Audio,
        source: TrackSource::Unknown,
        codec,
        params,
        layers: Vec::new(),
        muted: false,
    }
}

#[test]
fn ffmpeg_aac_through_aac_to_opus_keeps_its_660_hz_tone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sine.aac");
    let path = file.to_str().unwrap();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=660:sample_rate=44100",
        "-t",
        "2",
        "-c:a",
        "aac",
        "-f",
        "adts",
        path,
    ]);
    let adts = std::fs::read(&file).unwrap();
    let frames = parse_adts(&adts).unwrap();
    assert!(frames.len() > 80, "{} ADTS frames", frames.len());
    let config = frames[0].0;
    assert_eq!(config, AacConfig::lc(44_100, 1));

    let params =
        CodecParams { clock_rate: 44_100, channels: 1, config: Some(config.to_asc()), ..CodecParams::default() };
    let (mut transcoder, out_params) = build_transcoder(Codec::Aac, Codec::Opus, &track(Codec::Aac, params)).unwrap();
    let now = Instant::now();
    let mut opus = Vec::new();
    for (i, (_, payload)) in frames.iter().enumerate() {
        let frame = MediaFrame::audio(
            Codec::Aac,
            MediaTime::new(i as u64 * 1024, 44_100),
            now,
            Bytes::copy_from_slice(payload),
        );
        transcoder.transcode(&frame, &mut opus).unwrap();
    }
    assert_eq!(out_params.clock_rate, 48_000);
    assert!(opus.windows(2).all(|w| w[1].time.ticks - w[0].time.ticks == 960));

    let mut decoder = OpusDecoder::new(1).unwrap();
    let mut pcm = Vec::new();
    for frame in &opus {
        decoder.decode(&frame.payload, &mut pcm).unwrap();
    }
    let found = tone::dominant_frequency(&pcm, 1, 48_000).unwrap();
    assert!((found - 660.0).abs() < 2.0, "heard {found} Hz");
}

#[test]
fn ffmpeg_decodes_our_opus_to_aac_output_as_the_same_tone() {
    // A browser's mono Opus at 660 Hz, transcoded to AAC and written as ADTS.
    let mut encoder = OpusEncoder::new(1, OpusMode::Voice, None).unwrap();
    let pcm = tone::sine(660.0, 0.5, 48_000, 1, 48_000 * 2);
    let now = Instant::now();
    let params = CodecParams { fmtp: Some("minptime=10;useinbandfec=1".into()), ..CodecParams::for_codec(Codec::Opus) };
    let (mut transcoder, out_params) = build_transcoder(Codec::Opus, Codec::Aac, &track(Codec::Opus, params)).unwrap();
    let mut aac = Vec::new();
    for (i, chunk) in pcm.chunks_exact(960).enumerate() {
        let frame =
            MediaFrame::audio(Codec::Opus, MediaTime::new(i as u64 * 960, 48_000), now, encoder.encode(chunk).unwrap());
        transcoder.transcode(&frame, &mut aac).unwrap();
    }
    let config = AacConfig::parse(out_params.config.as_ref().unwrap()).unwrap();
    assert_eq!(config, AacConfig::lc(48_000, 1));
    let mut adts = Vec::new();
    for frame in &aac {
        adts.extend_from_slice(&config.adts_header(frame.payload.len()));
        adts.extend_from_slice(&frame.payload);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ours.aac");
    std::fs::write(&file, &adts).unwrap();

    let decoded = s16le(&ffmpeg(&["-i", file.to_str().unwrap(), "-f", "s16le", "-acodec", "pcm_s16le", "-"]));
    // ffmpeg decoded every frame (1024 samples each) ...
    assert_eq!(decoded.len(), aac.len() * 1024);
    // ... into the tone, at its level.
    let found = tone::dominant_frequency_i16(&decoded, 1, 48_000).unwrap();
    assert!((found - 660.0).abs() < 2.0, "ffmpeg heard {found} Hz");
    let tail: Vec<f32> = decoded[decoded.len() / 2..].iter().map(|s| f32::from(*s) / 32768.0).collect();
    assert!((tone::rms(&tail) - 0.5 / 2f64.sqrt()).abs() < 0.05, "level {}", tone::rms(&tail));
}

/// Every G.711 code decodes as ffmpeg's pcm_mulaw/pcm_alaw decode it, and every 16-bit value
/// encodes to the same code as ffmpeg's but at decision thresholds.
#[test]
fn g711_agrees_with_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let every_sample: Vec<u8> = (i16::MIN..=i16::MAX).flat_map(|s| s.to_le_bytes()).collect();
    let linear = dir.path().join("all.s16");
    std::fs::write(&linear, &every_sample).unwrap();
    let every_code: Vec<u8> = (0..=255).collect();

    for (law, format) in [(G711Law::MuLaw, "mulaw"), (G711Law::ALaw, "alaw")] {
        let encoded = ffmpeg(&["-f", "s16le", "-ar", "8000", "-ac", "1", "-i", path(&linear), "-f", format, "-"]);
        assert_eq!(encoded.len(), 65_536);
        let mut mismatches = Vec::new();
        for (x, theirs) in (i16::MIN..=i16::MAX).zip(&encoded) {
            let ours = law.encode(x);
            if ours != *theirs {
                mismatches.push((x, law.decode(ours), law.decode(*theirs)));
            }
        }
        // ffmpeg truncates to G.711's 13/14-bit input and picks the nearest level; we apply the
        // recommendation's decision intervals on all 16 bits (at segment ends, where the step
        // doubles, those are not halfway between levels). So the two may pick neighbouring
        // levels for a few inputs near a threshold, and nothing else.
        let mut levels: Vec<i16> = (0..=255).map(|c| law.decode(c)).collect();
        levels.sort_unstable();
        levels.dedup();
        let rank = |v: i16| levels.binary_search(&v).unwrap() as i32;
        eprintln!("{format}: {} of 65536 inputs encode to a neighbouring level of ffmpeg's", mismatches.len());
        assert!(mismatches.len() < 65_536 / 50, "{format}: {} differ", mismatches.len());
        for (x, ours, theirs) in mismatches {
            assert_eq!((rank(ours) - rank(theirs)).abs(), 1, "{format}: {x} -> {ours}, ffmpeg {theirs}");
            let (low, high) = (ours.min(theirs), ours.max(theirs));
            assert!((low..=high).contains(&x), "{format}: {x} is not between {low} and {high}");
        }

        let codes = dir.path().join(format);
        std::fs::write(&codes, &every_code).unwrap();
        let decoded =
            s16le(&ffmpeg(&["-f", format, "-ar", "8000", "-ac", "1", "-i", path(&codes), "-f", "s16le", "-"]));
        let ours: Vec<i16> = every_code.iter().map(|c| law.decode(*c)).collect();
        assert_eq!(decoded, ours, "{format} decoding");
    }
    assert_eq!(g711::RATE, 8_000);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Our Opus->PCMU output, read by ffmpeg as raw µ-law, carries the tone.
#[test]
fn ffmpeg_decodes_our_opus_to_pcmu_output() {
    let mut encoder = OpusEncoder::new(2, OpusMode::Music, None).unwrap();
    let pcm = tone::sine(660.0, 0.5, 48_000, 2, 48_000);
    let now = Instant::now();
    let (mut transcoder, params) =
        build_transcoder(Codec::Opus, Codec::Pcmu, &track(Codec::Opus, CodecParams::for_codec(Codec::Opus))).unwrap();
    assert_eq!((params.clock_rate, params.channels), (8_000, 1));
    let mut out = Vec::new();
    for (i, chunk) in pcm.chunks_exact(960 * 2).enumerate() {
        let frame =
            MediaFrame::audio(Codec::Opus, MediaTime::new(i as u64 * 960, 48_000), now, encoder.encode(chunk).unwrap());
        transcoder.transcode(&frame, &mut out).unwrap();
    }
    let raw: Vec<u8> = out.iter().flat_map(|f| f.payload.iter().copied()).collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.ulaw");
    std::fs::write(&file, &raw).unwrap();
    let decoded = s16le(&ffmpeg(&["-f", "mulaw", "-ar", "8000", "-ac", "1", "-i", path(&file), "-f", "s16le", "-"]));
    assert_eq!(decoded.len(), raw.len());
    let found = tone::dominant_frequency_i16(&decoded, 1, 8_000).unwrap();
    assert!((found - 660.0).abs() < 2.0, "ffmpeg heard {found} Hz");
}
