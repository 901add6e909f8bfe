//! Hardening of the media ingest (issue 12, attacks 1 and 4), against the real binary: while real
//! ffmpeg publishes H.264 and an AAC tone over RTMP and an independent WebRTC client (the
//! `webrtc` crate) watches that room over WHEP, two attackers strike on other connections:
//! - the AMF0 bomb: one RTMP command message of strict arrays nested 20 000 deep (the AMF0
//!   decoder under rml_rtmp recurses once per level; this used to overflow a worker's stack and
//!   abort the process) — its connection is told `NetStream.Failed` and closed;
//! - an AAC sequence header with an explicit 1 Hz sample rate, from a valid ingress key (it used
//!   to make the AAC->Opus transcoder resample each frame to ~49 M samples) — refused with
//!   `NetStream.Failed` and closed before any track is published.
//!
//! Meanwhile the viewer keeps decoding: ffmpeg decodes the H.264 it received during the attacks,
//! and the tone is found in its Opus.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::rtmp::{TONE_HZ, ffmpeg_push, ingress};
use crate::support::audio::{assert_tone, opus_to_pcm};
use crate::support::rtmp_client::{RtmpClient, host_of};
use crate::support::webrtc_client::{ClientOptions, MediaKind, WhepViewer};
use crate::support::x264::frame_md5s;
use crate::support::{TestServer, eventually};

/// Tracks the peers of `room` publish, as the REST API lists them.
async fn track_count(server: &TestServer, room: &str) -> usize {
    let (_, body) = server.call(reqwest::Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    body["peers"].as_array().into_iter().flatten().map(|p| p["tracks"].as_array().map_or(0, Vec::len)).sum()
}

/// The attack 1, byte for byte: the handshake (C0 `03`, C1 of 1536 zero bytes, C2 = S1),
/// then one AMF0 command message (type 20) on chunk stream 3 in 128-byte chunks whose payload is
/// `0A 00 00 00 01` 20 000 times. Returns what the server sent after the handshake and whether
/// it closed the connection within 10 s.
async fn land_amf0_bomb(rtmp_url: String) -> (Vec<u8>, bool) {
    let mut socket = TcpStream::connect(host_of(&rtmp_url)).await.expect("TCP connect");
    let mut c0c1 = vec![0x03];
    c0c1.extend([0u8; 1536]);
    socket.write_all(&c0c1).await.expect("C0+C1");
    let mut s0s1s2 = vec![0u8; 1 + 1536 + 1536];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut s0s1s2))
        .await
        .expect("S0+S1+S2 in time")
        .expect("S0+S1+S2");
    assert_eq!(s0s1s2[0], 3, "RTMP version 3");
    socket.write_all(&s0s1s2[1..1537]).await.expect("C2");

    let payload = [0x0a, 0, 0, 0, 1].repeat(20_000);
    let mut message = vec![0x03, 0, 0, 0];
    message.extend(&(payload.len() as u32).to_be_bytes()[1..]);
    message.push(20);
    message.extend([0, 0, 0, 0]);
    for (i, chunk) in payload.chunks(128).enumerate() {
        if i > 0 {
            message.push(0xc3);
        }
        message.extend(chunk);
    }
    // The server may close while the bomb is still being written.
    let _ = socket.write_all(&message).await;

    let mut received = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await
    .is_ok();
    (received, closed)
}

/// The attack 4: a valid ingress key publishes `AF 00 17 80 00 00 88` (AAC-LC, explicit
/// 1 Hz sample rate) as its AAC sequence header, then ordinary AAC frames. Returns the status
/// codes the server sent and whether it closed the connection.
async fn land_one_hz_aac(rtmp_url: &str, key: &str) -> (Vec<String>, bool) {
    let mut client = RtmpClient::connect(rtmp_url, "live").await;
    assert!(client.connected(), "connect accepted");
    client.publish(key).await.expect("a valid ingress key may publish");
    client.send_audio(0, Bytes::from_static(&[0xaf, 0x00, 0x17, 0x80, 0x00, 0x00, 0x88])).await;
    for n in 1..20u32 {
        client.send_audio(n * 128, Bytes::from_static(&[0xaf, 0x01, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c])).await;
    }
    let closed = client.wait_closed(Duration::from_secs(10)).await;
    (client.status_codes(), closed)
}

#[tokio::test]
async fn rtmp_attacks_end_only_their_connection_while_a_whep_viewer_keeps_watching() {
    let server = TestServer::start().await;
    let (stage_key, url) = ingress(&server, "stage", "obs").await;
    let (attacker_key, _) = ingress(&server, "lobby", "mallory").await;

    let mut ffmpeg = ffmpeg_push(&format!("{url}/{stage_key}"), 14);
    eventually("ffmpeg's two tracks in the room", Duration::from_secs(15), || async {
        (track_count(&server, "stage").await == 2).then_some(())
    })
    .await;
    let viewer_token = server.token("stage", "viewer", json!({"subscribe": true, "publish": false})).await;
    let mut viewer = WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("WHEP view");
    assert!(viewer.next_frame_of(MediaKind::Video, Duration::from_secs(10)).await.is_some(), "the viewer sees video");
    viewer.discard_received();

    // Both attacks land while the viewer watches.
    let bomb = tokio::spawn(land_amf0_bomb(url.clone()));
    let one_hz = tokio::spawn({
        let (url, key) = (url.clone(), attacker_key.clone());
        async move { land_one_hz_aac(&url, &key).await }
    });
    let (mut video, mut audio) = (Vec::new(), Vec::new());
    let window = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < window {
        let Some(frame) = viewer.next_frame(Duration::from_secs(2)).await else { break };
        match frame.kind() {
            MediaKind::Video => video.extend_from_slice(&frame.payload),
            MediaKind::Audio => audio.push(frame.payload.clone()),
        }
    }
    let (bomb_reply, bomb_closed) = bomb.await.expect("bomb task");
    let (one_hz_codes, one_hz_closed) = one_hz.await.expect("1 Hz task");

    // The attacked connections got RTMP's own error and were closed.
    assert!(bomb_closed, "the bomb's connection was closed");
    let reply = String::from_utf8_lossy(&bomb_reply);
    assert!(reply.contains("onStatus") && reply.contains("NetStream.Failed"), "the bomb was told why: {reply:?}");
    assert_eq!(one_hz_codes, vec!["NetStream.Failed".to_owned()], "the 1 Hz publisher's status");
    assert!(one_hz_closed, "the 1 Hz publisher's connection was closed");
    assert_eq!(track_count(&server, "lobby").await, 0, "no track was published from the 1 Hz header");

    // The process is alive and the viewer kept decoding the unrelated stream throughout.
    assert_eq!(server.health().await["status"], Value::from("ok"), "the server is alive");
    let file = server.dir().join("during-attacks.h264");
    std::fs::write(&file, &video).unwrap();
    let decoded = frame_md5s(&file).await.len();
    assert!(decoded >= 120, "the WHEP viewer decoded {decoded} frames of 30 fps video in the 6 s of the attacks");
    assert!(audio.len() >= 200, "{} Opus packets in 6 s", audio.len());
    let found = assert_tone(&opus_to_pcm(&audio, 1), 1, 48_000, TONE_HZ, 10.0);
    println!("during the attacks: {decoded} frames decoded, tone {found:.1} Hz");

    let logs = server.logs();
    assert!(
        logs.contains("nested more than 32 deep") || logs.contains("AMF message of 100000 bytes"),
        "the bomb is logged"
    );
    assert!(logs.contains("AAC sample rate 1 Hz"), "the 1 Hz header is logged");

    let _ = ffmpeg.kill().await;
    assert_eq!(viewer.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}
