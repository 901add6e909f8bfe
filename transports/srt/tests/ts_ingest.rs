//! The transport stream path on an ffmpeg-made file (`tests/data/h264_aac.ts`: one second of
//! 160x120 H.264 High with B-frames at 30 fps, GOP 15, and a 660 Hz AAC-LC sine at 44.1 kHz):
//! fed in pieces that do not line up with TS packets, with garbage between them, it comes out
//! as an H.264 and an AAC track whose frames carry the encoder's times.

use std::time::Instant;

use junction_core::h264::{self, AvcConfig};
use junction_core::{Codec, MediaFrame, MediaKind};
use junction_srt::ingest::{IngestEvent, TsIngest};
use junction_srt::ts::{Elementary, Pes, TsDemuxer};

const FILE: &[u8] = include_bytes!("data/h264_aac.ts");

fn demux(pieces: &[&[u8]]) -> (Vec<Pes>, u64) {
    let mut demuxer = TsDemuxer::default();
    let mut out = Vec::new();
    for piece in pieces {
        demuxer.push(piece);
        while let Some(pes) = demuxer.next_pes() {
            out.push(pes);
        }
    }
    assert!(demuxer.take_skipped().is_empty(), "both streams are taken");
    (out, demuxer.resynced_bytes)
}

fn ingest(pes: &[Pes]) -> Vec<IngestEvent> {
    let mut ingest = TsIngest::default();
    let mut events = Vec::new();
    for pes in pes {
        ingest.on_pes(pes, Instant::now(), &mut events).expect("a clean stream ingests");
    }
    assert!(ingest.has_media(MediaKind::Video) && ingest.has_media(MediaKind::Audio));
    events
}

fn frames(events: &[IngestEvent], codec: Codec) -> Vec<&MediaFrame> {
    events
        .iter()
        .filter_map(|e| if let IngestEvent::Frame(f) = e { Some(f) } else { None })
        .filter(|f| f.codec == codec)
        .collect()
}

#[test]
fn misaligned_pieces_and_garbage_demux_to_the_same_pes_packets() {
    let (whole, resynced) = demux(&[FILE]);
    assert_eq!(resynced, 0);
    let video = whole.iter().filter(|p| p.stream == Elementary::H264).count();
    let audio = whole.iter().filter(|p| p.stream == Elementary::Aac).count();
    // The last video PES has no length: it ends only when another starts.
    assert_eq!(video, 29, "{video} video PES");
    // ffmpeg packs many AAC frames into one PES; they leave in parts as TS packets complete
    // them, the first part of each PES stamped.
    assert!(audio >= 20, "{audio} audio parts");
    assert!(whole.iter().filter(|p| p.stream == Elementary::H264).all(|p| p.pts.is_some()), "video is stamped");
    assert!(whole.iter().filter(|p| p.stream == Elementary::Aac && p.pts.is_some()).count() >= 2);
    assert!(whole.iter().any(|p| p.dts.is_some()), "B-frames give decode times");

    let pieces: Vec<&[u8]> = FILE.chunks(1000).collect();
    assert_eq!(demux(&pieces).0, whole, "1000-byte pieces (SRT payloads need not be whole TS packets)");

    // Garbage before the stream and between two pieces is skipped.
    let garbage = [0x12u8; 300];
    let (head, tail) = FILE.split_at(188 * 40);
    let (with_garbage, resynced) = demux(&[&garbage, head, &garbage, tail]);
    assert_eq!(resynced, 600);
    assert_eq!(with_garbage, whole);
}

#[test]
fn the_stream_becomes_an_h264_and_an_aac_track_with_the_encoder_s_times() {
    let (pes, _) = demux(&[FILE]);
    let events = ingest(&pes);
    let tracks: Vec<_> =
        events.iter().filter_map(|e| if let IngestEvent::Track(t) = e { Some(t) } else { None }).collect();
    assert_eq!(tracks.len(), 2, "one track each, announced once");
    let video = tracks.iter().find(|t| t.codec == Codec::H264).expect("video track");
    let config = AvcConfig::parse(video.params.config.as_ref().unwrap()).unwrap();
    assert_eq!(config.profile_level_id()[..2].to_owned(), "64", "High profile");
    assert_eq!(
        video.params.fmtp.as_deref(),
        Some(format!("profile-level-id={};packetization-mode=1", config.profile_level_id()).as_str())
    );
    let audio = tracks.iter().find(|t| t.codec == Codec::Aac).expect("audio track");
    assert_eq!((audio.params.clock_rate, audio.params.channels), (44_100, 1));
    assert_eq!(audio.params.config.as_deref(), Some(&[0x12, 0x08][..]), "AAC-LC, 44.1 kHz, mono");

    let video = frames(&events, Codec::H264);
    assert_eq!(video.len(), 29);
    assert!(video[0].keyframe && video.iter().filter(|f| f.keyframe).count() == 2, "GOP 15: IDRs at 0 and 15");
    for frame in &video {
        let types: Vec<u8> = h264::annexb_nals(&frame.payload).map(h264::nal_type).collect();
        assert!(!types.contains(&9), "no access-unit delimiters: {types:?}");
        if frame.keyframe {
            assert!(types.starts_with(&[7, 8]), "SPS and PPS lead an IDR: {types:?}");
        }
    }
    // Presentation times: distinct steps of 3000 ticks (1/30 s) from the first, a second of
    // headroom in; B-frames arrive out of order (the frame still held is the one missing).
    let mut times: Vec<u64> = video.iter().map(|f| f.time.ticks).collect();
    assert!(times.windows(2).any(|w| w[1] < w[0]), "B-frames in decode order");
    times.sort_unstable();
    assert_eq!(times[0], 90_000);
    assert!(times.windows(2).all(|w| w[1] > w[0] && (w[1] - w[0]) % 3000 == 0), "{times:?}");
    assert!(*times.last().unwrap() <= 90_000 + 29 * 3000, "{times:?}");

    let audio = frames(&events, Codec::Aac);
    // Every frame, the last PES's included: audio does not wait for the next PES to start.
    assert!(audio.len() >= 44, "{} AAC frames", audio.len());
    let ticks: Vec<u64> = audio.iter().map(|f| f.time.ticks).collect();
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 1024), "sample-exact audio times: {ticks:?}");
    // Both start within a frame of each other on the shared timeline.
    let first_video = times[0] as f64 / 90_000.0;
    let first_audio = ticks[0] as f64 / 44_100.0;
    assert!((first_video - first_audio).abs() < 0.1, "video {first_video} s, audio {first_audio} s");
}

#[test]
fn truncated_and_corrupted_streams_lose_frames_not_the_stream() {
    let (pes, _) = demux(&[FILE]);
    let mut ingest = TsIngest::default();
    let mut events = Vec::new();
    for (i, pes) in pes.iter().enumerate() {
        let mut damaged = pes.clone();
        if i % 3 == 1 {
            damaged.data = damaged.data.slice(..damaged.data.len() / 2);
        }
        let _ = ingest.on_pes(&damaged, Instant::now(), &mut events);
    }
    assert!(ingest.has_media(MediaKind::Video) && ingest.has_media(MediaKind::Audio));
    assert!(frames(&events, Codec::H264).len() >= 20);
}
