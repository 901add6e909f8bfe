//! Sessions driven synchronously against a real engine: join rules, room events, data and
//! signalling relays, direct calls, and how a session ends.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use junction_auth::Authority;
use junction_core::{
    Codec, Grants, PeerId, PublishRequest, RoomId, RoomMode, RoomOptions, SessionId, TrackSource, TransportKind,
};
use junction_engine::{Engine, EngineConfig, JoinRequest};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::BrowserConfig;

fn context(config: BrowserConfig) -> Arc<Context> {
    Arc::new(Context {
        engine: Engine::new(EngineConfig::default()),
        authority: Authority::new("unit-test-key-0123456789"),
        registry: Registry::default(),
        config,
        webrtc: None,
    })
}

fn principal(room: &str, identity: &str) -> Principal {
    Principal {
        identity: PeerId::new(identity).unwrap(),
        room: Some(RoomId::new(room).unwrap()),
        name: Some(identity.to_uppercase()),
        metadata: json!({"seat": identity.len()}),
        grants: Grants::default(),
        anonymous: false,
        session: Default::default(),
    }
}

struct Client {
    session: Session,
    inbox: mpsc::Receiver<Inbound>,
}

impl Client {
    fn new(ctx: &Arc<Context>, principal: Principal) -> Client {
        let (session, inbox) = Session::new(ctx.clone(), principal);
        Client { session, inbox }
    }

    async fn send(&mut self, message: Value) {
        self.session.on_text(&message.to_string()).await;
    }

    /// Feeds pending room events and relayed messages, then returns everything queued, as JSON.
    async fn drain(&mut self) -> Vec<Value> {
        while let Some(RoomInput::Event(Some(event))) = self.session.next_room_input().now_or_never() {
            self.session.on_room_event(event).await;
        }
        while let Ok(inbound) = self.inbox.try_recv() {
            if let Inbound::Deliver(message) = inbound {
                self.session.push(message);
            }
        }
        let mut out = Vec::new();
        while let Some(text) = self.session.next_outgoing() {
            out.push(serde_json::from_str(&text).unwrap());
        }
        out
    }

    async fn expect(&mut self, kind: &str) -> Value {
        let all = self.drain().await;
        all.iter().find(|m| m["type"] == kind).cloned().unwrap_or_else(|| panic!("no {kind} in {all:?}"))
    }
}

#[tokio::test]
async fn join_reports_the_room_and_the_others_see_a_callable_peer() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    alice.send(json!({"type": "join", "id": 1})).await;
    let joined = alice.expect("joined").await;
    assert_eq!(joined["id"], 1);
    assert_eq!(joined["session"], alice.session.id.to_string());
    assert_eq!(joined["room"]["name"], "lobby");
    assert_eq!(joined["you"]["identity"], "alice");
    assert_eq!(joined["you"]["name"], "ALICE");
    assert_eq!(joined["you"]["metadata"]["seat"], 5);
    assert_eq!(joined["peers"], json!([]));

    let mut bob = Client::new(&ctx, principal("lobby", "bob"));
    bob.send(json!({"type": "join", "name": "Bobby"})).await;
    let joined = bob.expect("joined").await;
    assert_eq!(joined["peers"][0]["identity"], "alice");
    assert_eq!(joined["peers"][0]["session"], alice.session.id.to_string());
    let seen = alice.expect("peer_joined").await;
    assert_eq!(seen["peer"]["identity"], "bob");
    assert_eq!(seen["peer"]["name"], "Bobby");
    assert_eq!(seen["peer"]["session"], bob.session.id.to_string());

    bob.send(json!({"type": "join", "id": "again"})).await;
    let error = bob.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("already_joined"), Some("again")));
    assert!(error["message"].as_str().unwrap().contains("lobby"));

    bob.send(json!({"type": "update", "metadata": {"hand": "up"}, "id": 2})).await;
    assert_eq!(bob.expect("ok").await["request"], "update");
    assert_eq!(alice.expect("peer_updated").await["peer"]["metadata"]["hand"], "up");

    bob.send(json!({"type": "leave", "id": 3})).await;
    let out = bob.drain().await;
    assert_eq!(out, vec![json!({"type": "closed", "reason": "left"})]);
    let ending = bob.session.ending().cloned().unwrap();
    assert_eq!((ending.close_code, ending.reason), (1000, "left"));
    bob.session.finish(ending.leave);
    let left = alice.expect("peer_left").await;
    assert_eq!((left["identity"].as_str(), left["reason"].as_str()), (Some("bob"), Some("left")));
    assert_eq!(ctx.registry.len(), 1);
}

#[tokio::test]
async fn join_refuses_other_rooms_and_requests_need_a_room() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    for request in [
        json!({"type": "subscribe", "track": "TR_x"}),
        json!({"type": "data", "payload": "hi"}),
        json!({"type": "signal", "to": "bob", "payload": {}}),
    ] {
        alice.send(request).await;
        assert_eq!(alice.expect("error").await["code"], "not_joined");
    }
    alice.send(json!({"type": "join", "room": "elsewhere"})).await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "not_allowed");
    assert_eq!(error["message"], "the token is for room lobby, not elsewhere");
    alice.send(json!({"type": "join", "name": "x".repeat(300)})).await;
    assert_eq!(alice.expect("error").await["code"], "invalid_field");
    for (receive, why) in [
        (json!(["mpeg2"]), "\"mpeg2\" is not a video codec a browser decodes"),
        (json!(["opus"]), "\"opus\" is not a video codec"),
        (json!([]), "name at least one video codec"),
    ] {
        alice.send(json!({"type": "join", "receive": receive})).await;
        let error = alice.expect("error").await;
        assert_eq!(error["code"], "invalid_field");
        assert!(error["message"].as_str().unwrap().contains(why), "{error}");
    }

    let mut anon = Client::new(&ctx, Principal { room: None, anonymous: true, ..principal("x", "anon-1") });
    anon.send(json!({"type": "join"})).await;
    assert!(anon.expect("error").await["message"].as_str().unwrap().contains("must name a room"));
    anon.send(json!({"type": "join", "room": "open"})).await;
    assert_eq!(anon.expect("joined").await["room"]["name"], "open");
}

#[tokio::test]
async fn room_events_reach_the_client_and_track_requests_reach_the_engine() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    alice.send(json!({"type": "join"})).await;
    alice.drain().await;

    // Another transport publishes a simulcast camera into the room.
    let mut request =
        JoinRequest::new(RoomId::new("lobby").unwrap(), PeerId::new("cam").unwrap(), TransportKind::Internal);
    request.auto_subscribe = false;
    let cam = ctx.engine.join(request).unwrap();
    let layers = ["q", "h", "f"].iter().map(|rid| junction_core::LayerInfo {
        rid: rid.to_string(),
        width: None,
        height: None,
        max_bitrate: None,
    });
    let publisher = cam
        .endpoint
        .rpc
        .publish(
            PublishRequest::new("camera", Codec::Vp8).with_source(TrackSource::Camera).with_layers(layers.collect()),
        )
        .unwrap();
    let track = publisher.info().id.to_string();
    let out = alice.drain().await;
    let published = out.iter().find(|m| m["type"] == "track_published").expect("track_published");
    assert_eq!(published["track"]["id"], track);
    assert_eq!(published["track"]["source"], "camera");
    assert_eq!(published["track"]["layers"].as_array().unwrap().len(), 3);
    let subscribed = out.iter().find(|m| m["type"] == "subscribed").expect("automatic subscription");
    assert_eq!((subscribed["track"].as_str(), subscribed["codec"].as_str()), (Some(track.as_str()), Some("vp8")));

    alice.send(json!({"type": "set_layer", "track": track, "layer": 0, "id": 1})).await;
    assert_eq!(alice.expect("ok").await["request"], "set_layer");
    alice.send(json!({"type": "unsubscribe", "track": track})).await;
    assert_eq!(alice.expect("unsubscribed").await["track"], track);
    alice.send(json!({"type": "subscribe", "track": track, "layer": "highest"})).await;
    assert_eq!(alice.expect("subscribed").await["track"], track);
    alice.send(json!({"type": "subscribe", "track": "TR_nope"})).await;
    assert_eq!(alice.expect("error").await["code"], "track_not_found");
    alice.send(json!({"type": "mute", "track": track, "muted": true})).await;
    assert_eq!(alice.expect("error").await["code"], "not_allowed");

    cam.endpoint.rpc.set_muted(&publisher.info().id, true).unwrap();
    assert_eq!(alice.expect("track_muted").await["muted"], true);
    cam.endpoint.rpc.unpublish(&publisher.info().id).unwrap();
    let out = alice.drain().await;
    assert!(out.iter().any(|m| m["type"] == "unsubscribed"), "{out:?}");
    assert!(out.iter().any(|m| m["type"] == "track_unpublished" && m["peer"] == "cam"), "{out:?}");
}

#[tokio::test]
async fn data_and_mesh_signalling_are_relayed_between_peers() {
    let ctx = context(BrowserConfig::default());
    let options = RoomOptions { mode: RoomMode::Mesh, ..RoomOptions::default() };
    ctx.engine.create_room(Some(RoomId::new("mesh").unwrap()), options).unwrap();
    let mut alice = Client::new(&ctx, principal("mesh", "alice"));
    let mut bob = Client::new(&ctx, principal("mesh", "bob"));
    alice.send(json!({"type": "join"})).await;
    assert_eq!(alice.expect("joined").await["room"]["mode"], "mesh");
    bob.send(json!({"type": "join"})).await;
    bob.drain().await;
    alice.drain().await;

    alice.send(json!({"type": "signal", "to": "bob", "payload": {"sdp": {"type": "offer", "sdp": "v=0"}}})).await;
    let signal = bob.expect("signal").await;
    assert_eq!(signal["from"], "alice");
    assert_eq!(signal["session"], alice.session.id.to_string());
    assert_eq!(signal["payload"]["sdp"]["type"], "offer");
    alice.send(json!({"type": "signal", "to": "nobody", "payload": {}})).await;
    assert_eq!(alice.expect("error").await["code"], "peer_not_found");
    alice.send(json!({"type": "subscribe", "track": "TR_x"})).await;
    assert_eq!(alice.expect("error").await["code"], "mesh_room");

    alice.send(json!({"type": "data", "payload": "hello", "topic": "chat", "reliable": false, "id": 9})).await;
    assert_eq!(alice.expect("ok").await["delivered"], 1);
    let data = bob.expect("data").await;
    assert_eq!(data, json!({"type": "data", "from": "alice", "topic": "chat", "payload": "hello", "reliable": false}));
    bob.send(json!({"type": "data", "payload_base64": "/wAB", "to": ["alice"]})).await;
    assert_eq!(alice.expect("data").await["payload_base64"], "/wAB");
    bob.send(json!({"type": "data", "payload_base64": "***"})).await;
    assert!(bob.expect("error").await["message"].as_str().unwrap().contains("not base64"));
    bob.send(json!({"type": "data"})).await;
    assert!(bob.expect("error").await["message"].as_str().unwrap().contains("exactly one of"));
}

#[tokio::test]
async fn direct_calls_connect_two_sessions_without_a_room() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("a", "alice"));
    let mut bob = Client::new(&ctx, principal("b", "bob"));
    alice.send(json!({"type": "call", "to": bob.session.id.to_string(), "payload": {"sdp": "offer"}, "id": 1})).await;
    let started = alice.expect("call_started").await;
    assert_eq!(started["id"], 1);
    let call = started["call"].as_str().unwrap().to_owned();
    let incoming = bob.expect("incoming_call").await;
    assert_eq!(incoming["call"], call);
    assert_eq!(incoming["from"], alice.session.id.to_string());
    assert_eq!((incoming["identity"].as_str(), incoming["name"].as_str()), (Some("alice"), Some("ALICE")));
    bob.send(json!({"type": "call_signal", "call": call, "payload": {"sdp": "answer"}})).await;
    assert_eq!(alice.expect("call_signal").await["payload"]["sdp"], "answer");
    bob.send(json!({"type": "hangup", "call": call})).await;
    assert_eq!(alice.expect("call_ended").await["reason"], "hangup");
    alice.send(json!({"type": "call_signal", "call": call, "payload": {}})).await;
    assert_eq!(alice.expect("error").await["code"], "call_not_found");
    alice.send(json!({"type": "call", "to": SessionId(77).to_string(), "payload": {}})).await;
    assert_eq!(alice.expect("error").await["code"], "session_not_found");

    let ctx = context(BrowserConfig { allow_direct_call: false, ..BrowserConfig::default() });
    let mut carol = Client::new(&ctx, principal("a", "carol"));
    carol.send(json!({"type": "call", "to": alice.session.id.to_string(), "payload": {}})).await;
    assert_eq!(carol.expect("error").await["code"], "direct_call_disabled");
}

#[tokio::test]
async fn a_kicked_or_replaced_peer_is_told_why_and_its_session_ends() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    alice.send(json!({"type": "join"})).await;
    alice.drain().await;
    ctx.engine.kick(&RoomId::new("lobby").unwrap(), &PeerId::new("alice").unwrap()).unwrap();
    assert_eq!(alice.expect("closed").await["reason"], "kicked");
    assert_eq!(alice.session.ending().unwrap().close_code, 4010);

    let mut first = Client::new(&ctx, principal("lobby", "bob"));
    first.send(json!({"type": "join"})).await;
    first.drain().await;
    let mut second = Client::new(&ctx, principal("lobby", "bob"));
    second.send(json!({"type": "join"})).await;
    second.expect("joined").await;
    assert_eq!(first.expect("closed").await["reason"], "replaced");
    // The older session ending does not take the newer one's place in the index.
    let first_ending = first.session.ending().cloned().unwrap();
    first.session.finish(first_ending.leave);
    let room = RoomId::new("lobby").unwrap();
    assert_eq!(ctx.registry.session_of(&room, &PeerId::new("bob").unwrap()), Some(second.session.id));
    assert_eq!(ctx.engine.stats().peers, 1);
    second.session.finish(CloseReason::TransportTimeout);
    assert_eq!(ctx.engine.stats().peers, 0);
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_session_carries_on() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    alice.session.on_text("{not json").await;
    assert_eq!(alice.expect("error").await["code"], "invalid_json");
    alice.send(json!({"type": "teleport", "id": 4})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_i64()), (Some("unknown_type"), Some(4)));
    alice.session.on_binary();
    assert_eq!(alice.expect("error").await["code"], "binary_not_supported");
    alice.send(json!({"type": "ping", "id": 5, "data": {"t": 1}})).await;
    assert_eq!(alice.expect("pong").await, json!({"type": "pong", "id": 5, "data": {"t": 1}}));
    alice.send(json!({"type": "join"})).await;
    alice.expect("joined").await;
    assert!(alice.session.ending().is_none());
}

#[tokio::test]
async fn a_session_dropped_without_finishing_still_releases_everything() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    let mut bob = Client::new(&ctx, principal("lobby", "bob"));
    alice.send(json!({"type": "join"})).await;
    bob.send(json!({"type": "join"})).await;
    bob.drain().await;
    alice.send(json!({"type": "call", "to": bob.session.id.to_string(), "payload": {}})).await;
    assert_eq!((ctx.engine.stats().peers, ctx.registry.len(), ctx.registry.calls()), (2, 2, 1));
    drop(alice);
    assert_eq!((ctx.engine.stats().peers, ctx.registry.len(), ctx.registry.calls()), (1, 1, 0));
    let out = bob.drain().await;
    assert!(out.iter().any(|m| m["type"] == "call_ended" && m["reason"] == "gone"), "{out:?}");
    assert!(out.iter().any(|m| m["type"] == "peer_left" && m["reason"] == "error"), "{out:?}");
}

#[tokio::test]
async fn a_resuming_client_gets_again_what_it_did_not_receive_within_the_replay_window() {
    let ctx = context(BrowserConfig::default());
    let mut alice = Client::new(&ctx, principal("lobby", "alice"));
    let mut bob = Client::new(&ctx, principal("lobby", "bob"));
    alice.send(json!({"type": "join"})).await;
    alice.drain().await;
    bob.send(json!({"type": "join"})).await;
    bob.drain().await;
    // Alice's socket took `joined`, then `peer_joined` and three messages; her client got the
    // first two.
    for n in 0..3 {
        bob.send(json!({"type": "data", "payload": format!("m{n}")})).await;
    }
    let written: Vec<Value> = alice.drain().await;
    assert_eq!(written.len(), 4, "{written:?}");
    assert_eq!(alice.session.resume(Some(2)), Ok(3));
    let again = alice.drain().await;
    assert_eq!((again[0]["type"].as_str(), again[0]["resumed"].as_bool()), (Some("welcome"), Some(true)));
    assert_eq!(again[1..], written[1..], "the three it missed, in order, after the welcome");
    // The count goes on from there (welcomes aside): a client that got everything, or that does
    // not count, gets only its welcome.
    let welcome_only = |out: Vec<Value>| out.len() == 1 && out[0]["type"] == "welcome";
    assert_eq!(alice.session.resume(Some(5)), Ok(0));
    assert!(welcome_only(alice.drain().await));
    assert_eq!(alice.session.resume(None), Ok(0));
    assert!(welcome_only(alice.drain().await));
    // One that counts more than was written, or whose missed messages are older than the window,
    // resumes with an error saying so, and nothing is written again.
    let incomplete =
        |out: Vec<Value>| out.len() == 2 && out[0]["type"] == "welcome" && out[1]["code"] == "resume_incomplete";
    assert_eq!(alice.session.resume(Some(6)), Err(ReplayError::Impossible { received: 6, written: 5 }));
    assert!(incomplete(alice.drain().await));
    let chunk = "x".repeat(8 * 1024);
    for _ in 0..10 {
        bob.send(json!({"type": "data", "payload": chunk})).await;
    }
    assert_eq!(alice.drain().await.len(), 10);
    // The error just written counts too: 6 written before the chunks, 16 with them, and the
    // window holds fewer than 8 of the chunks.
    let kept = REPLAY_BYTES / (8 * 1024);
    assert!(matches!(alice.session.resume(Some(6)), Err(ReplayError::TooOld { missing: 10, kept: k }) if k < kept));
    assert!(incomplete(alice.drain().await));
}
