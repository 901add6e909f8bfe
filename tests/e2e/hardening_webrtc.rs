//! Issue 12 against the real binary, for the WebRTC surfaces: while a WHEP viewer (the `webrtc`
//! crate) decodes a WHIP publisher's H.264, byte for byte, an attacker sends what it can without
//! credentials — STUN checks with a guessed ufrag or a bad integrity, the RTP header-extension
//! bomb, truncated and absurd-length RTCP at the media port — and, with a token, oversized SDP to
//! WHIP and WHEP, an oversized WebSocket message, a socket that never joins, an offer with
//! hundreds of candidates over `/ws`, and a WHEP session that never connects. Datagrams are
//! dropped silently (counted); every signalling refusal is the protocol's own (HTTP 4xx JSON,
//! a WebSocket `error` and close code); the never-connecting WHEP resource is deleted at the
//! connect deadline; the viewer never stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::UdpSocket;

use crate::support::browser::{WsClient, metric, metrics};
use crate::support::webrtc_client::synthetic::{self, VIDEO_FRAME};
use crate::support::webrtc_client::{ClientOptions, MediaKind, WhepViewer, WhipPublisher};
use crate::support::{TestServer, eventually};
use crate::whip_http::offer;

/// The RTP header-extension bomb: a one-byte element of 16 bytes in a one-word block.
const EXTENSION_BOMB: [u8; 20] =
    [0x90, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0xbe, 0xde, 0x00, 0x01, 0x1f, 0x00, 0x00, 0x00];

/// A STUN binding request for `username` whose MESSAGE-INTEGRITY is 20 bytes nobody computed.
fn forged_check(username: &str) -> Vec<u8> {
    let mut attributes = Vec::new();
    attributes.extend_from_slice(&[0x00, 0x06]);
    attributes.extend_from_slice(&(username.len() as u16).to_be_bytes());
    attributes.extend_from_slice(username.as_bytes());
    while attributes.len() % 4 != 0 {
        attributes.push(0);
    }
    attributes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff]); // PRIORITY
    attributes.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]); // MESSAGE-INTEGRITY
    attributes.extend_from_slice(&[0x42; 20]);
    let mut message = vec![0x00, 0x01];
    message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    message.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    message.extend_from_slice(&rand::random::<[u8; 12]>());
    message.extend_from_slice(&attributes);
    message
}

/// Malformed media an attacker sends at the port.
fn hostile_media() -> Vec<Vec<u8>> {
    vec![
        EXTENSION_BOMB.to_vec(),
        [&EXTENSION_BOMB[..], &[0u8; 16]].concat(),
        // Truncated RTCP, and RTCP whose length runs far past the datagram.
        vec![0x80, 201, 0x00, 0x01, 1, 2, 3],
        [&[0x80u8, 200, 0xff, 0xff, 1, 2, 3, 4][..], &[0xaa; 30][..]].concat(),
        // Fifteen CSRCs announced in a bare header; garbage.
        vec![0x8f, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1],
        vec![0xff; 64],
    ]
}

/// Sends H.264 frames (a keyframe every 30) at 30 fps until `stop`.
fn pump(publisher: Arc<WhipPublisher>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(VIDEO_FRAME);
        let mut index = 0;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            let frame = if index % 30 == 0 { synthetic::h264_keyframe(index) } else { synthetic::h264_delta(index) };
            publisher.send_video(frame, VIDEO_FRAME).await.expect("send video");
            index += 1;
        }
        index
    })
}

/// The next 20 frames the viewer decodes (within 5 s), each checked against what was sent for
/// its index; returns the highest index seen.
async fn assert_viewer_decodes(viewer: &mut WhepViewer, after: u32, when: &str) -> u32 {
    viewer.discard_received();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut indexes = Vec::new();
    while indexes.len() < 20
        && let Some(frame) = viewer
            .next_frame_of(MediaKind::Video, deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
    {
        let index = synthetic::assert_h264_unchanged(&frame.payload, 30, when);
        indexes.push(index);
    }
    assert!(indexes.len() >= 20, "{when}: the viewer decoded only {} frames: {indexes:?}", indexes.len());
    let last = *indexes.last().unwrap();
    assert!(last > after, "{when}: frames moved on from {after}");
    last
}

async fn post(server: &TestServer, path: &str, bearer: &str, body: String) -> (StatusCode, Value, String) {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(bearer)
        .header("content-type", "application/sdp")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let location = response.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)), location)
}

fn dropped(metrics: &str, reason: &str) -> f64 {
    metric(metrics, &format!("junction_webrtc_udp_dropped_total{{reason=\"{reason}\"}}")).unwrap_or(0.0)
}

#[tokio::test]
async fn hostile_webrtc_input_is_refused_while_a_whep_viewer_keeps_decoding() {
    let server = TestServer::start_with("[webrtc]\nconnect_timeout_s = 3\n[browser]\njoin_timeout_s = 2\n", &[]).await;
    let publisher_token = server.token("stage", "obs", json!({"publish": true, "subscribe": false})).await;
    let viewer_token = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;
    let publisher = Arc::new(
        WhipPublisher::connect(&server.base, "stage", &publisher_token, ClientOptions::h264_opus())
            .await
            .expect("WHIP"),
    );
    let mut viewer =
        WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus()).await.expect("WHEP");
    let stop = Arc::new(AtomicBool::new(false));
    let pumping = pump(publisher.clone(), stop.clone());
    let mut seen = assert_viewer_decodes(&mut viewer, 0, "before the attacks").await;

    // A WHEP session that will never connect: its answer names a real ufrag to forge checks for.
    let (status, answer, location) =
        post(&server, "/whep/stage", &viewer_token, offer("recvonly", "opus/48000/2", "VP8")).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let answer = answer.as_str().expect("an SDP answer").to_owned();
    let ufrag = answer.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).expect("ufrag").to_owned();

    // Datagrams at the media port, from a socket of no session.
    let media: SocketAddr = server.service("webrtc").trim_start_matches("udp://").parse().expect("media address");
    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let before = metrics(&server).await;
    for round in 0..100 {
        attacker.send_to(&forged_check(&format!("{ufrag}:abcd")), media).await.unwrap();
        attacker.send_to(&forged_check(&format!("guess{round}:abcd")), media).await.unwrap();
        for datagram in hostile_media() {
            attacker.send_to(&datagram, media).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen = assert_viewer_decodes(&mut viewer, seen, "during the UDP attack").await;
    let after = metrics(&server).await;
    for reason in ["bad_integrity", "unknown_ufrag", "rtp", "rtcp", "unknown"] {
        assert!(dropped(&after, reason) >= dropped(&before, reason) + 100.0, "{reason} drops counted:\n{after}");
    }

    // The never-connecting WHEP resource is deleted at the connect deadline.
    eventually("the unconnected WHEP resource to be deleted", Duration::from_secs(10), || async {
        let response = reqwest::Client::new()
            .patch(server.url(&location))
            .bearer_auth(&viewer_token)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .body("a=end-of-candidates\r\n")
            .send()
            .await
            .ok()?;
        (response.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;

    // Oversized SDP: 413 for the body, 400 for thousands of m-lines in a body under the cap.
    let (status, body, _) = post(&server, "/whip/stage", &publisher_token, "v".repeat(300 * 1024)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("sdp_too_large")));
    let mut crowded = offer("recvonly", "opus/48000/2", "VP8");
    crowded.push_str(&"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n".repeat(3000));
    let (status, body, _) = post(&server, "/whep/stage", &viewer_token, crowded).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_media_lines")),
        "{body}"
    );

    // /ws: an offer with hundreds of candidates, an oversized message, a socket that never joins.
    let ws_token = server.token("side", "mallory", json!({})).await;
    let (mut joined, _) = WsClient::join(&server, &ws_token).await;
    let candidates = "a=candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host\r\n".repeat(500);
    joined.send(json!({"type": "offer", "id": 7, "sdp": format!("{}{candidates}", offer("sendrecv", "opus/48000/2", "VP8"))})).await;
    let error = joined.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_i64()), (Some("limit_exceeded"), Some(7)), "{error}");
    joined.send_text(&json!({"type": "ping", "data": "x".repeat(300 * 1024)}).to_string()).await;
    let error = joined.expect("error").await;
    assert_eq!(error["code"], "message_too_large", "{error}");
    assert_eq!(joined.closed().await, Some(1009));
    let mut idle = WsClient::connect(&server, &format!("token={ws_token}")).await;
    let closed = idle.expect("closed").await;
    assert_eq!(closed["reason"], "join_timeout", "{closed}");
    assert_eq!(idle.closed().await, Some(4015));

    assert_viewer_decodes(&mut viewer, seen, "after the signalling attacks").await;
    stop.store(true, Ordering::Relaxed);
    pumping.await.unwrap();
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "no task panicked:\n{logs}");
}
