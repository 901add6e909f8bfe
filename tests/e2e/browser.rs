//! The browser transport end to end: the WebSocket signalling protocol over a real socket (join,
//! room events, data, errors for bad input, reconnect and reaping), and real Chromium tabs —
//! peer to peer in mesh rooms and direct calls, where the server relays only signalling.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::browser::{WsClient, metric, metrics};
use crate::support::chromium::{many_tabs_turn, run as chromium};
use crate::support::webrtc_client::{ClientCodec, ClientOptions, WhepViewer, starts_at_a_keyframe};
use crate::support::{TestServer, eventually};

/// A short reconnect grace period, so reaping can be observed quickly.
const QUICK_GRACE: &str = "[browser]\nreconnect_grace_s = 2\n";

async fn token(server: &TestServer, room: &str, identity: &str) -> String {
    server.token(room, identity, json!({})).await
}

/// Live signalling sessions and direct calls, from `/metrics`.
async fn live_sessions(server: &TestServer) -> (f64, f64) {
    let text = metrics(server).await;
    let sessions = metric(&text, "junction_browser_sessions").expect("junction_browser_sessions in /metrics");
    let calls = metric(&text, "junction_browser_calls").expect("junction_browser_calls in /metrics");
    (sessions, calls)
}

async fn wait_for_no_sessions(server: &TestServer) {
    eventually("browser sessions and calls back to zero", Duration::from_secs(20), || async {
        (live_sessions(server).await == (0.0, 0.0)).then_some(())
    })
    .await;
}

/// No media frame entered or left the server's engine.
async fn assert_no_media_through_server(server: &TestServer) {
    let text = metrics(server).await;
    for name in ["junction_frames_in_total", "junction_frames_forwarded_total"] {
        assert_eq!(metric(&text, name), Some(0.0), "{name} moved (or is missing):\n{text}");
    }
}

#[tokio::test]
async fn peers_join_see_each_other_exchange_data_and_leave() {
    let server = TestServer::start().await;
    let (mut alice, joined) = WsClient::join(&server, &token(&server, "standup", "alice").await).await;
    assert_eq!(alice.welcome["identity"], "alice");
    assert_eq!(alice.welcome["room"], "standup");
    assert!(alice.session().starts_with("PS_"));
    assert_eq!(joined["session"], alice.session());
    assert_eq!(joined["room"]["name"], "standup");
    assert_eq!(joined["room"]["mode"], "sfu");
    assert_eq!(joined["you"]["identity"], "alice");
    assert_eq!(joined["you"]["transport"], "webrtc");

    let bob_token = server
        .call(
            Method::POST,
            "/v1/rooms/standup/tokens",
            Some(json!({"identity": "bob", "name": "Bob", "metadata": {"role": "host"}})),
        )
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (mut bob, joined) = WsClient::join(&server, &bob_token).await;
    assert_eq!(joined["peers"][0]["identity"], "alice");
    assert_eq!(joined["peers"][0]["session"], alice.session());
    let seen = alice.expect("peer_joined").await;
    assert_eq!(seen["peer"]["identity"], "bob");
    assert_eq!(seen["peer"]["name"], "Bob");
    assert_eq!(seen["peer"]["metadata"]["role"], "host");
    assert_eq!(seen["peer"]["session"], bob.session());
    let (_, room) = server.call(Method::GET, "/v1/rooms/standup", None).await;
    assert_eq!(room["room"]["num_peers"], 2);

    bob.send(json!({"type": "data", "payload": "héllo", "topic": "chat", "id": 1})).await;
    assert_eq!(bob.expect("ok").await, json!({"type": "ok", "id": 1, "request": "data", "delivered": 1}));
    let data = alice.expect("data").await;
    assert_eq!(data, json!({"type": "data", "from": "bob", "topic": "chat", "payload": "héllo", "reliable": true}));
    alice.send(json!({"type": "data", "payload_base64": "AAEC/w==", "to": ["bob"], "reliable": false})).await;
    let data = bob.expect("data").await;
    assert_eq!((data["payload_base64"].as_str(), data["reliable"].as_bool()), (Some("AAEC/w=="), Some(false)));

    bob.send(json!({"type": "update", "name": "Robert"})).await;
    assert_eq!(alice.expect("peer_updated").await["peer"]["name"], "Robert");
    bob.send(json!({"type": "ping", "id": "p", "data": 42})).await;
    assert_eq!(bob.expect("pong").await, json!({"type": "pong", "id": "p", "data": 42}));

    bob.send(json!({"type": "leave"})).await;
    assert_eq!(bob.expect("closed").await["reason"], "left");
    assert_eq!(bob.closed().await, Some(1000));
    let left = alice.expect("peer_left").await;
    assert_eq!((left["identity"].as_str(), left["reason"].as_str()), (Some("bob"), Some("left")));
    alice.send(json!({"type": "leave"})).await;
    assert_eq!(alice.closed().await, Some(1000));
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_session_carries_on() {
    let server = TestServer::start().await;
    let (mut alice, _) = WsClient::join(&server, &token(&server, "r1", "alice").await).await;

    alice.send_text("{\"type\": \"join\",").await;
    let error = alice.expect("error").await;
    assert_eq!(error["code"], "invalid_json");
    assert!(error["message"].as_str().unwrap().starts_with("malformed JSON"), "{error}");

    alice.send(json!({"type": "teleport", "id": 7})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_i64()), (Some("unknown_type"), Some(7)));
    assert!(error["message"].as_str().unwrap().contains("\"teleport\""), "{error}");

    alice.send(json!({"type": "mute", "track": "TR_x", "muted": "yes"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["request"].as_str()), (Some("invalid_field"), Some("mute")));
    assert!(error["message"].as_str().unwrap().starts_with("mute.muted:"), "{error}");

    alice.send(json!({"type": "join", "id": "twice"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("already_joined"), Some("twice")));
    assert_eq!(error["message"], "this session has already joined room r1; leave first");

    alice.send_binary(&[1, 2, 3]).await;
    assert_eq!(alice.expect("error").await["code"], "binary_not_supported");

    alice.send(json!({"type": "subscribe", "track": "TR_doesnotexist"})).await;
    assert_eq!(alice.expect("error").await["code"], "track_not_found");

    // Still in the room, still answering.
    alice.send(json!({"type": "ping", "id": 1})).await;
    alice.expect("pong").await;
    let (_, peers) = server.call(Method::GET, "/v1/rooms/r1/peers", None).await;
    assert_eq!(peers["peers"][0]["identity"], "alice");

    // Credentials are refused on the socket itself, then it closes with 4001.
    let expired = expired_token(&server.api_key, "r1", "mallory");
    let mut refused = WsClient::connect_raw(&server, &format!("token={expired}")).await;
    let error = refused.expect("error").await;
    assert_eq!(error["code"], "token_expired");
    assert!(error["message"].as_str().unwrap().starts_with("the token expired at"), "{error}");
    assert_eq!(refused.closed().await, Some(4001));
    let mut refused = WsClient::connect_raw(&server, "").await;
    let error = refused.expect("error").await;
    assert_eq!(error["code"], "unauthorized");
    assert!(error["message"].as_str().unwrap().contains("anonymous sessions are disabled"), "{error}");
    assert_eq!(refused.closed().await, Some(4001));
    let mut refused = WsClient::connect_raw(&server, "token=eyJhbGciOiJIUzI1NiJ9.e30.forged").await;
    assert_eq!(refused.expect("error").await["code"], "unauthorized");

    // A plain GET is told to upgrade; the dev token endpoint does not exist outside dev mode.
    let response = reqwest::get(server.url("/ws")).await.unwrap();
    assert_eq!(response.status(), 426);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "websocket_required");
    let response =
        reqwest::Client::new().post(server.url("/dev/token")).json(&json!({"room": "r1"})).send().await.unwrap();
    assert_eq!(response.status(), 404);

    alice.send(json!({"type": "ping", "id": 2})).await;
    alice.expect("pong").await;
    alice.send(json!({"type": "leave"})).await;
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn bad_sdp_and_out_of_turn_signalling_get_clear_errors_and_the_session_carries_on() {
    let server = TestServer::start().await;
    let (mut alice, _) = WsClient::join(&server, &token(&server, "sdp", "alice").await).await;

    alice.send(json!({"type": "offer", "sdp": "this is not SDP", "id": "o1"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("bad_sdp"), Some("o1")));
    assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");

    // Nothing was offered by the server, and no media session exists for candidates yet.
    alice.send(json!({"type": "answer", "sdp": "v=0", "id": "a1"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("no_offer"), Some("a1")));
    alice.send(json!({"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "id": "c1"})).await;
    let error = alice.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("no_media"), Some("c1")));

    // Still in the room and answering; the peer is still there.
    alice.send(json!({"type": "ping", "id": 1})).await;
    alice.expect("pong").await;
    let (_, peers) = server.call(Method::GET, "/v1/rooms/sdp/peers", None).await;
    assert_eq!(peers["peers"][0]["identity"], "alice");
    alice.send(json!({"type": "leave"})).await;
    assert_eq!(alice.closed().await, Some(1000));
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

/// A token signed with the server's key that expired a minute ago.
fn expired_token(api_key: &str, room: &str, identity: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims =
        json!({"iss": "junction", "sub": identity, "room": room, "iat": now - 120, "nbf": now - 120, "exp": now - 60});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(api_key.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_dropped_socket_resumes_within_the_grace_period_and_is_reaped_after_it() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let alice_token = token(&server, "lobby", "alice").await;
    let (alice, _) = WsClient::join(&server, &alice_token).await;
    let (mut bob, _) = WsClient::join(&server, &token(&server, "lobby", "bob").await).await;
    let session = alice.session().to_owned();
    let key = alice.welcome["resume_key"].as_str().unwrap().to_owned();

    // Bob writes to Alice; her socket takes it, but her network fails before she reads it. Then
    // Bob writes again while she is away.
    bob.send(json!({"type": "data", "payload": "hello", "id": 1})).await;
    assert_eq!(bob.expect("ok").await["delivered"], 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = alice.drop_connection().await;
    bob.send(json!({"type": "data", "payload": "are you there?", "id": 2})).await;
    assert_eq!(bob.expect("ok").await["delivered"], 1);

    // Resuming needs the key; a wrong one starts a fresh session and says why.
    let mut wrong = WsClient::connect(&server, &format!("token={alice_token}&resume={session}&key=nope")).await;
    assert_eq!(wrong.welcome["resumed"], false);
    assert_ne!(wrong.session(), session);
    let error = wrong.expect("error").await;
    assert_eq!(error["code"], "resume_failed");
    assert!(error["message"].as_str().unwrap().contains("resume key"), "{error}");
    wrong.send(json!({"type": "leave"})).await;

    let mut alice = WsClient::resume(&server, &alice_token, &session, &key, received).await;
    assert_eq!(alice.welcome["resumed"], true);
    assert_eq!(alice.session(), session);
    // What the dead socket swallowed (Bob's arrival, his first message) is written again, then
    // what waited: each once, in order.
    let joined = alice.next().await.unwrap();
    assert_eq!(
        (joined["type"].as_str(), joined["peer"]["identity"].as_str()),
        (Some("peer_joined"), Some("bob")),
        "{joined}"
    );
    for payload in ["hello", "are you there?"] {
        let missed = alice.next().await.unwrap();
        let got = (missed["type"].as_str(), missed["from"].as_str(), missed["payload"].as_str());
        assert_eq!(got, (Some("data"), Some("bob"), Some(payload)), "{missed}");
    }
    // Still the same peer: a second join is refused, and Bob never saw her leave.
    alice.send(json!({"type": "join"})).await;
    assert_eq!(alice.expect("error").await["code"], "already_joined");
    bob.assert_silent("peer_left", Duration::from_millis(200)).await;

    // Gone for good: reaped after the grace period, and Bob is told.
    alice.drop_connection().await;
    let left = bob.expect("peer_left").await;
    assert_eq!((left["identity"].as_str(), left["reason"].as_str()), (Some("alice"), Some("transport_timeout")));
    let gone = WsClient::connect(&server, &format!("token={alice_token}&resume={session}&key={key}")).await;
    assert_eq!(gone.welcome["resumed"], false);
    gone.close(1000).await;

    bob.send(json!({"type": "leave"})).await;
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn anonymous_sessions_only_when_allowed_and_name_their_room() {
    let server = TestServer::start_with("[browser]\nallow_anonymous = true\nallow_direct_call = false\n", &[]).await;
    assert!(server.logs().contains("allow_anonymous = true"), "no insecurity warning:\n{}", server.logs());
    let mut anon = WsClient::connect(&server, "").await;
    assert_eq!(anon.welcome["anonymous"], true);
    assert_eq!(anon.welcome["direct_call"], false);
    assert!(anon.welcome["identity"].as_str().unwrap().starts_with("anon-"));
    anon.send(json!({"type": "join"})).await;
    assert!(anon.expect("error").await["message"].as_str().unwrap().contains("must name a room"));
    anon.send(json!({"type": "join", "room": "open-house", "name": "Visitor"})).await;
    let joined = anon.expect("joined").await;
    assert_eq!(
        (joined["room"]["name"].as_str(), joined["you"]["name"].as_str()),
        (Some("open-house"), Some("Visitor"))
    );
    anon.send(json!({"type": "call", "to": "PS_1", "payload": {}})).await;
    assert_eq!(anon.expect("error").await["code"], "direct_call_disabled");
    anon.send(json!({"type": "leave"})).await;
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn kicked_and_replaced_peers_are_told_and_disconnected() {
    let server = TestServer::start().await;
    let alice_token = token(&server, "hall", "alice").await;
    let (mut first, _) = WsClient::join(&server, &alice_token).await;
    let (mut second, _) = WsClient::join(&server, &alice_token).await;
    assert_eq!(first.expect("closed").await["reason"], "replaced");
    assert_eq!(first.closed().await, Some(4009));

    let (status, _) = server.call(Method::DELETE, "/v1/rooms/hall/peers/alice", None).await;
    assert_eq!(status, 204);
    assert_eq!(second.expect("closed").await["reason"], "kicked");
    assert_eq!(second.closed().await, Some(4010));

    let (mut carol, _) = WsClient::join(&server, &token(&server, "hall", "carol").await).await;
    server.call(Method::DELETE, "/v1/rooms/hall", None).await;
    assert_eq!(carol.expect("closed").await["reason"], "room_deleted");
    assert_eq!(carol.closed().await, Some(4011));
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn mesh_room_tabs_connect_peer_to_peer_with_only_signalling_through_the_server() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    // The room must outlive Chromium's start-up (the test config empties rooms after 5 s), or the
    // tabs would join an auto-created SFU room instead.
    let body = json!({"name": "mesh", "mode": "mesh", "empty_timeout_s": 120});
    let (status, _) = server.call(Method::POST, "/v1/rooms", Some(body)).await;
    assert_eq!(status, 201);
    let tokens = [token(&server, "mesh", "ann").await, token(&server, "mesh", "ben").await];
    let result = chromium("room.mjs", json!({"base": server.base, "room": "mesh", "tokens": tokens})).await;
    assert_decoding_grows(&result);
    for (tab, other) in [(0, "ben"), (1, "ann")] {
        let tiles = result["tiles"][tab].as_array().unwrap();
        assert!(
            tiles.iter().any(|t| t["peer"] == other && t["kind"] == "video" && t["source"] == "camera"),
            "tab {tab} has no video tile of {other}: {result}"
        );
        assert!(tiles.iter().any(|t| t["peer"] == other && t["kind"] == "audio"), "tab {tab}: {result}");
        assert_eq!(result["errors"][tab], Value::Null);
    }
    assert_no_media_through_server(&server).await;
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn sfu_room_tabs_see_and_hear_each_other_through_the_server() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let tokens = [token(&server, "sfu", "ann").await, token(&server, "sfu", "ben").await];
    let result = chromium("room.mjs", json!({"base": server.base, "room": "sfu", "tokens": tokens})).await;
    assert_decoding_grows(&result);
    for (tab, other) in [(0, "ben"), (1, "ann")] {
        let tiles = result["tiles"][tab].as_array().unwrap();
        assert!(
            tiles.iter().any(|t| t["peer"] == other && t["kind"] == "video" && t["source"] == "camera"),
            "{tiles:?}"
        );
        assert!(
            tiles.iter().any(|t| t["peer"] == other && t["kind"] == "audio" && t["source"] == "microphone"),
            "{tiles:?}"
        );
        assert_eq!(result["errors"][tab], Value::Null);
    }
    let text = metrics(&server).await;
    let forwarded = metric(&text, "junction_frames_forwarded_total").unwrap_or(0.0);
    assert!(forwarded > 0.0, "no frame went through the server:\n{text}");
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn the_room_page_shows_one_tile_per_peer_with_a_name_plate_for_microphones_and_who_speaks() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let tokens = [
        token(&server, "tiles", "ann").await,
        token(&server, "tiles", "bob").await,
        token(&server, "tiles", "cy").await,
    ];
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("room-page.png");
    let args = json!({"base": server.base, "room": "tiles", "tokens": tokens, "screenshot": screenshot});
    let result = chromium("tiles.mjs", args).await;
    let shown = result["shown"].as_array().unwrap();
    assert_eq!(shown.len(), 2, "one tile per peer, not one per track: {result}");
    let tile =
        |peer: &str| shown.iter().find(|t| t["peer"] == peer).unwrap_or_else(|| panic!("no tile of {peer}: {result}"));
    let (ann, bob) = (tile("ann"), tile("bob"));
    // A camera: its picture, the name, its microphone playing unseen.
    assert_eq!(ann["label"], "ann");
    assert_eq!(ann["nameplate"], false);
    assert!(ann["videos"][0]["width"].as_u64() > Some(0) && ann["videos"][0]["visible"] == true, "{ann}");
    assert_eq!(ann["audios"], json!([{"controls": false, "visible": false, "playing": true}]), "{ann}");
    // A microphone alone: a name plate, no black video, no bare audio player.
    assert_eq!(
        (bob["nameplate"].as_bool(), bob["avatar"].as_str(), bob["videos"].as_array().map(Vec::len)),
        (Some(true), Some("b"), Some(0))
    );
    assert_eq!(bob["audios"], json!([{"controls": false, "visible": false, "playing": true}]), "{bob}");
    // Side by side at one height: a name plate as large as a picture, nothing under either.
    assert_eq!(ann["height"], bob["height"], "{result}");
    assert_eq!(result["lit"], json!(["ann", "bob"]), "each tile lit up while its peer spoke: {result}");
    assert_eq!(result["errors"], json!([null, null, null]));
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "screenshot at {}", screenshot.display());
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn six_tabs_joining_at_once_each_decode_the_other_five_and_the_dashboard_shows_and_kicks_them() {
    let _turn = many_tabs_turn().await;
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let identities = ["ann", "ben", "cat", "dan", "eve", "fay"];
    let mut tokens = Vec::new();
    for name in identities {
        tokens.push(token(&server, "crowd", name).await);
    }
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let args = json!({
        "base": server.base, "room": "crowd", "tokens": tokens, "identities": identities,
        "api_key": server.api_key, "screenshot": screenshot,
    });
    let stats = tokio::spawn(media_stats_while_six_tabs_talk(server.base.clone(), server.api_key.clone()));
    let (result, joined_ms) = tokio::join!(
        chromium("crowd.mjs", args),
        eventually("six peers in the room", Duration::from_secs(60), || async {
            let (_, body) = server.call(Method::GET, "/v1/rooms/crowd/peers", None).await;
            let peers = body["peers"].as_array()?;
            (peers.len() == 6).then(|| peers.iter().filter_map(|p| p["joined_at_ms"].as_u64()).collect::<Vec<_>>())
        })
    );
    // The scenario holds every tab's SDK back until all six have asked for it: the server sees
    // them join within one second of each other (so that their negotiations overlap).
    let spread = joined_ms.iter().max().unwrap() - joined_ms.iter().min().unwrap();
    println!("six tabs joined within {spread} ms of each other");
    println!("crowd.mjs phases (s): {}", result["phases"]);
    assert!(joined_ms.len() == 6 && spread <= 1_000, "joined at {joined_ms:?}: {result}");
    for tab in 0..6 {
        let (first, second) = (result["first"][tab].as_array().unwrap(), result["second"][tab].as_array().unwrap());
        assert!(first.len() >= 5 && second.len() >= 5, "tab {tab} decodes {} cameras: {result}", second.len());
        let total = |s: &[Value]| s.iter().map(|n| n.as_u64().unwrap()).sum::<u64>();
        assert!(total(second) > total(first), "tab {tab} stopped decoding: {result}");
        assert_eq!(result["errors"][tab], Value::Null, "{result}");
    }
    // No negotiation error, nor anything else, in any tab's console.
    assert_eq!(result["logs"], json!([]), "{result}");

    // The dashboard listed all six, each sending and receiving; its Kick removed the last one,
    // whose tab said why, and its event list showed it leave.
    let dashboard = &result["dashboard"];
    for name in identities {
        let peer = &dashboard["seen"][name];
        assert!(peer["sent"].as_u64() > Some(0) && peer["received"].as_u64() > Some(0), "{name}: {dashboard}");
    }
    let mut after: Vec<&str> = dashboard["after"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    after.sort();
    assert_eq!(after, identities[..5], "{dashboard}");
    assert!(dashboard["events"].as_array().unwrap().contains(&json!("peer_left")), "{dashboard}");
    // The ingress key made on the dashboard is the server's, shown with its OBS settings.
    let (_, keys) = server.call(Method::GET, "/v1/ingress", None).await;
    let key = &keys["ingress"][0];
    let shown = dashboard["ingress"][0].as_str().unwrap();
    for part in [key["stream_key"].as_str().unwrap(), key["url"].as_str().unwrap(), "Stream Key:"] {
        assert!(shown.contains(part), "{part} not in {shown}");
    }
    // The room made and ended on the dashboard is gone.
    assert_eq!(server.call(Method::GET, "/v1/rooms/standby", None).await.0, 404);
    println!("dashboard screenshot: {}", screenshot.display());
    stats.await.unwrap();
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn a_browser_room_peer_is_watched_over_whep_by_an_independent_webrtc_stack() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let ann = token(&server, "mixed", "ann").await;
    let args = json!({"base": server.base, "room": "mixed", "token": ann, "hold_ms": 8000});
    let (result, frames) = tokio::join!(chromium("publish.mjs", args), async {
        eventually("ann's camera and microphone published", Duration::from_secs(30), || async {
            let (_, peers) = server.call(Method::GET, "/v1/rooms/mixed/peers", None).await;
            let peers = peers["peers"].as_array().cloned().unwrap_or_default();
            let ann = peers.iter().find(|p| p["identity"] == "ann")?;
            ann["tracks"].as_array().is_some_and(|t| t.len() == 2).then_some(())
        })
        .await;
        let viewer_token = server.token("mixed", "viewer", json!({"subscribe": true, "publish": false})).await;
        let options = ClientOptions::new(&[ClientCodec::Vp8, ClientCodec::Opus]);
        let mut viewer = WhepViewer::connect(&server.base, "mixed", &viewer_token, "?identity=ann", options)
            .await
            .expect("WHEP view");
        let (mut video, mut audio) = (Vec::new(), 0);
        while video.len() < 30 || audio < 20 {
            let Some(frame) = viewer.next_frame(Duration::from_secs(10)).await else { break };
            match frame.codec {
                ClientCodec::Vp8 => video.push(frame),
                ClientCodec::Opus => audio += 1,
                ClientCodec::H264 => panic!("H.264 from a VP8 publisher"),
            }
        }
        viewer.close().await;
        (video, audio)
    });
    let (video, audio) = frames;
    assert!(audio >= 20, "{audio} Opus packets from the browser's microphone");
    assert!(video.len() >= 30, "{} VP8 frames from the browser's camera", video.len());
    // The viewer starts at a keyframe (the server asked the browser for one), or at once after
    // asking for one itself (see `starts_at_a_keyframe`), and every frame is a real VP8 frame:
    // a keyframe carries the start code 9d 01 2a and its size.
    starts_at_a_keyframe(&video);
    for frame in video.iter().filter(|f| f.keyframe) {
        assert_eq!(frame.payload.get(3..6), Some(&[0x9d, 0x01, 0x2a][..]), "not a VP8 keyframe");
    }
    // Timestamps move forward on the 90 kHz clock.
    let span = video.last().unwrap().rtp_timestamp.wrapping_sub(video[0].rtp_timestamp);
    assert!(span > 0 && span < 90_000 * 30, "RTP timestamps span {span} ticks over {} frames", video.len());
    assert_eq!(result["error"], Value::Null);
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn a_subscriber_forced_to_each_simulcast_layer_decodes_that_layer() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let tokens = [token(&server, "sim", "ann").await, token(&server, "sim", "ben").await];
    let result = chromium("simulcast.mjs", json!({"base": server.base, "room": "sim", "tokens": tokens})).await;
    let layers = result["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "{result}");
    let widths: Vec<u64> = layers.iter().map(|l| l["width"].as_u64().unwrap()).collect();
    assert!(widths[0] < widths[1] && widths[1] < widths[2], "layer sizes {widths:?}: {result}");
    for layer in layers {
        // The forced layer holds (the bandwidth estimate does not move it) and keeps decoding.
        assert_eq!(layer["stillWidth"], layer["width"], "{layer}");
        assert!(layer["after"].as_u64() > layer["before"].as_u64(), "stopped decoding: {layer}");
    }
    assert_eq!(result["errors"], json!([null, null]));
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

#[tokio::test]
async fn direct_call_connects_two_sessions_without_a_room() {
    let server = TestServer::start_with(QUICK_GRACE, &[]).await;
    let tokens = [token(&server, "home-a", "caller").await, token(&server, "home-b", "callee").await];
    let result = chromium("call.mjs", json!({"base": server.base, "tokens": tokens})).await;
    assert_eq!(result["incoming"]["identity"], "caller");
    assert_eq!(result["incoming"]["from"], result["callerId"]);
    assert!(result["callId"].as_str().unwrap().starts_with("CA_"));
    assert_decoding_grows(&result);
    assert_eq!(result["ended"], "hangup");
    assert_no_media_through_server(&server).await;
    // Nobody joined a room.
    assert_eq!(server.health().await["peers"], 0);
    wait_for_no_sessions(&server).await;
}

/// Each tab decoded video from the other, more in the second sample than in the first.
fn assert_decoding_grows(result: &Value) {
    for tab in 0..2 {
        let decoded = |sample: &str| -> u64 {
            result[sample][tab]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["framesDecoded"].as_u64().unwrap_or(0))
                .max()
                .unwrap_or(0)
        };
        let (first, second) = (decoded("first"), decoded("second"));
        assert!(first > 0, "tab {tab} decoded nothing: {result}");
        assert!(second > first, "tab {tab} stopped decoding ({first} then {second}): {result}");
    }
}

/// While six tabs talk: `GET /v1/rooms/crowd/stats` gives every camera its picture size and frame
/// rate and the WebRTC links their loss and round trip, and an operator's mute stops one camera
/// reaching every subscriber until it is unmuted.
async fn media_stats_while_six_tabs_talk(base: String, api_key: String) {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{base}{path}")).bearer_auth(&api_key);
        async move { request.send().await.ok()?.json::<Value>().await.ok() }
    };
    let cameras = |stats: &Value| -> Vec<Value> {
        let peers = stats["peers"].as_array().cloned().unwrap_or_default();
        peers
            .iter()
            .flat_map(|p| p["tracks"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["kind"] == "video")
            .collect()
    };
    let stats = eventually("six cameras measured", Duration::from_secs(60), || async {
        let stats = get("/v1/rooms/crowd/stats".into()).await?;
        let cameras = cameras(&stats);
        let measured = cameras.iter().filter(|t| t["width"].as_u64() > Some(0) && t["fps"].as_u64() >= Some(5));
        let linked =
            cameras.iter().filter(|t| t["link"]["loss"].is_number() && t["link"]["rtt_ms"].as_f64() > Some(0.0));
        // Every peer receives, and its own receiver reports give its link figures.
        let peers = stats["peers"].as_array()?;
        let receiving = |peer: &Value| {
            let subscriptions = peer["subscriptions"].as_array().cloned().unwrap_or_default();
            subscriptions.iter().any(|s| s["bitrate_bps"].as_u64() > Some(0) && s["link"]["rtt_ms"].is_number())
        };
        let all_receive = peers.len() == 6 && peers.iter().all(receiving);
        (cameras.len() == 6 && measured.count() == 6 && linked.count() == 6 && all_receive).then_some(stats)
    })
    .await;
    let camera = &cameras(&stats)[0];
    // crowd.mjs captures the cameras at 320x180; simulcast-less room tabs send that whole or
    // scaled down.
    assert!(camera["width"].as_u64() <= Some(320) && camera["height"].as_u64() <= Some(180), "{camera}");
    for peer in stats["peers"].as_array().unwrap() {
        // The client is the tab's User-Agent, as its WebSocket named it.
        assert!(peer["client"].as_str().is_some_and(|c| c.contains("Chrome/")), "{peer}");
    }

    let track = camera["id"].as_str().unwrap().to_owned();
    let mute = |muted: bool| {
        let request = http
            .post(format!("{base}/v1/rooms/crowd/tracks/{track}/mute"))
            .bearer_auth(&api_key)
            .json(&json!({ "muted": muted }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let received = |stats: &Value| -> Vec<u64> {
        let peers = stats["peers"].as_array().cloned().unwrap_or_default();
        peers
            .iter()
            .flat_map(|p| p["subscriptions"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["track"] == track.as_str())
            .map(|s| s["bitrate_bps"].as_u64().unwrap_or(0))
            .collect()
    };
    assert_eq!(mute(true).await, 200);
    eventually("the muted camera reaching nobody", Duration::from_secs(20), || async {
        let stats = get("/v1/rooms/crowd/stats".into()).await?;
        let camera = cameras(&stats).into_iter().find(|t| t["id"] == track.as_str())?;
        let rates = received(&stats);
        (camera["muted_by_operator"] == true
            && camera["bitrate_bps"].as_u64() > Some(0)
            && rates.len() == 5
            && rates.iter().all(|b| *b == 0))
        .then_some(())
    })
    .await;
    assert_eq!(mute(false).await, 200);
    eventually("the unmuted camera reaching all five again", Duration::from_secs(20), || async {
        let rates = received(&get("/v1/rooms/crowd/stats".into()).await?);
        (rates.len() == 5 && rates.iter().all(|b| *b > 0)).then_some(())
    })
    .await;
    let (bad, missing) = (
        http.post(format!("{base}/v1/rooms/crowd/tracks/{track}/mute"))
            .bearer_auth(&api_key)
            .json(&json!({"muted": "yes"})),
        http.post(format!("{base}/v1/rooms/crowd/tracks/TR_none/mute"))
            .bearer_auth(&api_key)
            .json(&json!({"muted": true})),
    );
    let bad = bad.send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let bad = bad.json::<Value>().await.unwrap();
    assert!(
        bad["error"]["code"] == "invalid_field" && bad["error"]["message"].as_str().unwrap().contains("muted"),
        "{bad}"
    );
    let missing = missing.send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "track_not_found");
}

#[tokio::test]
async fn the_room_page_fits_its_tiles_shows_a_shared_screen_large_switches_devices_and_recovers_by_itself() {
    let _turn = many_tabs_turn().await;
    // Long enough for the SDK's back-off (0.25, 0.5, 1, 2 s) to reach the server again after a
    // cut of about a second on a loaded machine, so what is checked is a resumed session (two
    // seconds ran out under the full suite, and the tab rejoined instead).
    let server = TestServer::start_with("[browser]\nreconnect_grace_s = 8\n", &[]).await;
    let tokens =
        [token(&server, "meet", "ann").await, token(&server, "meet", "ben").await, token(&server, "meet", "cat").await];
    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("meeting.png");
    // Three fake cameras: ann switches to the third (the second, Chromium's fake depth camera,
    // sent no frame a peer could decode when tried).
    let args = json!({
        "base": server.base, "room": "meet", "tokens": tokens, "screenshot": screenshot,
        "chromium_args": ["--use-fake-device-for-media-stream=device-count=3"],
    });
    let result = chromium("meeting.mjs", args).await;
    let num = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("not a number: {v} in {result}"));

    // Three tiles (ann's own first) in a 2×2 grid, all inside the viewport, none overlapping,
    // and the page does not scroll.
    let grid = &result["grid"];
    assert_eq!(grid["grid"]["cols"], 2, "{grid}");
    assert_eq!(grid["scrolls"], false, "{grid}");
    let tiles = grid["tiles"].as_array().unwrap();
    let mut peers: Vec<&str> = tiles.iter().map(|t| t["peer"].as_str().unwrap()).collect();
    assert_eq!(peers[0], "ann", "her own tile first: {grid}");
    peers.sort_unstable();
    assert_eq!(peers, ["ann", "ben", "cat"], "{grid}");
    assert_tiles_within(tiles, &grid["viewport"]);
    let columns: std::collections::BTreeSet<i64> = tiles.iter().map(|t| t["x"].as_i64().unwrap()).collect();
    assert_eq!(columns.len(), 2, "{grid}");
    // The fit for 1 to 16 tiles in a 16:9 box: 1, side by side, 2×2, 3×3, 4×4.
    let expected: Vec<u64> = (1..=16).map(|n| [1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4][n - 1]).collect();
    assert_eq!(result["fits"], json!(expected));

    // One active speaker at a time (the fake microphones all beep: it went round), and no
    // flicker: each one that took it from another kept it for about the 1.5 s hold. The page is
    // sampled, and a loaded machine delays the samples (1343 ms was seen under the full suite):
    // a second rules flicker out without timing the machine.
    let speakers = &result["speakers"];
    assert_eq!(speakers["most"], 1, "{speakers}");
    assert!(speakers["seen"].as_array().unwrap().len() >= 2, "{speakers}");
    for held in speakers["held"].as_array().unwrap() {
        assert!(num(held) >= 1_000.0, "an active speaker held it {held} ms: {speakers}");
    }

    // A phone: at most two columns, every tile on screen, the side panel not beside the call.
    let phone = &result["phone"];
    assert!(num(&phone["grid"]["cols"]) <= 2.0, "{phone}");
    assert_tiles_within(phone["tiles"].as_array().unwrap(), &phone["viewport"]);
    assert_eq!(phone["scrolls"], false, "{phone}");
    let lowest = phone["tiles"].as_array().unwrap().iter().map(|t| num(&t["y"]) + num(&t["h"])).fold(0.0, f64::max);
    assert!(phone["aside"]["shown"] == false || num(&phone["aside"]["y"]) >= lowest, "{phone}");

    // The pickers list the fake devices; the third camera replaced the first on ann's sender
    // without a renegotiation, and ben went on decoding her.
    let pickers = &result["pickers"];
    assert_eq!(pickers["cameras"].as_array().map(Vec::len), Some(3), "{pickers}");
    assert!(pickers["microphones"].as_array().is_some_and(|m| m.len() >= 2), "{pickers}");
    let switched = &result["switched"];
    assert_eq!(switched["device"], pickers["cameras"][2]["id"], "{switched}");
    assert_eq!((&switched["sending"], &switched["renegotiated"]), (&json!(true), &json!(false)), "{switched}");
    assert!(num(&switched["ben"]["after"]) > num(&switched["ben"]["before"]), "ben stopped decoding ann: {switched}");

    // Ann's screen is the stage, for her and for the others: much larger than any camera tile,
    // which sit in a strip beside it; it decodes.
    for tab in ["ann", "ben", "cat"] {
        let view = &result["stage"][tab];
        let stage = &view["stage"][0];
        assert_eq!(stage["peer"], "ann", "{view}");
        assert!(num(&view["stageVideoWidth"]) > 0.0, "{view}");
        let area = |t: &Value| num(&t["w"]) * num(&t["h"]);
        let tiles = view["tiles"].as_array().unwrap();
        assert_eq!(tiles.len(), 3, "{view}");
        for tile in tiles {
            assert!(area(stage) > 4.0 * area(tile), "stage {stage} vs tile {tile}");
        }
        assert_tiles_within(tiles, &view["viewport"]);
        if tab != "ann" {
            let decoding = &view["decoding"];
            assert!(num(&decoding["after"]) > num(&decoding["before"]), "{tab} on ann's screen: {decoding}");
        }
    }

    // Cat offline with its socket cut: the banner says so, then goes by itself; the session
    // resumed and cat decodes ann again.
    let reconnect = &result["reconnect"];
    assert_eq!(reconnect["during"], json!({"shown": true, "text": "Reconnecting…"}), "{reconnect}");
    assert_eq!(reconnect["after"]["shown"], false, "{reconnect}");
    assert_eq!(reconnect["resumedSession"], true, "{reconnect}");
    assert!(num(&reconnect["decoding"]["after"]) > num(&reconnect["decoding"]["before"]), "{reconnect}");
    // An ICE restart: new credentials both ways, media flowing again.
    let restart = &result["restart"];
    assert_ne!(restart["after"]["local"], restart["before"]["local"], "{restart}");
    assert_ne!(restart["after"]["remote"], restart["before"]["remote"], "{restart}");
    assert_eq!(restart["state"], "connected", "{restart}");
    assert!(num(&restart["decoding"]["after"]) > num(&restart["decoding"]["before"]), "{restart}");

    println!(
        "active speaker held {} ms between changes; ben's stage {}x{} beside camera tiles {}x{}; \
         ben decoded ann's third camera {} -> {} frames; {} reconnect attempts while offline",
        speakers["held"],
        result["stage"]["ben"]["stage"][0]["w"],
        result["stage"]["ben"]["stage"][0]["h"],
        result["stage"]["ben"]["tiles"][0]["w"],
        result["stage"]["ben"]["tiles"][0]["h"],
        switched["ben"]["before"],
        switched["ben"]["after"],
        result["offline"],
    );
    assert_eq!(result["errors"], json!([null, null, null]), "{result}");
    // Nothing in any console but Chromium's report of the reconnect attempts made offline.
    assert_eq!(result["logs"], json!([]), "{result}");
    assert!(std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 10_000), "screenshot at {}", screenshot.display());
    server.wait_for_no_peers().await;
    wait_for_no_sessions(&server).await;
}

/// Every tile box lies inside the viewport, and no two overlap.
fn assert_tiles_within(tiles: &[Value], viewport: &Value) {
    let bounds =
        |t: &Value| ["x", "y", "w", "h"].map(|k| t[k].as_i64().unwrap_or_else(|| panic!("tile {t} has no {k}")));
    let (width, height) = (viewport["w"].as_i64().unwrap(), viewport["h"].as_i64().unwrap());
    for (i, a) in tiles.iter().enumerate() {
        let [x, y, w, h] = bounds(a);
        assert!(w > 0 && h > 0 && x >= 0 && y >= 0 && x + w <= width && y + h <= height, "tile {a} outside {viewport}");
        for b in &tiles[i + 1..] {
            let [bx, by, bw, bh] = bounds(b);
            assert!(x + w <= bx || bx + bw <= x || y + h <= by || by + bh <= y, "tiles {a} and {b} overlap");
        }
    }
}
