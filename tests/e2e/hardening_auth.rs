//! Least privilege for credentials, against the real binary: a room-admin token cannot mint a
//! token with more grants or a later expiry than its own (the token half of attack 3 in issue
//! 12); API keys rotate (a token signed by a removed key is refused, one signed by the new key
//! works); a session ends when its token expires while the others go on, content checked; one
//! token holds a bounded number of live sessions.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::browser::WsClient;
use crate::support::webrtc_client::synthetic::{self, VIDEO_FRAME};
use crate::support::webrtc_client::{ClientError, ClientOptions, MediaKind, WhepViewer, WhipPublisher};
use crate::support::{TestServer, eventually};

const THIRTY_DAYS: u64 = 30 * 24 * 3600;

/// The JSON of a JWT's header (0) or payload (1).
fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// `POST /v1/rooms/{room}/tokens` with `bearer`: (status, body).
async fn mint(server: &TestServer, bearer: &str, room: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/v1/rooms/{room}/tokens")))
        .bearer_auth(bearer)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `GET /v1/rooms/{room}` with `bearer`: the status.
async fn get_room(server: &TestServer, bearer: &str, room: &str) -> u16 {
    let response = reqwest::Client::new().get(server.url(&format!("/v1/rooms/{room}"))).bearer_auth(bearer).send();
    response.await.expect("request").status().as_u16()
}

#[tokio::test]
async fn a_room_admin_token_mints_only_tokens_within_its_own_rights() {
    let server = TestServer::start().await;
    let (status, moderator) = mint(
        &server,
        &server.api_key,
        "standup",
        json!({"identity": "moderator", "grants": {"admin": true}, "ttl_s": 600}),
    )
    .await;
    assert_eq!(status, 201, "{moderator}");
    let moderator = moderator["token"].as_str().unwrap().to_owned();
    let own_exp = jwt_part(&moderator, 1)["exp"].as_u64().unwrap();
    assert_eq!(jwt_part(&moderator, 0)["kid"], "default", "the header names the signing key");

    // The attack: a moderator's token minting a 30-day admin token.
    let (status, body) = mint(
        &server,
        &moderator,
        "standup",
        json!({"identity": "mallory", "grants": {"admin": true}, "ttl_s": THIRTY_DAYS}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "token_escalation");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("expiry") && message.contains(&own_exp.to_string()), "{message}");

    // More grants than it holds: the phone-call grant is named.
    let (status, body) = mint(
        &server,
        &moderator,
        "standup",
        json!({"identity": "mallory", "grants": {"admin": true, "sip_call": true}, "ttl_s": 60}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("grants not held: sip_call"), "{body}");
    // Another room is out of reach altogether.
    let (status, _) = mint(&server, &moderator, "board", json!({"identity": "mallory", "ttl_s": 60})).await;
    assert_eq!(status, 403);

    // A subset, within its lifetime, is fine.
    let guest_grants = json!({"publish": false, "subscribe": true});
    let (status, body) =
        mint(&server, &moderator, "standup", json!({"identity": "guest", "grants": guest_grants, "ttl_s": 60})).await;
    assert_eq!(status, 201, "{body}");
    let guest = jwt_part(body["token"].as_str().unwrap(), 1);
    assert_eq!(guest["grants"]["subscribe"], true);
    assert_eq!(guest["grants"]["admin"], false);
    assert_eq!(guest["exp"].as_u64().unwrap() - guest["iat"].as_u64().unwrap(), 60);
    assert!(guest["jti"].as_str().unwrap().starts_with("TK_"), "a token id is stamped: {guest}");

    // Without ttl_s, a client's token lives no longer than its own; a co-moderator it mints
    // cannot extend the chain either.
    let (status, body) =
        mint(&server, &moderator, "standup", json!({"identity": "co-mod", "grants": {"admin": true}})).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["expires_in_s"].as_u64().unwrap() <= 600, "{body}");
    let co_moderator = body["token"].as_str().unwrap().to_owned();
    assert!(jwt_part(&co_moderator, 1)["exp"].as_u64().unwrap() <= own_exp);
    let (status, _) =
        mint(&server, &co_moderator, "standup", json!({"identity": "x", "grants": {"admin": true}, "ttl_s": 3600}))
            .await;
    assert_eq!(status, 403);

    // The operator is bound only by the maximum lifetime.
    let (status, body) = mint(
        &server,
        &server.api_key,
        "standup",
        json!({"identity": "host", "grants": {"admin": true, "sip_call": true}, "ttl_s": THIRTY_DAYS}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(server.logs().contains("token minting refused"), "refusals are logged");
}

const OLD_KEY: &str = "old-key-2024-0123456789abcdef";
const NEW_KEY: &str = "new-key-2025-0123456789abcdef";

#[tokio::test]
async fn a_token_signed_by_a_removed_key_is_refused_while_the_new_key_works() {
    // Both keys configured, the old one still signing.
    let both = format!(
        "[auth]\nsigning_key = \"2024\"\nkeys = [{{id = \"2024\", secret = \"{OLD_KEY}\"}}, {{id = \"2025\", secret = \"{NEW_KEY}\"}}]\n"
    );
    let server = TestServer::start_with_keys(&both, OLD_KEY).await;
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "rot"}))).await;
    let old_token = server.token("rot", "moderator", json!({"admin": true})).await;
    assert_eq!(jwt_part(&old_token, 0)["kid"], "2024");
    assert_eq!(get_room(&server, &old_token, "rot").await, 200);
    assert_eq!(get_room(&server, NEW_KEY, "rot").await, 200, "every configured key opens the API");
    assert_eq!(server.stop().await, Some(0));

    // The old key removed.
    let only_new = format!("[auth]\nkeys = [{{id = \"2025\", secret = \"{NEW_KEY}\"}}]\n");
    let server = TestServer::start_with_keys(&only_new, NEW_KEY).await;
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "rot"}))).await;
    assert_eq!(get_room(&server, &old_token, "rot").await, 401, "signed by a key that is gone");
    assert_eq!(get_room(&server, OLD_KEY, "rot").await, 401, "the old key no longer opens the API");
    let new_token = server.token("rot", "moderator", json!({"admin": true})).await;
    assert_eq!(jwt_part(&new_token, 0)["kid"], "2025");
    assert_eq!(get_room(&server, &new_token, "rot").await, 200);
    // Transports refuse it too, with the reason.
    let (status, body) = whep_refusal(&server, "rot", &old_token).await;
    assert_eq!(status, 401);
    assert!(body.contains("2024") && body.contains("does not hold"), "the refusal names the key: {body}");
}

/// A WHEP request that is refused before any SDP is looked at: (status, body).
async fn whep_refusal(server: &TestServer, room: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/whep/{room}")))
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body("v=0\r\n")
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

/// Publishes `count` H.264 frames at real time, a keyframe every 15, indexes from `first`.
async fn publish_video(publisher: &WhipPublisher, first: u32, count: u32) {
    let mut ticker = tokio::time::interval(VIDEO_FRAME);
    for index in first..first + count {
        ticker.tick().await;
        let frame = if (index - first).is_multiple_of(15) {
            synthetic::h264_keyframe(index)
        } else {
            synthetic::h264_delta(index)
        };
        publisher.send_video(frame, VIDEO_FRAME).await.expect("send video");
    }
}

/// Video frame indexes a viewer receives within `window`.
async fn video_indexes(viewer: &mut WhepViewer, window: Duration) -> Vec<u32> {
    let deadline = Instant::now() + window;
    let mut indexes = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match viewer.next_frame_of(MediaKind::Video, left).await {
            Some(frame) => indexes.extend(synthetic::h264_index(&frame.payload)),
            None => break,
        }
    }
    indexes
}

async fn identities(server: &TestServer, room: &str) -> Vec<String> {
    let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    body["peers"].as_array().map_or_else(Vec::new, |peers| {
        peers.iter().map(|p| p["identity"].as_str().unwrap_or_default().to_owned()).collect()
    })
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires_while_another_goes_on() {
    let server = TestServer::start().await;
    let room = "expiring";
    let encoder = server.token(room, "encoder", json!({"publish": true, "subscribe": false})).await;
    let watcher = server.token(room, "watcher", json!({"publish": false})).await;
    let short_ttl = |identity: &str| json!({"identity": identity, "grants": {"publish": false}, "ttl_s": 4});
    let (_, short_viewer) =
        server.call(Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(short_ttl("brief"))).await;
    let (_, short_socket) =
        server.call(Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(short_ttl("brief-ws"))).await;
    let minted = Instant::now();

    let publisher =
        WhipPublisher::connect(&server.base, room, &encoder, ClientOptions::h264_opus()).await.expect("WHIP");
    let brief = WhepViewer::connect(
        &server.base,
        room,
        short_viewer["token"].as_str().unwrap(),
        "",
        ClientOptions::h264_opus(),
    )
    .await
    .expect("WHEP with the short token");
    let mut lasting =
        WhepViewer::connect(&server.base, room, &watcher, "", ClientOptions::h264_opus()).await.expect("WHEP");
    let (mut socket, _) = WsClient::join(&server, short_socket["token"].as_str().unwrap()).await;

    let checks = async {
        // Both short-token sessions end at their expiry: the viewer's DTLS is closed, the
        // socket is told why and closed with the code for it.
        brief.wait_disconnected(Duration::from_secs(12)).await.expect("the expired viewer is disconnected");
        let ended_after = minted.elapsed();
        let closed = socket.expect("closed").await;
        assert_eq!(closed["reason"], "credential_expired", "{closed}");
        assert_eq!(socket.closed().await, Some(4014));
        // Meanwhile the other viewer keeps getting the publisher's frames.
        lasting.discard_received();
        let after = video_indexes(&mut lasting, Duration::from_secs(1)).await;
        (ended_after, after)
    };
    let ((ended_after, after), ()) = tokio::join!(checks, publish_video(&publisher, 0, 300));
    assert!(ended_after >= Duration::from_secs(3), "not before the token expired ({ended_after:?})");
    assert!(after.len() >= 15, "the other viewer got {} frames after the expiry", after.len());
    assert!(after.windows(2).all(|w| w[1] > w[0]), "in order: {after:?}");

    let present = identities(&server, room).await;
    assert!(present.contains(&"watcher".to_owned()) && present.contains(&"encoder".to_owned()), "{present:?}");
    assert!(!present.iter().any(|p| p.starts_with("brief")), "{present:?}");
    assert!(server.logs().contains("credential_expired"), "the ending is logged with its reason");
}

async fn watch(base: &str, room: &str, token: &str) -> Result<WhepViewer, ClientError> {
    WhepViewer::connect(base, room, token, "", ClientOptions::h264_opus()).await
}

#[tokio::test]
async fn one_token_holds_at_most_the_configured_sessions() {
    let server = TestServer::start_with("[auth]\nmax_sessions_per_token = 2\n", &[]).await;
    let room = "capped";
    let encoder = server.token(room, "encoder", json!({"publish": true, "subscribe": false})).await;
    let shared = server.token(room, "audience", json!({"publish": false})).await;
    let other = server.token(room, "critic", json!({"publish": false})).await;
    let publisher =
        WhipPublisher::connect(&server.base, room, &encoder, ClientOptions::h264_opus()).await.expect("WHIP");

    let base = server.base.as_str();
    let mut first = watch(base, room, &shared).await.expect("first session of the shared token");
    let _second = watch(base, room, &shared).await.expect("second session of the shared token");
    match watch(base, room, &shared).await {
        Err(ClientError::Http { status, body }) => {
            assert_eq!(status, 429, "{body}");
            assert!(body.contains("too_many_sessions"), "{body}");
        }
        Err(err) => panic!("the third session failed otherwise: {err}"),
        Ok(_) => panic!("a third session of the shared token was let in"),
    }
    let mut critic = watch(base, room, &other).await.expect("another token is not affected");

    let checks = async {
        let (a, b) = tokio::join!(
            video_indexes(&mut first, Duration::from_millis(1500)),
            video_indexes(&mut critic, Duration::from_millis(1500))
        );
        assert!(a.len() >= 20 && b.len() >= 20, "frames: {} and {}", a.len(), b.len());
        // A session ending gives its place back.
        assert_eq!(first.delete().await.unwrap(), 200);
        eventually("the seat is free", Duration::from_secs(5), || async { watch(base, room, &shared).await.ok() }).await
    };
    let (_third, ()) = tokio::join!(checks, publish_video(&publisher, 0, 90));
    assert!(server.logs().contains("join refused"), "the refusal is logged");
}

/// Reads what the server sends until it closes the connection or `wait` passes; `None` when it
/// was still open then.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

async fn raw(server: &TestServer, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = server.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

#[tokio::test]
async fn the_http_port_bounds_connections_request_heads_and_slow_requests() {
    let config =
        "[http]\nmax_connections = 3\nmax_header_bytes = 8192\nheader_read_timeout_s = 2\nrequest_timeout_s = 1\n";
    let server = TestServer::start_with(config, &[]).await;
    let healthy = || async { reqwest::get(server.url("/healthz")).await.map(|r| r.status().as_u16()).ok() };

    // A request head larger than the limit: 431, and the server goes on.
    let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(10_000));
    let mut stream = raw(&server, big.as_bytes()).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await.expect("closed after the answer");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Slowloris: half a request head, then nothing. The connection is dropped after the
    // head-read timeout; another client is served meanwhile.
    let started = Instant::now();
    let mut slow = raw(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert_eq!(healthy().await, Some(200));
    assert!(read_until_closed(&mut slow, Duration::from_secs(6)).await.is_some(), "the slow client is cut off");
    let cut_after = started.elapsed();
    assert!(cut_after >= Duration::from_millis(1_500), "not before the timeout ({cut_after:?})");

    // A body that never finishes: 408 JSON after the request timeout.
    let head = format!(
        "POST /v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        server.api_key
    );
    let mut stalled = raw(&server, head.as_bytes()).await;
    let answer = read_until_closed(&mut stalled, Duration::from_secs(5)).await.unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("request_timeout"), "{answer}");

    // Connections past the cap are closed at once; a freed place is taken again.
    let held: Vec<_> = futures::future::join_all((0..3).map(|_| raw(&server, b""))).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = raw(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = read_until_closed(&mut fourth, Duration::from_secs(1)).await.expect("closed at once");
    assert!(answer.is_empty(), "no answer past the cap: {answer}");
    drop(held);
    let served = eventually("a place is free again", Duration::from_secs(5), || async { healthy().await }).await;
    assert_eq!(served, 200);
    assert!(server.logs().contains("http.max_connections"), "the refusal is logged");
}
