//! The session driven byte for byte by `rml_rtmp`'s own client, with a synthetic clock.

use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::h264::{AvcConfig, to_avcc};
use junction_core::{Codec, CodecParams, MediaFrame, MediaKind, MediaTime};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;

use super::*;
use crate::flv::{aac_raw, aac_sequence_header, avc_nalus, avc_sequence_header};
use crate::guard::AmfError;

const IDLE: Duration = Duration::from_secs(5);
const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9];
const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];

/// A server `Session` and an `rml_rtmp` client wired back to back.
struct Pipe {
    now: Instant,
    server: Session,
    client: ClientSession,
    /// Events the server raised, in order.
    events: Vec<SessionEvent>,
    client_events: Vec<ClientSessionEvent>,
}

impl Pipe {
    fn connect(app: &str) -> Pipe {
        Self::connect_with(app, SessionConfig { idle_timeout: IDLE, ..SessionConfig::default() })
    }

    fn connect_with(app: &str, config: SessionConfig) -> Pipe {
        let now = Instant::now();
        let mut server = Session::new(now, config);
        let mut handshake = Handshake::new(PeerType::Client);
        let mut to_server = handshake.generate_outbound_p0_and_p1().unwrap();
        let leftover;
        loop {
            server.handle_input(now, &to_server);
            let mut to_client = Vec::new();
            while let Some(Output::Transmit(bytes)) = server.poll_output() {
                to_client.extend(bytes);
            }
            match handshake.process_bytes(&to_client).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => to_server = response_bytes,
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    server.handle_input(now, &response_bytes);
                    leftover = remaining_bytes;
                    break;
                }
            }
        }
        let (client, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
        let mut pipe = Pipe { now, server, client, events: Vec::new(), client_events: Vec::new() };
        pipe.deliver_to_client(&leftover);
        let request = pipe.client.request_connection(app.to_owned()).unwrap();
        pipe.client_results(vec![request]);
        pipe
    }

    /// Moves bytes both ways until neither side has anything more to say.
    fn pump(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                Output::Transmit(bytes) => self.deliver_to_client(&bytes),
                Output::Event(event) => self.events.push(event),
            }
        }
    }

    fn deliver_to_client(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let results = self.client.handle_input(bytes).unwrap();
        self.client_results(results);
    }

    fn client_results(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.server.handle_input(self.now, &packet.bytes),
                ClientSessionResult::RaisedEvent(event) => self.client_events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        self.pump();
    }

    fn send(&mut self, result: ClientSessionResult) {
        self.client_results(vec![result]);
    }

    fn take_events(&mut self) -> Vec<SessionEvent> {
        std::mem::take(&mut self.events)
    }

    fn closed_with(&self) -> Option<&SessionError> {
        self.events.iter().find_map(|e| if let SessionEvent::Closed(err) = e { Some(err) } else { None })
    }

    fn status_codes(&self) -> Vec<String> {
        self.client_events
            .iter()
            .filter_map(|e| match e {
                ClientSessionEvent::UnhandleableOnStatusCode { code } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }
}

fn publishing_pipe(key: &str) -> Pipe {
    let mut pipe = Pipe::connect("live");
    assert!(pipe.client_events.contains(&ClientSessionEvent::ConnectionRequestAccepted));
    let request = pipe.client.request_publishing(key.to_owned(), PublishRequestType::Live).unwrap();
    pipe.send(request);
    let events = pipe.take_events();
    let Some(SessionEvent::PublishRequested { request, stream_key }) = events.first() else {
        panic!("no publish request: {events:?}");
    };
    assert_eq!(stream_key, key);
    pipe.server.accept_publish(*request);
    pipe.pump();
    assert!(pipe.client_events.contains(&ClientSessionEvent::PublishRequestAccepted), "{:?}", pipe.client_events);
    pipe
}

#[test]
fn a_publisher_becomes_tracks_and_frames() {
    let mut pipe = publishing_pipe("sk_test");
    let mut metadata = StreamMetadata::new();
    metadata.video_width = Some(640);
    metadata.video_height = Some(360);
    let packet = pipe.client.publish_metadata(&metadata).unwrap();
    pipe.send(packet);
    let record = AvcConfig::from_parameter_sets(SPS, PPS).unwrap().to_bytes();
    let header = pipe.client.publish_video_data(avc_sequence_header(&record), RtmpTimestamp::new(0), false).unwrap();
    pipe.send(header);
    let asc = aac_sequence_header(&[0x12, 0x10]);
    let header = pipe.client.publish_audio_data(asc, RtmpTimestamp::new(0), false).unwrap();
    pipe.send(header);
    let idr = avc_nalus(true, 40, &to_avcc([IDR]));
    let frame = pipe.client.publish_video_data(idr, RtmpTimestamp::new(1000), false).unwrap();
    pipe.send(frame);
    let audio = pipe.client.publish_audio_data(aac_raw(&[0x21, 0x00]), RtmpTimestamp::new(1000), false).unwrap();
    pipe.send(audio);

    let events = pipe.take_events();
    let tracks: Vec<&PublishRequest> =
        events.iter().filter_map(|e| if let SessionEvent::Track(r) = e { Some(r) } else { None }).collect();
    assert_eq!(tracks.len(), 2);
    assert_eq!((tracks[0].codec, tracks[0].params.width, tracks[0].params.height), (Codec::H264, Some(640), Some(360)));
    assert_eq!((tracks[1].codec, tracks[1].params.clock_rate), (Codec::Aac, 44100));
    let frames: Vec<&MediaFrame> =
        events.iter().filter_map(|e| if let SessionEvent::Frame(f) = e { Some(f) } else { None }).collect();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].time, MediaTime::new(1040 * 90, 90_000));
    assert!(frames[0].keyframe);
    assert_eq!(frames[1].time, MediaTime::new(44100, 44100));
    assert_eq!(frames[1].payload.as_ref(), &[0x21, 0x00]);
    assert!(pipe.closed_with().is_none());

    let stop = pipe.client.stop_publishing().unwrap();
    pipe.client_results(stop);
    assert!(pipe.take_events().iter().any(|e| matches!(e, SessionEvent::PublishStopped)));
}

#[test]
fn a_refused_key_gets_bad_name_and_the_session_ends() {
    let mut pipe = Pipe::connect("live");
    let request = pipe.client.request_publishing("sk_unknown".to_owned(), PublishRequestType::Live).unwrap();
    pipe.send(request);
    assert!(matches!(pipe.take_events().first(), Some(SessionEvent::PublishRequested { .. })));
    pipe.server.refuse(Status::bad_name("unknown stream key"));
    pipe.pump();
    assert_eq!(pipe.status_codes(), vec!["NetStream.Publish.BadName".to_owned()]);
    assert_eq!(
        pipe.closed_with(),
        Some(&SessionError::Refused { code: "NetStream.Publish.BadName", description: "unknown stream key".into() })
    );
    assert!(pipe.server.is_closed());
}

#[test]
fn unknown_applications_and_nested_keys_are_refused() {
    let pipe = Pipe::connect("vod");
    assert!(
        pipe.client_events.iter().any(|e| matches!(e, ClientSessionEvent::ConnectionRequestRejected { .. })),
        "{:?}",
        pipe.client_events
    );
    assert!(matches!(pipe.closed_with(), Some(SessionError::Refused { code: "NetConnection.Connect.Rejected", .. })));

    let mut pipe = Pipe::connect("live");
    let request = pipe.client.request_publishing("a/b".to_owned(), PublishRequestType::Live).unwrap();
    pipe.send(request);
    assert_eq!(pipe.status_codes(), vec!["NetStream.Publish.BadName".to_owned()]);
}

#[test]
fn an_unsupported_codec_ends_the_publication_with_a_reason() {
    let mut pipe = publishing_pipe("sk_hevc");
    let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]);
    let packet = pipe.client.publish_video_data(hevc, RtmpTimestamp::new(0), false).unwrap();
    pipe.send(packet);
    let Some(SessionError::Ingest(err)) = pipe.closed_with() else { panic!("{:?}", pipe.events) };
    assert!(err.to_string().contains("HEVC"), "{err}");
    assert_eq!(pipe.status_codes(), vec!["NetStream.Failed".to_owned()]);
}

#[test]
fn a_player_gets_sequence_headers_then_media() {
    let mut pipe = Pipe::connect("live/stage");
    let request = pipe.client.request_playback("obs?token=abc".to_owned()).unwrap();
    pipe.send(request);
    let events = pipe.take_events();
    let Some(SessionEvent::PlayRequested { request, target }) = events.first() else { panic!("{events:?}") };
    assert_eq!(
        (target.room.as_str(), target.identity.as_str(), target.token.as_deref()),
        ("stage", "obs", Some("abc"))
    );
    pipe.server.accept_play(*request);
    pipe.pump();
    assert!(pipe.client_events.contains(&ClientSessionEvent::PlaybackRequestAccepted));
    assert_eq!(pipe.server.poll_timeout(), None, "players are not reaped for silence");

    pipe.server.play_track(MediaKind::Video, &CodecParams::for_codec(Codec::H264));
    pipe.server.play_track(MediaKind::Audio, &CodecParams { config: None, ..CodecParams::for_codec(Codec::Aac) });
    let at = pipe.now;
    let keyframe = junction_core::h264::to_annexb([SPS, PPS, IDR]);
    pipe.server.play_frame(&MediaFrame::video(Codec::H264, MediaTime::new(0, 90_000), true, at, keyframe));
    let audio = Bytes::from_static(&[0x21, 0x00]);
    pipe.server.play_frame(&MediaFrame::audio(Codec::Aac, MediaTime::new(960, 48_000), at, audio));
    pipe.pump();
    let media: Vec<(bool, u32, Bytes)> = pipe
        .client_events
        .iter()
        .filter_map(|e| match e {
            ClientSessionEvent::VideoDataReceived { timestamp, data } => Some((true, timestamp.value, data.clone())),
            ClientSessionEvent::AudioDataReceived { timestamp, data } => Some((false, timestamp.value, data.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(media.len(), 4, "{media:?}");
    assert_eq!(&media[0].2[..2], &[0x17, 0], "AVC sequence header first");
    assert_eq!(&media[1].2[..2], &[0x17, 1], "then the keyframe");
    assert_eq!(&media[2].2[..2], &[0xaf, 0], "AAC sequence header");
    assert_eq!(&media[3].2[..], &[0xaf, 1, 0x21, 0x00]);
}

#[test]
fn a_silent_publisher_is_reaped_at_the_idle_timeout() {
    let mut pipe = publishing_pipe("sk_quiet");
    let deadline = pipe.server.poll_timeout().unwrap();
    assert_eq!(deadline, pipe.now + IDLE);
    pipe.server.handle_timeout(pipe.now + IDLE - Duration::from_millis(1));
    pipe.pump();
    assert!(pipe.closed_with().is_none());
    // Data moves the deadline.
    let later = pipe.now + Duration::from_secs(3);
    pipe.now = later;
    let packet =
        pipe.client.publish_audio_data(aac_sequence_header(&[0x12, 0x10]), RtmpTimestamp::new(0), false).unwrap();
    pipe.send(packet);
    assert_eq!(pipe.server.poll_timeout(), Some(later + IDLE));
    pipe.server.handle_timeout(later + IDLE);
    pipe.pump();
    assert_eq!(pipe.closed_with(), Some(&SessionError::Idle(IDLE)));
}

#[test]
fn garbage_and_malformed_chunks_end_the_session_without_panicking() {
    let now = Instant::now();
    let mut session = Session::new(now, SessionConfig { idle_timeout: IDLE, ..SessionConfig::default() });
    session.handle_input(now, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let outputs: Vec<Output> = std::iter::from_fn(|| session.poll_output()).collect();
    assert!(matches!(outputs.last(), Some(Output::Event(SessionEvent::Closed(SessionError::Handshake(_))))));

    // A continuation chunk (type 3) on a chunk stream nothing was sent on.
    let mut pipe = Pipe::connect("live");
    pipe.server.handle_input(pipe.now, &[0xc5, 1, 2, 3]);
    pipe.pump();
    assert!(matches!(pipe.closed_with(), Some(SessionError::Guard(GuardError::Chunks(_)))), "{:?}", pipe.events);
}

/// The attack, byte for byte: one AMF0 command message (type 20) on chunk stream 3 in
/// 128-byte chunks whose payload is strict arrays nested 20 000 deep. (After the client has
/// announced its own chunk size, a Set Chunk Size of 128 goes first, so the chunks are read as
/// the attacker meant them.)
fn amf0_bomb() -> Vec<u8> {
    let payload = [0x0a, 0, 0, 0, 1].repeat(20_000);
    let len = payload.len() as u32;
    let mut bytes = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 128];
    bytes.extend([0x03, 0, 0, 0]);
    bytes.extend(&len.to_be_bytes()[1..]);
    bytes.push(20);
    bytes.extend([0, 0, 0, 0]);
    for (i, chunk) in payload.chunks(128).enumerate() {
        if i > 0 {
            bytes.push(0xc3);
        }
        bytes.extend(chunk);
    }
    bytes
}

#[test]
fn the_amf0_bomb_ends_only_its_session_with_an_error_status() {
    for limit in [64 * 1024, 1 << 20] {
        let amf_limits = AmfLimits { max_bytes: limit, ..AmfLimits::default() };
        let mut pipe = Pipe::connect_with("live", SessionConfig { amf_limits, ..SessionConfig::default() });
        // As TCP delivers it, in pieces.
        for piece in amf0_bomb().chunks(1400) {
            pipe.server.handle_input(pipe.now, piece);
        }
        pipe.pump();
        let Some(SessionError::Guard(GuardError::Amf { type_id: 20, source })) = pipe.closed_with() else {
            panic!("{:?}", pipe.events)
        };
        // Over 64 KiB the size limit stops it first; with a larger limit, the depth limit.
        assert!(matches!(source, AmfError::TooLarge { .. } | AmfError::TooDeep { limit: 32 }), "{source}");
        assert_eq!(matches!(source, AmfError::TooDeep { .. }), limit > 100_000);
        assert_eq!(pipe.status_codes(), vec!["NetStream.Failed".to_owned()]);
        assert!(pipe.server.is_closed());
    }
}

#[test]
fn a_connection_that_does_not_publish_or_play_in_time_is_closed() {
    let handshake_timeout = Duration::from_secs(3);
    let config = SessionConfig { idle_timeout: IDLE, handshake_timeout, ..SessionConfig::default() };
    let mut pipe = Pipe::connect_with("live", config);
    let deadline = pipe.now + handshake_timeout;
    assert_eq!(pipe.server.poll_timeout(), Some(deadline));
    // Chatting moves the idle deadline, not this one.
    pipe.now += Duration::from_secs(2);
    let request = pipe.client.request_publishing("sk_slow".to_owned(), PublishRequestType::Live).unwrap();
    pipe.send(request);
    assert_eq!(pipe.server.poll_timeout(), Some(deadline));
    pipe.server.handle_timeout(deadline - Duration::from_millis(1));
    pipe.pump();
    assert!(pipe.closed_with().is_none());
    pipe.server.handle_timeout(deadline);
    pipe.pump();
    assert_eq!(pipe.closed_with(), Some(&SessionError::HandshakeTimeout(handshake_timeout)));

    // Once publishing, only the idle timeout applies.
    let pipe = publishing_pipe("sk_fast");
    assert_eq!(pipe.server.poll_timeout(), Some(pipe.now + IDLE));
}

#[test]
fn amf_data_that_makes_the_library_panic_only_ends_this_session() {
    let mut pipe = publishing_pipe("sk_amf");
    // `@setDataFrame` with nothing after it: rml_rtmp indexes the missing element.
    let message = rml_rtmp::messages::RtmpMessage::Amf0Data {
        values: vec![rml_rtmp::rml_amf0::Amf0Value::Utf8String("@setDataFrame".into())],
    };
    let payload = message.into_message_payload(RtmpTimestamp::new(0), 1).unwrap();
    let mut serializer = rml_rtmp::chunk_io::ChunkSerializer::new();
    let bytes = serializer.serialize(&payload, true, false).unwrap().bytes;
    pipe.server.handle_input(pipe.now, &bytes);
    pipe.pump();
    assert!(matches!(pipe.closed_with(), Some(SessionError::LibraryPanic(_))), "{:?}", pipe.events);
}
