//! Engine behaviour driven without sockets: fan-out, slow-subscriber isolation, release of
//! everything a peer holds however it leaves, duplicate identities, grants, limits, timeouts.

mod support;

use std::time::Duration;

use junction_core::{
    CloseReason, Codec, ContractError, DataMessage, EndpointEvent, Grants, LayerPreference, MediaOut, PeerId, RoomId,
    RoomOptions, SubscribeOptions, VideoCodecChoice,
};
use junction_engine::Clock;
use junction_engine::{
    DuplicatePolicy, EngineConfig, EngineStats, JoinRequest, RoomAdminError, RoomEndReason, RoomEvent,
};
use support::*;

fn live(stats: EngineStats) -> (u64, u64, u64, u64) {
    (stats.rooms, stats.peers, stats.tracks, stats.subscriptions)
}

#[test]
fn n_publishers_by_m_subscribers_receive_every_frame_in_order_with_shared_payloads() {
    let (engine, clock) = engine();
    let publishers: Vec<_> = (0..3).map(|i| join(&engine, "hall", &format!("pub{i}")).endpoint).collect();
    let tracks: Vec<_> = publishers.iter().map(|p| publish(p, "camera", Codec::Vp8)).collect();
    let mut subscribers: Vec<_> = (0..5).map(|i| join(&engine, "hall", &format!("sub{i}")).endpoint).collect();

    for seq in 0..100 {
        for track in &tracks {
            track.send(video(seq, seq % 30 == 0, clock.now())).unwrap();
        }
        clock.advance(FRAME);
    }
    let sent_payload = {
        let mut probe = join(&engine, "hall", "probe").endpoint;
        let frame = video(100, true, clock.now());
        let payload = frame.payload.clone();
        tracks[0].send(frame).unwrap();
        let got = frames_of(&media(&mut probe), tracks[0].id());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].payload.as_ptr(), payload.as_ptr(), "payload shared, not copied");
        payload
    };
    assert_eq!(&sent_payload[..], b"v100");

    for sub in &mut subscribers {
        let items = media(sub);
        for (i, track) in tracks.iter().enumerate() {
            let frames = frames_of(&items, track.id());
            let seqs: Vec<u64> = frames.iter().map(|f| f.time.ticks / 3000).collect();
            let last = if i == 0 { 100 } else { 99 };
            assert_eq!(seqs, (0..=last).collect::<Vec<_>>(), "every frame, in order");
            assert!(frames.iter().all(|f| f.payload == format!("v{}", f.time.ticks / 3000)));
        }
    }
    let stats = engine.stats();
    assert_eq!(stats.peers, 8, "the probe left");
    assert_eq!(stats.tracks, 3);
    assert_eq!(stats.subscriptions, 3 * 5 + 3 * 2, "publishers see each other too");
    assert_eq!(stats.frames_dropped, 0);
}

#[test]
fn a_slow_subscriber_loses_frames_alone_and_resumes_on_a_keyframe() {
    // The frame cap, with the time bound out of the way.
    let config = EngineConfig { subscriber_queue_frames: 16, ..unhurried() };
    let (engine, clock) = engine_with(config, Default::default());
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let track = publish(&publisher, "camera", Codec::Vp8);
    let mut fast = join(&engine, "r", "fast").endpoint;
    let mut slow = join(&engine, "r", "slow").endpoint;
    let _ = media(&mut publisher);

    let mut fast_frames = Vec::new();
    for seq in 0..200u64 {
        // The publisher never waits, whatever the slow subscriber does.
        track.send(video(seq, seq % 50 == 0, clock.now())).unwrap();
        fast_frames.extend(frames_of(&media(&mut fast), track.id()));
        clock.advance(FRAME);
    }
    assert_eq!(fast_frames.len(), 200, "the fast subscriber lost nothing");

    let slow_frames = frames_of(&media(&mut slow), track.id());
    assert_eq!(slow_frames.len(), 16, "the slow queue held its capacity");
    let stats = engine.stats();
    // One overflow, then one failed resume at each later keyframe (50, 100, 150).
    assert_eq!(stats.frames_dropped, 4, "{stats:?}");

    let asked = keyframe_requests(&media(&mut publisher));
    assert!(!asked.is_empty(), "overflow asked the publisher for a keyframe");
    assert!(asked.iter().all(|(t, layer)| t == track.id() && *layer == 0));

    // Once drained, the slow subscriber restarts on a keyframe, never on a delta frame.
    for seq in 201..=260u64 {
        track.send(video(seq, seq % 50 == 0, clock.now())).unwrap();
        clock.advance(FRAME);
    }
    let resumed = frames_of(&media(&mut slow), track.id());
    assert!(resumed[0].keyframe, "resumed on {:?}", resumed[0]);
    assert_eq!(resumed[0].time.ticks / 3000, 250);
    assert_eq!(resumed.len(), 11);
}

#[test]
fn a_stalled_subscriber_gets_only_fresh_media_video_from_a_keyframe_and_audio_throughout() {
    let config = EngineConfig { subscriber_queue_delay: Duration::from_millis(250), ..EngineConfig::default() };
    let (engine, clock) = engine_with(config, Default::default());
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let camera = publish(&publisher, "camera", Codec::Vp8);
    let mic = publish(&publisher, "mic", Codec::Opus);
    let mut fast = join(&engine, "r", "fast").endpoint;
    let mut stalled = join(&engine, "r", "stalled").endpoint;
    let _ = media(&mut publisher);

    // Two seconds at 30 fps video (a keyframe every second) and 50 fps audio; the stalled
    // subscriber reads nothing meanwhile.
    let tick = Duration::from_millis(10);
    let (mut fast_video, mut fast_audio) = (0, 0);
    for ms in (0..2000u64).step_by(10) {
        if ms % 33 < 10 {
            let seq = ms / 33;
            camera.send(video(seq, seq % 30 == 0, clock.now())).unwrap();
        }
        if ms % 20 == 0 {
            mic.send(audio(ms / 20, clock.now())).unwrap();
        }
        let items = media(&mut fast);
        fast_video += frames_of(&items, camera.id()).len();
        fast_audio += frames_of(&items, mic.id()).len();
        clock.advance(tick);
    }
    assert_eq!((fast_video, fast_audio), (61, 100), "the reading subscriber lost nothing");

    // What it gets now is at most 250 ms old: the audio since 1.75 s, unbroken, and the video
    // from the last keyframe (frame 60, at 1.98 s): the deltas before it could not be decoded.
    let now = clock.now();
    let items = media(&mut stalled);
    let audio_frames = frames_of(&items, mic.id());
    let video_frames = frames_of(&items, camera.id());
    assert!(items.iter().all(|item| match item {
        MediaOut::Frame { frame, .. } => now.duration_since(frame.arrival) <= Duration::from_millis(260),
        _ => true,
    }));
    let audio_seqs: Vec<u64> = audio_frames.iter().map(|f| f.time.ticks / 960).collect();
    assert_eq!(audio_seqs, (88..100).collect::<Vec<_>>(), "the last 250 ms of audio, in order");
    let video_seqs: Vec<u64> = video_frames.iter().map(|f| f.time.ticks / 3000).collect();
    assert!(video_frames.first().is_none_or(|f| f.keyframe), "video starts on a keyframe: {video_seqs:?}");
    assert_eq!(video_seqs, [60], "the stale deltas were dropped, the fresh keyframe kept");
    assert!(engine.stats().frames_dropped > 100, "{:?}", engine.stats());

    // Video then flows on from that keyframe to a subscriber that reads again.
    let mut next = Vec::new();
    for seq in 61..70 {
        camera.send(video(seq, false, clock.now())).unwrap();
        next.extend(frames_of(&media(&mut stalled), camera.id()).iter().map(|f| f.time.ticks / 3000));
        clock.advance(FRAME);
    }
    assert_eq!(next, (61..70).collect::<Vec<_>>());
}

#[test]
fn a_subscriber_whose_stale_video_was_cut_is_asked_a_keyframe_for() {
    let config = EngineConfig { subscriber_queue_delay: Duration::from_millis(250), ..EngineConfig::default() };
    let (engine, clock) = engine_with(config, Default::default());
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let camera = publish(&publisher, "camera", Codec::Vp8);
    let mut stalled = join(&engine, "r", "stalled").endpoint;
    camera.send(video(0, true, clock.now())).unwrap();
    for seq in 1..20 {
        clock.advance(FRAME);
        camera.send(video(seq, false, clock.now())).unwrap();
    }
    clock.advance(Duration::from_secs(1));
    let _ = media(&mut publisher);
    // The next delta finds its track cut (everything queued is stale): refused, and the
    // publisher is asked for a keyframe.
    camera.send(video(20, false, clock.now())).unwrap();
    assert_eq!(keyframe_requests(&media(&mut publisher)), vec![(camera.id().clone(), 0)]);
    clock.advance(FRAME);
    camera.send(video(21, true, clock.now())).unwrap();
    camera.send(video(22, false, clock.now())).unwrap();
    let got: Vec<u64> = frames_of(&media(&mut stalled), camera.id()).iter().map(|f| f.time.ticks / 3000).collect();
    assert_eq!(got, [21, 22], "the subscriber starts again on the keyframe");
}

#[test]
fn keyframe_requests_are_rate_limited_per_track() {
    let (engine, clock) = engine();
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let track = publish(&publisher, "camera", Codec::Vp8);
    let viewer = join(&engine, "r", "viewer").endpoint;
    assert_eq!(keyframe_requests(&media(&mut publisher)).len(), 1, "a new video subscriber asks for a keyframe");
    for _ in 0..10 {
        viewer.media.request_keyframe(track.id()).unwrap();
    }
    assert!(keyframe_requests(&media(&mut publisher)).is_empty(), "within the interval");
    clock.advance(Duration::from_millis(600));
    viewer.media.request_keyframe(track.id()).unwrap();
    assert_eq!(keyframe_requests(&media(&mut publisher)), vec![(track.id().clone(), 0)]);
    let unknown = junction_core::TrackId::new("TR_nope").unwrap();
    assert!(matches!(viewer.media.request_keyframe(&unknown), Err(ContractError::TrackNotFound { .. })));
}

#[test]
fn leaving_in_every_way_releases_everything() {
    let (engine, clock) = engine();
    let mut events = engine.subscribe_events();

    // Leave on request, leave by dropping the handle, kick, and room deletion.
    let mut a = join(&engine, "one", "a").endpoint;
    let b = join(&engine, "one", "b").endpoint;
    let c = join(&engine, "one", "c").endpoint;
    let mut d = join(&engine, "two", "d").endpoint;
    let e = join(&engine, "two", "e").endpoint;
    for p in [&a, &b, &c, &d, &e] {
        publish(p, "mic", Codec::Opus);
        publish(p, "camera", Codec::Vp8);
    }
    // Room one: 3 peers each receive the other two's 2 tracks; room two: 2 peers, 1 other each.
    assert_eq!(live(engine.stats()), (2, 5, 10, 3 * 2 * 2 + 2 * 2));

    b.rpc.leave(CloseReason::Left);
    drop(c);
    engine.kick(&RoomId::new("one").unwrap(), &PeerId::new("a").unwrap()).unwrap();
    assert!(matches!(events_of(&mut a).last(), Some(EndpointEvent::Closed { reason: CloseReason::Kicked })));
    assert!(a.rpc.is_closed() && a.media.is_closed());
    engine.delete_room(&RoomId::new("two").unwrap()).unwrap();
    assert!(matches!(events_of(&mut d).last(), Some(EndpointEvent::Closed { reason: CloseReason::RoomDeleted })));
    drop(e);

    let stats = engine.stats();
    assert_eq!((stats.peers, stats.tracks, stats.subscriptions), (0, 0, 0), "{stats:?}");
    assert_eq!(stats.rooms, 1, "room one lingers for its empty timeout");
    clock.advance(RoomOptions::default().empty_timeout);
    engine.tick();
    assert_eq!(live(engine.stats()), (0, 0, 0, 0));
    assert!(engine.rooms().is_empty());

    let names: Vec<&str> = std::iter::from_fn(|| events.try_recv().ok()).map(|e| e.event.name()).collect();
    assert_eq!(names.iter().filter(|n| **n == "room_started").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "room_finished").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "peer_joined").count(), 5);
    assert_eq!(names.iter().filter(|n| **n == "peer_left").count(), 5);
    assert_eq!(names.iter().filter(|n| **n == "track_published").count(), 10);
    assert_eq!(names.iter().filter(|n| **n == "track_unpublished").count(), 10);
}

fn events_of(endpoint: &mut junction_engine::Endpoint) -> Vec<EndpointEvent> {
    events(endpoint)
}

#[test]
fn the_other_peers_hear_of_joins_tracks_and_departures() {
    let (engine, _) = engine();
    let mut watcher = join(&engine, "r", "watcher").endpoint;
    let joined = join(&engine, "r", "alice");
    assert_eq!(joined.peers.len(), 1);
    let alice = joined.endpoint;
    let track = publish(&alice, "mic", Codec::Opus);
    alice.rpc.set_muted(track.id(), true).unwrap();
    drop(alice);
    let seen = events(&mut watcher);
    let kinds: Vec<String> =
        seen.iter().map(|e| format!("{e:?}").split([' ', '(', '{']).next().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        ["PeerJoined", "TrackPublished", "Subscribed", "TrackMuted", "Unsubscribed", "TrackUnpublished", "PeerLeft"]
    );
    assert!(matches!(&seen[6], EndpointEvent::PeerLeft { reason: CloseReason::Left, .. }));
}

#[test]
fn a_newer_session_replaces_the_older_which_is_told_why() {
    let (engine, _) = engine();
    let mut old = join(&engine, "r", "obs").endpoint;
    publish(&old, "camera", Codec::H264);
    let old_session = old.rpc.session();
    let newer = join(&engine, "r", "obs");
    assert_eq!(newer.replaced, Some(old_session));
    assert!(matches!(events(&mut old).last(), Some(EndpointEvent::Closed { reason: CloseReason::Replaced })));
    assert!(matches!(
        old.rpc.publish(junction_core::PublishRequest::new("x", Codec::Opus)),
        Err(ContractError::SessionClosed { .. })
    ));
    // The stale handle's drop must not evict the new session.
    drop(old);
    let stats = engine.stats();
    assert_eq!((stats.peers, stats.tracks), (1, 0));
    assert!(!newer.endpoint.rpc.is_closed());

    let (room, peer) = ids("r", "obs");
    let mut req = JoinRequest::new(room, peer, junction_core::TransportKind::Rtmp);
    req.on_duplicate = DuplicatePolicy::Reject;
    assert!(matches!(engine.join(req), Err(ContractError::IdentityTaken { .. })));
}

#[test]
fn grants_limits_and_bad_requests_are_refused_with_reasons() {
    let config = EngineConfig { max_tracks_per_peer: 2, ..EngineConfig::default() };
    let (engine, _) = engine_with(config, Default::default());
    engine
        .create_room(Some(RoomId::new("small").unwrap()), RoomOptions { max_peers: 2, ..Default::default() })
        .unwrap();
    let viewer = join_with(&engine, "small", "viewer", |r| r.grants = Grants::SUBSCRIBE_ONLY).endpoint;
    let err = viewer.rpc.publish(junction_core::PublishRequest::new("cam", Codec::Vp8)).unwrap_err();
    assert_eq!(err.to_string(), "viewer may not publish in room small");

    let publisher = join_with(&engine, "small", "pub", |r| r.grants = Grants::PUBLISH_ONLY).endpoint;
    let track = publish(&publisher, "cam", Codec::Vp8);
    assert!(matches!(
        publisher.rpc.subscribe(track.id(), SubscribeOptions::default()),
        Err(ContractError::SubscribeNotAllowed { .. })
    ));
    assert!(matches!(
        publisher.rpc.publish(junction_core::PublishRequest::new("cam", Codec::Vp9)),
        Err(ContractError::DuplicateTrack { .. })
    ));
    publish(&publisher, "mic", Codec::Opus);
    assert!(matches!(
        publisher.rpc.publish(junction_core::PublishRequest::new("x", Codec::Opus)),
        Err(ContractError::LimitExceeded { .. })
    ));
    assert!(matches!(viewer.rpc.unpublish(track.id()), Err(ContractError::NotTrackOwner { .. })));

    let (room, peer) = ids("small", "third");
    let err = engine.join(JoinRequest::new(room, peer, junction_core::TransportKind::Whep)).unwrap_err();
    assert_eq!(err, ContractError::RoomFull { room: RoomId::new("small").unwrap(), max_peers: 2 });

    assert_eq!(
        engine.create_room(Some(RoomId::new("small").unwrap()), RoomOptions::default()),
        Err(RoomAdminError::RoomExists { room: RoomId::new("small").unwrap() })
    );
    assert!(matches!(
        engine.kick(&RoomId::new("small").unwrap(), &PeerId::new("ghost").unwrap()),
        Err(RoomAdminError::PeerNotFound { .. })
    ));
    assert!(matches!(engine.delete_room(&RoomId::new("nope").unwrap()), Err(RoomAdminError::RoomNotFound { .. })));
}

#[test]
fn rooms_need_creating_when_auto_create_is_off() {
    let config = EngineConfig { auto_create_rooms: false, ..EngineConfig::default() };
    let (engine, _) = engine_with(config, Default::default());
    let (room, peer) = ids("later", "a");
    let req = JoinRequest::new(room.clone(), peer, junction_core::TransportKind::Webrtc);
    assert_eq!(engine.join(req.clone()).unwrap_err(), ContractError::RoomNotFound { room: room.clone() });
    engine.create_room(Some(room), RoomOptions::default()).unwrap();
    assert!(engine.join(req).is_ok());
}

#[test]
fn auto_subscribe_can_be_declined_and_done_by_hand() {
    let (engine, _) = engine();
    let publisher = join(&engine, "r", "pub").endpoint;
    let track = publish(&publisher, "cam", Codec::Vp8);
    let mut picky = join_with(&engine, "r", "picky", |r| r.auto_subscribe = false).endpoint;
    let later = publish(&publisher, "mic", Codec::Opus);
    assert!(events(&mut picky).iter().all(|e| !matches!(e, EndpointEvent::Subscribed { .. })));
    assert_eq!(engine.stats().subscriptions, 0);

    let got = picky.rpc.subscribe(later.id(), SubscribeOptions::default()).unwrap();
    assert_eq!(got.codec, Codec::Opus);
    assert_eq!(engine.stats().subscriptions, 1);
    assert!(matches!(
        picky.rpc.subscribe(&track.id().clone(), SubscribeOptions { codecs: vec![Codec::H264], ..Default::default() }),
        Err(ContractError::NoCodecPath { .. })
    ));
    picky.rpc.unsubscribe(later.id()).unwrap();
    assert_eq!(engine.stats().subscriptions, 0);
}

#[test]
fn empty_rooms_and_long_rooms_end_on_time() {
    let (engine, clock) = engine();
    let options = RoomOptions {
        empty_timeout: Duration::from_secs(10),
        max_duration: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    engine.create_room(Some(RoomId::new("nobody").unwrap()), options.clone()).unwrap();
    engine.create_room(Some(RoomId::new("busy").unwrap()), options).unwrap();
    let mut peer = join(&engine, "busy", "p").endpoint;
    let mut events_stream = engine.subscribe_events();

    clock.advance(Duration::from_secs(9));
    engine.tick();
    assert_eq!(engine.stats().rooms, 2);
    clock.advance(Duration::from_secs(1));
    engine.tick();
    assert_eq!(engine.rooms().len(), 1, "the never-joined room ended after its empty timeout");

    clock.advance(Duration::from_secs(50));
    engine.tick();
    assert!(matches!(events(&mut peer).last(), Some(EndpointEvent::Closed { reason: CloseReason::RoomExpired })));
    assert_eq!(live(engine.stats()), (0, 0, 0, 0));
    let reasons: Vec<RoomEndReason> = std::iter::from_fn(|| events_stream.try_recv().ok())
        .filter_map(|e| match e.event {
            RoomEvent::RoomFinished { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, [RoomEndReason::Empty, RoomEndReason::Expired]);
}

#[test]
fn shutdown_tells_every_peer() {
    let (engine, _) = engine();
    let mut a = join(&engine, "x", "a").endpoint;
    let mut b = join(&engine, "y", "b").endpoint;
    engine.shutdown();
    for p in [&mut a, &mut b] {
        assert!(matches!(events(p).last(), Some(EndpointEvent::Closed { reason: CloseReason::ServerShutdown })));
    }
    assert_eq!(live(engine.stats()), (0, 0, 0, 0));
}

#[test]
fn data_messages_and_signals_reach_their_targets_only() {
    let (engine, _) = engine();
    let a = join(&engine, "r", "a").endpoint;
    let mut b = join(&engine, "r", "b").endpoint;
    let mut c = join(&engine, "r", "c").endpoint;
    let msg = |to: Vec<&str>| DataMessage {
        from: PeerId::new("spoofed").unwrap(),
        to: to.into_iter().map(|p| PeerId::new(p).unwrap()).collect(),
        topic: Some("chat".into()),
        payload: bytes::Bytes::from_static(b"hello"),
        reliable: true,
    };
    assert_eq!(a.rpc.send_data(msg(vec![])).unwrap(), 2);
    assert_eq!(a.rpc.send_data(msg(vec!["c", "ghost"])).unwrap(), 1);
    let data = |p: &mut junction_engine::Endpoint| -> Vec<String> {
        events(p)
            .into_iter()
            .filter_map(|e| match e {
                EndpointEvent::Data(m) => Some(format!("{}:{}", m.from, String::from_utf8_lossy(&m.payload))),
                _ => None,
            })
            .collect()
    };
    assert_eq!(data(&mut b), ["a:hello"], "sender is stamped by the engine");
    assert_eq!(data(&mut c), ["a:hello", "a:hello"]);

    a.rpc.signal(&PeerId::new("b").unwrap(), serde_json::json!({"sdp": "x"})).unwrap();
    assert!(events(&mut b).iter().any(|e| matches!(e, EndpointEvent::Signal { from, .. } if from.as_str() == "a")));
    assert!(matches!(
        a.rpc.signal(&PeerId::new("ghost").unwrap(), serde_json::json!(null)),
        Err(ContractError::PeerNotFound { .. })
    ));
    let big = DataMessage { payload: bytes::Bytes::from(vec![0u8; 70_000]), ..msg(vec![]) };
    assert!(matches!(a.rpc.send_data(big), Err(ContractError::LimitExceeded { .. })));
}

#[test]
fn a_peer_that_never_reads_its_events_is_closed_not_buffered_forever() {
    let config = EngineConfig { event_queue: 4, ..EngineConfig::default() };
    let (engine, _) = engine_with(config, Default::default());
    let mut deaf = join(&engine, "r", "deaf").endpoint;
    let talker = join(&engine, "r", "talker").endpoint;
    for i in 0..8 {
        publish(&talker, &format!("t{i}"), Codec::Opus);
    }
    assert!(deaf.rpc.is_closed());
    assert_eq!(engine.stats().peers, 1);
    let _ = events(&mut deaf);
}

#[test]
fn bitrate_hints_reach_the_publisher() {
    let (engine, _) = engine();
    let mut publisher = join(&engine, "r", "pub").endpoint;
    let track = publish(&publisher, "cam", Codec::Vp8);
    let a = join(&engine, "r", "a").endpoint;
    let b = join(&engine, "r", "b").endpoint;
    a.media.report_bitrate(track.id(), 500_000).unwrap();
    b.media.report_bitrate(track.id(), 2_000_000).unwrap();
    b.media.report_bitrate(track.id(), 2_050_000).unwrap();
    let hints: Vec<u64> = media(&mut publisher)
        .into_iter()
        .filter_map(|m| match m {
            MediaOut::BitrateHint { bps, .. } => Some(bps),
            _ => None,
        })
        .collect();
    assert_eq!(hints, [500_000, 2_000_000], "small moves are not repeated");
    let _ = LayerPreference::Highest;
}

#[test]
fn publishers_are_asked_for_h264_while_a_viewer_takes_only_h264() {
    let (engine, _) = engine();
    let room = RoomId::new("r").unwrap();
    assert_eq!(engine.publisher_video_codec(&room), None, "an auto-created room would ask for nothing");
    let _browser = join_with(&engine, "r", "tab", |r| r.accept_codecs = vec![Codec::Opus, Codec::Vp8, Codec::H264]);
    let _moq = join(&engine, "r", "anything"); // accepts every codec
    assert_eq!(engine.publisher_video_codec(&room), None, "WebRTC-only rooms keep the publisher's choice");
    let player = join_with(&engine, "r", "rtmp", |r| r.accept_codecs = vec![Codec::H264, Codec::Aac]);
    assert_eq!(engine.publisher_video_codec(&room), Some(Codec::H264));
    player.endpoint.rpc.leave(CloseReason::Left);
    assert_eq!(engine.publisher_video_codec(&room), None, "only while the H.264 viewer is there");

    let fixed = RoomOptions { video_codec: VideoCodecChoice::Vp9, ..Default::default() };
    engine.create_room(Some(RoomId::new("vp9").unwrap()), fixed).unwrap();
    assert_eq!(engine.publisher_video_codec(&RoomId::new("vp9").unwrap()), Some(Codec::Vp9));
}
