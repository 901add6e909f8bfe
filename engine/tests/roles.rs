//! What a peer is to its room beyond an ordinary client ([`PeerRole`]): the cluster's service
//! peer that watches a room unseen, and the mirror standing in for a peer of another node; and
//! rooms adopted from another node, which start and end without reporting it.

mod support;

use std::time::Duration;

use junction_core::{
    Codec, ContractError, DataMessage, EndpointEvent, Grants, PeerId, PublishRequest, RoomId, RoomOptions, SessionId,
    TrackId, TransportKind,
};
use junction_engine::{Clock, EngineEvent, JoinRequest, PeerRole, RoomEvent};
use support::*;

fn names(events: &[EngineEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.name()).collect()
}

fn engine_events(stream: &mut tokio::sync::broadcast::Receiver<EngineEvent>) -> Vec<EngineEvent> {
    std::iter::from_fn(|| stream.try_recv().ok()).collect()
}

fn small_room(engine: &junction_engine::Engine, name: &str, max_peers: u32, empty_timeout: Duration) {
    let options = RoomOptions { max_peers, empty_timeout, ..Default::default() };
    engine.create_room(Some(RoomId::new(name).unwrap()), options).unwrap();
}

#[test]
fn a_service_peer_watches_unseen_takes_no_seat_and_keeps_no_room_open() {
    let (engine, clock) = engine();
    small_room(&engine, "r", 1, Duration::from_secs(5));
    let mut stream = engine.subscribe_events();
    let mut service = join_with(&engine, "r", "junction:cluster", |r| r.role = PeerRole::Service).endpoint;

    // The one seat is still free for a client, who is not told of the service.
    let joined = join(&engine, "r", "alice");
    assert!(joined.peers.is_empty(), "the client sees no service: {:?}", joined.peers);
    let mut alice = joined.endpoint;
    let (room, peer) = ids("r", "bob");
    assert!(matches!(
        engine.join(JoinRequest::new(room, peer, TransportKind::Whep)),
        Err(ContractError::RoomFull { .. })
    ));

    // The service hears the client and its track, and may subscribe; it may not publish.
    let track = publish(&alice, "mic", Codec::Opus);
    let heard = events(&mut service);
    assert!(heard.iter().any(|e| matches!(e, EndpointEvent::PeerJoined(p) if p.identity.as_str() == "alice")));
    assert!(heard.iter().any(|e| matches!(e, EndpointEvent::TrackPublished(t) if t.id == *track.id())));
    assert!(matches!(
        service.rpc.publish(PublishRequest::new("x", Codec::Opus)),
        Err(ContractError::PublishNotAllowed { .. })
    ));

    // Nothing about it reaches the room's listing, the client, or the engine-wide events.
    let snapshot = engine.room(&RoomId::new("r").unwrap()).unwrap();
    let listed: Vec<&str> = snapshot.peers.iter().map(|p| p.info.identity.as_str()).collect();
    assert_eq!(listed, ["alice"]);
    assert!(!events(&mut alice).iter().any(|e| format!("{e:?}").contains("junction:cluster")));
    let (room, service_id) = ids("r", "junction:cluster");
    let message = DataMessage {
        from: PeerId::new("alice").unwrap(),
        to: vec![service_id],
        topic: None,
        payload: bytes::Bytes::from_static(b"hi"),
        reliable: true,
    };
    let _ = alice.rpc.send_data(message);
    assert!(!events(&mut service).iter().any(|e| matches!(e, EndpointEvent::Data(_))), "no data for a service");
    assert_eq!(names(&engine_events(&mut stream)), ["peer_joined", "track_published"]);
    assert_eq!(engine.stats().peers, 1, "a service is not counted as a peer");

    // Once the client leaves, the room ends on its empty timeout although the service stays.
    drop(track);
    drop(alice);
    clock.advance(Duration::from_secs(5));
    engine.tick();
    assert!(!engine.room_exists(&room), "a room with only the service in it ended");
    assert!(matches!(events(&mut service).last(), Some(EndpointEvent::Closed { .. })));
}

#[test]
fn a_mirror_keeps_its_origin_session_takes_no_seat_and_is_reported_by_its_own_node_only() {
    let (engine, clock) = engine();
    small_room(&engine, "r", 1, Duration::from_secs(5));
    let mut stream = engine.subscribe_events();
    let mut local = join(&engine, "r", "local").endpoint;

    // The stand-in of a peer of another node: its session and join time are the origin's.
    let origin_session = SessionId::random();
    let joined_at_ms = clock.unix_ms() - 1_000;
    let mirror = join_with(&engine, "r", "remote", |r| {
        r.role = PeerRole::Mirror { session: origin_session, joined_at_ms };
        r.grants = Grants::default();
        r.transport = TransportKind::Whip;
    })
    .endpoint;
    assert_eq!(mirror.rpc.session(), origin_session);

    // Its tracks keep their origin's ids, and only a mirror may choose a track's id.
    let origin_track = TrackId::new("TR_originTrack01").unwrap();
    let track = mirror.rpc.publish_as(origin_track.clone(), PublishRequest::new("cam", Codec::H264)).unwrap();
    assert_eq!(track.id(), &origin_track);
    assert!(matches!(
        local.rpc.publish_as(TrackId::new("TR_chosenByClient").unwrap(), PublishRequest::new("c", Codec::Vp8)),
        Err(ContractError::Invalid(_))
    ));

    // Local peers see it like any other peer, and receive its frames.
    let seen = events(&mut local);
    assert!(seen.iter().any(|e| matches!(e,
        EndpointEvent::PeerJoined(p) if p.identity.as_str() == "remote" && p.session == origin_session && p.joined_at_ms == joined_at_ms)));
    assert!(seen.iter().any(|e| matches!(e, EndpointEvent::TrackPublished(t) if t.id == origin_track)));
    track.send(video(0, true, clock.now())).expect("a frame from the mirror");
    assert_eq!(frames_of(&media(&mut local), &origin_track).len(), 1);
    let snapshot = engine.room(&RoomId::new("r").unwrap()).unwrap();
    let remote = snapshot.peers.iter().find(|p| p.info.identity.as_str() == "remote").expect("listed");
    assert_eq!((remote.info.session, remote.tracks.len()), (origin_session, 1));

    // It took no seat (max_peers 1 is the local peer's), and the engine-wide event stream (this
    // node's webhooks) says nothing of it: its own node reports it.
    assert_eq!(engine.stats().peers, 1);
    assert_eq!(names(&engine_events(&mut stream)), ["peer_joined"], "only the local peer's join");

    // While it is there the room stays open; when it leaves, local peers are told, quietly.
    drop(local);
    clock.advance(Duration::from_secs(10));
    engine.tick();
    assert!(engine.room_exists(&RoomId::new("r").unwrap()), "a mirror keeps the room open");
    drop(track);
    drop(mirror);
    let left = names(&engine_events(&mut stream));
    assert_eq!(left, ["peer_left"], "the local peer's departure only: {left:?}");
}

#[test]
fn an_older_mirror_never_replaces_a_newer_session_of_the_same_identity() {
    let (engine, clock) = engine();
    let newer = join(&engine, "r", "alice").endpoint;
    let older = |joined_at_ms| {
        let mut req = JoinRequest::new(RoomId::new("r").unwrap(), PeerId::new("alice").unwrap(), TransportKind::Whip);
        req.role = PeerRole::Mirror { session: SessionId::random(), joined_at_ms };
        engine.join(req)
    };
    // The same identity joined another node a second earlier: the later join wins on both.
    assert!(matches!(older(clock.unix_ms() - 1_000), Err(ContractError::IdentityTaken { .. })));
    assert!(!newer.rpc.is_closed());
    // One that joined after the local session replaces it.
    let later = older(clock.unix_ms() + 1_000).expect("a later remote session replaces the local one");
    assert!(newer.rpc.is_closed());
    assert!(!later.endpoint.rpc.is_closed());
}

#[test]
fn an_adopted_room_starts_and_ends_without_reporting_it() {
    let (engine, clock) = engine();
    let mut stream = engine.subscribe_events();
    let room = RoomId::new("elsewhere").unwrap();
    let options = RoomOptions { empty_timeout: Duration::from_secs(5), ..Default::default() };
    engine.adopt_room(room.clone(), options);
    assert!(engine.room_exists(&room));
    // A second adoption of a live room changes nothing.
    engine.adopt_room(room.clone(), RoomOptions::default());
    clock.advance(Duration::from_secs(5));
    engine.tick();
    assert!(!engine.room_exists(&room));
    let reported: Vec<&'static str> = engine_events(&mut stream)
        .iter()
        .filter(|e| matches!(e.event, RoomEvent::RoomStarted { .. } | RoomEvent::RoomFinished { .. }))
        .map(|e| e.event.name())
        .collect();
    assert!(reported.is_empty(), "the node that started it reports it: {reported:?}");
    // A room created here is reported.
    engine.create_room(Some(room.clone()), RoomOptions::default()).unwrap();
    assert_eq!(names(&engine_events(&mut stream)), ["room_started"]);
}
