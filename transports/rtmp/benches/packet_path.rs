//! Micro-benchmarks of the RTMP transport's per-message work, through its public API:
//! - `rtmp_ingest/video_tag`: an FLV video tag (a 10 KB H.264 access unit in AVCC) into an
//!   Annex B frame for the engine;
//! - `rtmp_ingest/audio_tag`: an FLV AAC tag into a frame;
//! - `rtmp_playback/video_frame`: an engine H.264 frame into the FLV tag a player receives;
//! - `rtmp_guard/video_message`, `rtmp_guard/audio_message`: the message guard's work on one
//!   RTMP video (10 KB, in 4096-byte chunks) or audio (370 B) message — the extra cost every
//!   message pays before `rml_rtmp`'s session reads it;
//! - `rtmp_session/video_message`: the same video message through the whole session (guard,
//!   `rml_rtmp`'s chunk reader and session, FLV to frame), for scale;
//! - `rtmp_guard/metadata_message`: an `@setDataFrame` `onMetaData` command as ffmpeg sends it,
//!   scanned.
//!
//! `cargo bench -p junction-rtmp --bench packet_path`

use std::hint::black_box;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use junction_core::h264::AvcConfig;
use junction_core::{Codec, CodecParams, MediaFrame, MediaTime};
use junction_rtmp::flv;
use junction_rtmp::guard::{AmfLimits, MessageGuard};
use junction_rtmp::ingest::{Ingest, IngestEvent};
use junction_rtmp::playback::Muxer;
use junction_rtmp::session::{Output, Session, SessionConfig, SessionEvent};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{ClientSession, ClientSessionConfig, ClientSessionResult, PublishRequestType};
use rml_rtmp::time::RtmpTimestamp;

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

/// A client's chunk serializer after it announced 4096-byte chunks (as OBS and ffmpeg do), and
/// the bytes of that announcement.
fn client_serializer() -> (ChunkSerializer, Vec<u8>) {
    let mut serializer = ChunkSerializer::new();
    let announce = serializer.set_max_chunk_size(4096, RtmpTimestamp::new(0)).unwrap().bytes;
    (serializer, announce)
}

fn message(serializer: &mut ChunkSerializer, type_id: u8, timestamp: u32, data: Bytes) -> Vec<u8> {
    let payload = MessagePayload { timestamp: RtmpTimestamp::new(timestamp), type_id, message_stream_id: 1, data };
    serializer.serialize(&payload, false, false).unwrap().bytes
}

fn guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtmp_guard");
    group.throughput(Throughput::Elements(1));
    for (name, type_id, tag) in [
        ("video_message", 9u8, flv::avc_nalus(false, 0, &avcc(&[&slice(10_000)]))),
        ("audio_message", 8, flv::aac_raw(&[0x21; 370])),
    ] {
        group.bench_function(name, |b| {
            let (mut serializer, announce) = client_serializer();
            let mut guard = MessageGuard::new(AmfLimits::default());
            guard.check(&announce).unwrap();
            let mut timestamp = 0u32;
            // Serialized ahead, so only the guard is timed: a batch of messages per iteration.
            let batch: Vec<Vec<u8>> = (0..64)
                .map(|_| {
                    timestamp += 33;
                    message(&mut serializer, type_id, timestamp, tag.clone())
                })
                .collect();
            let mut next = 0;
            b.iter(|| {
                guard.check(black_box(&batch[next % batch.len()])).unwrap();
                next += 1;
            });
        });
    }
    group.bench_function("metadata_message", |b| {
        use rml_rtmp::rml_amf0::Amf0Value;
        let mut metadata = std::collections::HashMap::new();
        for (key, value) in [("width", 1280.0), ("height", 720.0), ("framerate", 30.0), ("videodatarate", 2500.0)] {
            metadata.insert(key.to_owned(), Amf0Value::Number(value));
        }
        metadata.insert("encoder".to_owned(), Amf0Value::Utf8String("Lavf59.27.100".into()));
        let values = vec![
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object(metadata),
        ];
        let data = Bytes::from(rml_rtmp::rml_amf0::serialize(&values).unwrap());
        let (mut serializer, announce) = client_serializer();
        let mut guard = MessageGuard::new(AmfLimits::default());
        guard.check(&announce).unwrap();
        let batch: Vec<Vec<u8>> = (0..64).map(|i| message(&mut serializer, 18, i, data.clone())).collect();
        let mut next = 0;
        b.iter(|| {
            guard.check(black_box(&batch[next % batch.len()])).unwrap();
            next += 1;
        });
    });
    group.finish();
}

/// A server session with a publisher connected and accepted, and the client's session.
fn publishing_session() -> (Session, ClientSession) {
    let now = Instant::now();
    let mut server = Session::new(now, SessionConfig::default());
    let mut handshake = Handshake::new(PeerType::Client);
    let mut to_server = handshake.generate_outbound_p0_and_p1().unwrap();
    let mut to_client = Vec::new();
    loop {
        server.handle_input(now, &to_server);
        while let Some(output) = server.poll_output() {
            if let Output::Transmit(bytes) = output {
                to_client.extend(bytes);
            }
        }
        match handshake.process_bytes(&std::mem::take(&mut to_client)).unwrap() {
            HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                server.handle_input(now, &response_bytes);
                break;
            }
        }
    }
    let (mut client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let exchange = |server: &mut Session, client: &mut ClientSession, results: Vec<ClientSessionResult>| {
        let mut pending = results;
        while !pending.is_empty() {
            for result in std::mem::take(&mut pending) {
                if let ClientSessionResult::OutboundResponse(packet) = result {
                    server.handle_input(now, &packet.bytes);
                }
            }
            while let Some(output) = server.poll_output() {
                match output {
                    Output::Transmit(bytes) => pending.extend(client.handle_input(&bytes).unwrap()),
                    Output::Event(SessionEvent::PublishRequested { request, .. }) => server.accept_publish(request),
                    Output::Event(_) => {}
                }
            }
        }
    };
    let connect = client.request_connection("live".to_owned()).unwrap();
    exchange(&mut server, &mut client, vec![connect]);
    let publish = client.request_publishing("sk_bench".to_owned(), PublishRequestType::Live).unwrap();
    exchange(&mut server, &mut client, vec![publish]);
    let record = AvcConfig::from_parameter_sets(SPS, PPS).unwrap().to_bytes();
    let header = client.publish_video_data(flv::avc_sequence_header(&record), RtmpTimestamp::new(0), false).unwrap();
    exchange(&mut server, &mut client, vec![header]);
    (server, client)
}

fn session(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtmp_session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("video_message", |b| {
        let (mut server, mut client) = publishing_session();
        let tag = flv::avc_nalus(false, 0, &avcc(&[&slice(10_000)]));
        let batch: Vec<Vec<u8>> = (1..=64u32)
            .map(|i| match client.publish_video_data(tag.clone(), RtmpTimestamp::new(i * 33), false).unwrap() {
                ClientSessionResult::OutboundResponse(packet) => packet.bytes,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut next = 0;
        let now = Instant::now();
        b.iter(|| {
            server.handle_input(now, black_box(&batch[next % batch.len()]));
            next += 1;
            while let Some(output) = server.poll_output() {
                assert!(!matches!(output, Output::Event(SessionEvent::Closed(_))), "{output:?}");
            }
        });
    });
    group.finish();
}

criterion_group!(benches, ingest, playback, guard, session);
criterion_main!(benches);
