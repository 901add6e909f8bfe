//! WHIP ingest and WHEP egress against an independent WebRTC stack (the `webrtc` crate):
//! frames published over WHIP arrive over WHEP with the same payload bytes and monotonic
//! timestamps, keyframe requests travel from viewer to publisher, viewers may come first and
//! follow a reconnecting publisher, and every way a session ends releases its peer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::webrtc_client::synthetic::{self, AUDIO_FRAME, VIDEO_FRAME};
use crate::support::webrtc_client::{
    CLIENT_USER_AGENT, ClientCodec, ClientOptions, MediaKind, ReceivedFrame, WhepViewer, WhipPublisher,
};
use crate::support::{TestServer, eventually};

const WAIT: Duration = Duration::from_secs(10);

/// Sends `count` video frames (a keyframe every `gop`) and, alongside, Opus packets, pacing at
/// real time. Frame indexes start at `first`. Returns when each frame was sent, by index.
pub(crate) async fn send_media(publisher: &WhipPublisher, first: u32, count: u32, gop: u32) -> HashMap<u32, Instant> {
    let mut sent = HashMap::new();
    let mut ticker = tokio::time::interval(VIDEO_FRAME);
    let mut audio_index = first;
    let started = Instant::now();
    for index in first..first + count {
        ticker.tick().await;
        let frame = if (index - first).is_multiple_of(gop) {
            synthetic::h264_keyframe(index)
        } else {
            synthetic::h264_delta(index)
        };
        sent.insert(index, Instant::now());
        publisher.send_video(frame, VIDEO_FRAME).await.expect("send video");
        // Audio keeps pace: 20 ms packets against 33 ms frames.
        while started.elapsed() >= AUDIO_FRAME * (audio_index - first) {
            publisher.send_audio(synthetic::opus_packet(audio_index), AUDIO_FRAME).await.expect("send audio");
            audio_index += 1;
        }
    }
    sent
}

/// Collects what arrives until `quiet` passes without a frame.
pub(crate) async fn collect(viewer: &mut WhepViewer, quiet: Duration) -> Vec<ReceivedFrame> {
    let mut frames = Vec::new();
    while let Some(frame) = viewer.next_frame(quiet).await {
        frames.push(frame);
    }
    frames
}

pub(crate) fn of_kind(frames: &[ReceivedFrame], kind: MediaKind) -> Vec<&ReceivedFrame> {
    frames.iter().filter(|f| f.kind() == kind).collect()
}

/// RTP timestamps strictly increase (modulo 2^32) across consecutive frames.
fn assert_monotonic(frames: &[&ReceivedFrame], what: &str) {
    for pair in frames.windows(2) {
        let step = pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp);
        assert!(
            step > 0 && step < 1 << 31,
            "{what}: timestamp went from {} to {}",
            pair[0].rtp_timestamp,
            pair[1].rtp_timestamp
        );
    }
}

/// CPU seconds the server process used so far (`process_cpu_seconds` on `/metrics`).
async fn server_cpu_seconds(server: &TestServer) -> f64 {
    let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix("process_cpu_seconds ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

async fn live_peers(server: &TestServer) -> u64 {
    server.health().await["peers"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn whip_frames_reach_a_whep_viewer_unchanged_and_keyframe_requests_travel_back() {
    let server = TestServer::start().await;
    let publisher_token = server.token("stage", "obs", json!({"publish": true, "subscribe": false})).await;
    let viewer_token = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;

    let publisher = WhipPublisher::connect(&server.base, "stage", &publisher_token, ClientOptions::h264_opus())
        .await
        .expect("WHIP publish");
    let mut viewer = WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("WHEP view");
    assert!(publisher.resource().contains("/whip/stage/"), "{}", publisher.resource());
    assert!(viewer.resource().contains("/whep/stage/"), "{}", viewer.resource());

    let room = server.call(reqwest::Method::GET, "/v1/rooms/stage", None).await.1;
    let transports: Vec<&str> =
        room["room"]["peers"].as_array().unwrap().iter().map(|p| p["transport"].as_str().unwrap()).collect();
    assert_eq!(transports.len(), 2, "{room}");
    assert!(transports.contains(&"whip") && transports.contains(&"whep"), "{room}");
    // Each names the client software its offer's request came from.
    for peer in room["room"]["peers"].as_array().unwrap() {
        assert_eq!(peer["client"], CLIENT_USER_AGENT, "{room}");
    }

    let cpu_before = server_cpu_seconds(&server).await;
    let sent = send_media(&publisher, 0, 90, 30).await;
    let cpu_used = server_cpu_seconds(&server).await - cpu_before;
    let frames = collect(&mut viewer, Duration::from_secs(2)).await;
    println!("server CPU while forwarding 3 s of H.264 (30 fps) + Opus to one viewer: {:.0} ms", cpu_used * 1000.0);

    let video = of_kind(&frames, MediaKind::Video);
    assert!(video.len() >= 45, "only {} of 90 video frames arrived", video.len());
    assert!(video[0].keyframe, "video starts on a keyframe");
    let mut latencies = Vec::new();
    for frame in &video {
        assert_eq!(frame.codec, ClientCodec::H264);
        let index = synthetic::assert_h264_unchanged(&frame.payload, 30, "changed on the way");
        assert_eq!(frame.keyframe, index.is_multiple_of(30));
        latencies.push(frame.received_at.saturating_duration_since(sent[&index]));
    }
    assert_monotonic(&video, "video");
    // 30 fps on a 90 kHz clock: consecutive frames are 3000 ticks apart (±1 for rounding).
    for pair in video.windows(2) {
        let (a, b) =
            (synthetic::h264_index(&pair[0].payload).unwrap(), synthetic::h264_index(&pair[1].payload).unwrap());
        let step = pair[1].rtp_timestamp.wrapping_sub(pair[0].rtp_timestamp) as i64;
        assert!((step - 3000 * (b - a) as i64).abs() <= (b - a) as i64, "frames {a}->{b}: {step} ticks");
    }

    let audio = of_kind(&frames, MediaKind::Audio);
    assert!(audio.len() >= 70, "only {} Opus packets arrived", audio.len());
    for packet in &audio {
        let index = synthetic::opus_index(&packet.payload).expect("an index");
        assert_eq!(packet.payload, synthetic::opus_packet(index), "Opus packet {index} changed");
    }
    assert_monotonic(&audio, "audio");
    latencies.sort();
    println!(
        "forwarding latency WHIP->WHEP (video, {} frames): median {:?}, p95 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 95 / 100],
        latencies[latencies.len() - 1]
    );

    // Keyframe round trip: once requests from the subscription's start have died down, a PLI
    // from the viewer reaches the publisher.
    let mut before = publisher.keyframe_requests();
    loop {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = publisher.keyframe_requests();
        if now == before {
            break;
        }
        before = now;
    }
    viewer.request_keyframe().await.expect("send PLI");
    eventually("the viewer's PLI at the publisher", WAIT, || async {
        (publisher.keyframe_requests() > before).then_some(())
    })
    .await;

    assert_eq!(viewer.delete().await.unwrap(), 200);
    assert_eq!(live_peers(&server).await, 1, "DELETE took the viewer out at once");
    assert_eq!(viewer.delete().await.unwrap(), 404, "the resource is gone");
    assert_eq!(publisher.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_viewer_that_came_first_gets_media_and_follows_a_reconnecting_publisher() {
    let server = TestServer::start_with("[whip]\nreplace_existing = true\n", &[]).await;
    let publisher_token = server.token("live", "encoder", json!({"publish": true})).await;
    let viewer_token = server.token("live", "viewer", json!({"subscribe": true, "publish": false})).await;

    let mut viewer = WhepViewer::connect(&server.base, "live", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("WHEP view of an empty room");
    assert!(viewer.next_frame(Duration::from_millis(500)).await.is_none(), "nothing to see yet");

    // First publisher: frame indexes 0...
    let first = WhipPublisher::connect(&server.base, "live", &publisher_token, ClientOptions::h264_opus().via_relay())
        .await
        .expect("first publisher");
    send_media(&first, 0, 45, 15).await;
    let from_first = collect(&mut viewer, Duration::from_millis(800)).await;
    let first_video = of_kind(&from_first, MediaKind::Video);
    assert!(first_video.len() >= 20, "the early viewer got {} frames", first_video.len());
    assert!(first_video.iter().all(|f| synthetic::h264_index(&f.payload).unwrap() < 10_000));

    // The encoder's network drops and it reconnects with the same identity before the old
    // session timed out: the new session replaces it, frame indexes from 10000.
    let mut first = first;
    first.vanish();
    let second = WhipPublisher::connect(&server.base, "live", &publisher_token, ClientOptions::h264_opus())
        .await
        .expect("reconnected publisher");
    send_media(&second, 10_000, 45, 15).await;
    let from_second = collect(&mut viewer, Duration::from_millis(800)).await;
    let second_video = of_kind(&from_second, MediaKind::Video);
    assert!(second_video.len() >= 20, "after the reconnect the viewer got {} frames", second_video.len());
    assert!(second_video.iter().all(|f| synthetic::h264_index(&f.payload).unwrap() >= 10_000));
    assert!(second_video[0].keyframe, "the switch happens on a keyframe");

    // One continuous timeline for the viewer across the switch.
    let mut all_video = first_video.clone();
    all_video.extend(second_video.iter().copied());
    assert_monotonic(&all_video, "video across the publisher switch");
    let mut all_audio = of_kind(&from_first, MediaKind::Audio);
    all_audio.extend(of_kind(&from_second, MediaKind::Audio));
    assert_monotonic(&all_audio, "audio across the publisher switch");

    assert_eq!(second.delete().await.unwrap(), 200);
    assert_eq!(viewer.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn the_ice_timeout_reaps_clients_that_vanish() {
    let server = TestServer::start_with("[webrtc]\nice_timeout_s = 2\n", &[]).await;
    let publisher_token = server.token("gone", "encoder", json!({"publish": true})).await;
    let viewer_token = server.token("gone", "viewer", json!({"subscribe": true})).await;
    let mut publisher =
        WhipPublisher::connect(&server.base, "gone", &publisher_token, ClientOptions::h264_opus().via_relay())
            .await
            .expect("publisher");
    let mut viewer =
        WhepViewer::connect(&server.base, "gone", &viewer_token, "", ClientOptions::h264_opus().via_relay())
            .await
            .expect("viewer");
    send_media(&publisher, 0, 10, 10).await;
    assert_eq!(live_peers(&server).await, 2);

    publisher.vanish();
    viewer.vanish();
    let vanished = Instant::now();
    server.wait_for_no_peers().await;
    println!("vanished clients reaped after {:?} (ice_timeout_s = 2)", vanished.elapsed());
    assert!(server.logs().contains("transport_timeout"), "peers left for transport_timeout");
    assert_eq!(publisher.delete().await.unwrap(), 404, "the resource went with the session");
}

#[tokio::test]
async fn a_viewer_can_watch_one_identity_among_several_publishers() {
    let server = TestServer::start().await;
    let alice_token = server.token("panel", "alice", json!({"publish": true})).await;
    let bob_token = server.token("panel", "bob", json!({"publish": true})).await;
    let viewer_token = server.token("panel", "viewer", json!({"subscribe": true})).await;
    let alice =
        WhipPublisher::connect(&server.base, "panel", &alice_token, ClientOptions::h264_opus()).await.expect("alice");
    let mut watching_alice =
        WhepViewer::connect(&server.base, "panel", &viewer_token, "?identity=alice", ClientOptions::h264_opus())
            .await
            .expect("viewer of alice");
    // Same token again: the second viewer gets an identity of its own instead of a conflict.
    let mut newest = WhepViewer::connect(&server.base, "panel", &viewer_token, "", ClientOptions::h264_opus())
        .await
        .expect("second viewer");
    send_media(&alice, 0, 20, 10).await;
    // Bob publishes later: the default viewer moves to him, alice's viewer stays with her.
    let bob = WhipPublisher::connect(&server.base, "panel", &bob_token, ClientOptions::h264_opus()).await.expect("bob");
    watching_alice.discard_received();
    newest.discard_received();
    let (_, _) = tokio::join!(send_media(&alice, 100, 45, 15), send_media(&bob, 20_000, 45, 15));

    let of_alice = of_kind(&collect(&mut watching_alice, Duration::from_millis(800)).await, MediaKind::Video)
        .iter()
        .map(|f| synthetic::h264_index(&f.payload).unwrap())
        .collect::<Vec<_>>();
    assert!(of_alice.len() >= 20 && of_alice.iter().all(|i| *i < 20_000), "alice's viewer got {of_alice:?}");
    let of_newest = of_kind(&collect(&mut newest, Duration::from_millis(800)).await, MediaKind::Video)
        .iter()
        .map(|f| synthetic::h264_index(&f.payload).unwrap())
        .collect::<Vec<_>>();
    assert!(of_newest.iter().filter(|i| **i >= 20_000).count() >= 20, "the default viewer follows bob: {of_newest:?}");

    let (_, room) = server.call(reqwest::Method::GET, "/v1/rooms/panel", None).await;
    let identities: Vec<&str> =
        room["room"]["peers"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert!(identities.contains(&"viewer") && identities.iter().any(|i| i.starts_with("viewer~")), "{identities:?}");

    for status in [alice.delete().await, bob.delete().await, watching_alice.delete().await, newest.delete().await] {
        assert_eq!(status.unwrap(), 200);
    }
    server.wait_for_no_peers().await;
}
