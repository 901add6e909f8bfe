//! Micro-benchmarks of the RTMP transport's per-message work, through its public API:
//! - `rtmp_ingest/video_tag`: an FLV video tag (a 10 KB H.264 access unit in AVCC) into an
//!   Annex B frame for the engine;
//! - `rtmp_ingest/audio_tag`: an FLV AAC tag into a frame;
//! - `rtmp_playback/video_frame`: an engine H.264 frame into the FLV tag a player receives.
//!
//! `cargo bench -p junction-rtmp --bench packet_path`

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use junction_core::h264::AvcConfig;
use junction_core::{Codec, CodecParams, MediaFrame, MediaTime};
use junction_rtmp::flv;
use junction_rtmp::ingest::{Ingest, IngestEvent};
use junction_rtmp::playback::Muxer;

const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1f, 0xd9, 0x00, 0x50, 0x05, 0xbb, 0x01, 0x10];
const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

/// A non-IDR slice of `len` bytes with no start-code emulation.
fn slice(len: usize) -> Vec<u8> {
    let mut nal = vec![0x41, 0x9a];
    nal.extend((0..len - 2).map(|i| (i as u8) | 1));
    nal
}

fn avcc(nals: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

fn ingest(c: &mut Criterion) {
    let record = AvcConfig::from_parameter_sets(SPS, PPS).unwrap().to_bytes();
    let mut group = c.benchmark_group("rtmp_ingest");
    group.throughput(Throughput::Elements(1));
    group.bench_function("video_tag", |b| {
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        ingest.on_video(0, &flv::avc_sequence_header(&record), Instant::now(), &mut out).unwrap();
        let tag = flv::avc_nalus(false, 0, &avcc(&[&slice(10_000)]));
        let mut timestamp = 0u32;
        b.iter(|| {
            out.clear();
            timestamp = timestamp.wrapping_add(33);
            ingest.on_video(timestamp, black_box(&tag), Instant::now(), &mut out).unwrap();
            assert!(matches!(out.first(), Some(IngestEvent::Frame(_))));
        });
    });
    group.bench_function("audio_tag", |b| {
        let mut ingest = Ingest::default();
        let mut out = Vec::new();
        ingest.on_audio(0, &flv::aac_sequence_header(&[0x12, 0x10]), Instant::now(), &mut out).unwrap();
        let tag = flv::aac_raw(&[0x21; 370]);
        let mut timestamp = 0u32;
        b.iter(|| {
            out.clear();
            timestamp = timestamp.wrapping_add(23);
            ingest.on_audio(timestamp, black_box(&tag), Instant::now(), &mut out).unwrap();
        });
    });
    group.finish();
}

fn playback(c: &mut Criterion) {
    let record = AvcConfig::from_parameter_sets(SPS, PPS).unwrap().to_bytes();
    let params = CodecParams { config: Some(record), ..CodecParams::for_codec(Codec::H264) };
    let mut group = c.benchmark_group("rtmp_playback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("video_frame", |b| {
        let mut muxer = Muxer::default();
        muxer.set_video(&params);
        let mut annexb = BytesMut::new();
        for nal in [SPS, PPS] {
            annexb.put_slice(&[0, 0, 0, 1]);
            annexb.put_slice(nal);
        }
        annexb.put_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x81]);
        let start = Instant::now();
        let mut tags = Vec::new();
        muxer.push(&MediaFrame::video(Codec::H264, MediaTime::new(0, 90_000), true, start, annexb.freeze()), &mut tags);
        let mut delta = BytesMut::from(&[0, 0, 0, 1][..]);
        delta.put_slice(&slice(10_000));
        let delta = delta.freeze();
        let mut seq = 1u64;
        b.iter(|| {
            tags.clear();
            let frame = MediaFrame::video(Codec::H264, MediaTime::new(seq * 3000, 90_000), false, start, delta.clone());
            seq += 1;
            muxer.push(black_box(&frame), &mut tags);
            assert_eq!(tags.len(), 1);
        });
    });
    group.finish();
}

criterion_group!(benches, ingest, playback);
criterion_main!(benches);
