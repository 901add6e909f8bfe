//! The cells of the publisher × viewer matrix (`docs/interop.md`) that no protocol's own tests
//! cover, with real clients on both ends and content checked: a MoQ publisher (ffmpeg's CMAF into
//! stock `moq-pub`) played by ffmpeg over RTMP, heard by a sipp phone and seen and heard by a
//! Chromium room tab; a phone heard by an RTMP player, by stock `moq-sub` and by a room tab; a
//! Chromium room tab (its microphone a known tone) read by `moq-sub` and heard by a phone; an
//! RTMP publisher seen and heard by a room tab and read by an RTMP player and `moq-sub`. Where a
//! recording holds both media, a white flash and a beep that start together at the source must
//! be within 80 ms of each other in it (`support::lipsync`; `tests/lip_sync/` measures every cell,
//! browsers included, one test at a time). Each test has its own server; rooms
//! hold one source each, so a listener hears one tone.

use std::time::Duration;

use serde_json::json;

use crate::rtmp::ffprobe;
use crate::sip::{OPEN_DIAL_IN, heard, pcmu_call, tone, uac_args};
use crate::support::baresip::tone_wav;
use crate::support::browser::{metric, metrics};
use crate::support::moq::wait_for_peer;
use crate::support::players::{
    ffmpeg_pull, finish, flashing_into_moq_pub, flashing_into_rtmp, moq_sub, pictures, recorded_tone, stop_moq_sub,
    viewer_token,
};
use crate::support::sip::{RtpRecorder, Sipp, dominant_hz, play};
use crate::support::{TestServer, chromium, lipsync};

/// A sipp phone calling `room` that plays `freq` Hz for `seconds` and records what it hears.
async fn phone(server: &TestServer, room: &str, caller: &str, freq: u32, seconds: f64) -> (Sipp, RtpRecorder) {
    let recorder = RtpRecorder::start().await;
    let dir = server.dir();
    let xml = pcmu_call(caller, recorder.port, play(&[tone(dir, freq, seconds)], 0), (seconds * 1000.0) as u32 + 500);
    (Sipp::start(dir, caller, &xml, &uac_args(server, room, &[])), recorder)
}

#[tokio::test]
async fn a_moq_publisher_is_played_over_rtmp_heard_by_a_phone_and_seen_and_heard_by_a_room_tab() {
    const HZ: u32 = 880;
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let room = "moq-source";
    // ffmpeg's CMAF (H.264 + an AAC tone, one fragment per frame) into stock moq-pub.
    let publish_token = server.token(room, "cam", json!({"publish": true, "subscribe": false})).await;
    let _publisher = flashing_into_moq_pub(&server, room, &publish_token, HZ);
    wait_for_peer(&server, room, "cam", |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;

    let flv = server.dir().join("moq-over-rtmp.flv");
    let player = ffmpeg_pull(
        &format!("{}/{room}/cam?token={}", server.service("rtmp"), viewer_token(&server, room, "rtmp").await),
        4,
        &flv,
    );
    let (sipp, ears) = phone(&server, room, "ears", 300, 5.0).await;
    let tab_args = json!({"base": server.base, "room": room, "token": viewer_token(&server, room, "tab").await, "peer": "cam", "video": true});
    let (played, sipp_result, tab) =
        tokio::join!(finish(player, Duration::from_secs(60)), sipp.finish(), chromium::run("listen.mjs", tab_args));

    assert!(played.0, "ffmpeg could not play the MoQ publisher over RTMP: {}", played.1);
    let (decoded, changes) = pictures(&flv).await;
    assert!(decoded >= 60 && changes * 3 > decoded, "RTMP: {decoded} pictures, {changes} changes");
    let rtmp_hz = recorded_tone(&flv).await;
    assert!((rtmp_hz - f64::from(HZ)).abs() <= 3.0, "RTMP player hears {rtmp_hz} Hz");
    let rtmp_sync = lipsync::assert_recording_sync(&flv, "RTMP player").await;
    sipp_result.assert_ok("ears");
    let phone_hz = dominant_hz(&heard(&ears));
    assert!((phone_hz - f64::from(HZ)).abs() <= 5.0, "the phone hears {phone_hz} Hz, not the MoQ publisher's {HZ} Hz");
    let tab_hz = tab["heard"]["hz"].as_f64().unwrap_or_default();
    assert!((tab_hz - f64::from(HZ)).abs() <= 3.0, "the room tab hears {tab_hz} Hz: {tab}");
    assert!(tab["decoded"].as_u64().unwrap_or(0) >= 20, "the room tab decodes the MoQ video: {tab}");
    println!(
        "MoQ -> RTMP {decoded} pictures {rtmp_hz:.1} Hz, beep {rtmp_sync:+.0} ms from flash; -> phone {phone_hz:.1} Hz; -> room tab {tab_hz:.1} Hz, {} frames in 2 s",
        tab["decoded"]
    );
}

#[tokio::test]
async fn a_phone_is_heard_over_rtmp_by_moq_sub_and_by_a_room_tab() {
    const HZ: u32 = 440;
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let room = "phone-source";
    let (sipp, _ears) = phone(&server, room, "alice", HZ, 12.0).await;
    let identity = "sip:alice";
    wait_for_peer(&server, room, identity, |p| p["tracks"].as_array().is_some_and(|t| !t.is_empty())).await;

    let flv = server.dir().join("phone-over-rtmp.flv");
    let player = ffmpeg_pull(
        &format!("{}/{room}/{identity}?token={}", server.service("rtmp"), viewer_token(&server, room, "rtmp").await),
        4,
        &flv,
    );
    let mp4 = server.dir().join("phone-over-moq.mp4");
    let sub = moq_sub(&server, room, identity, &viewer_token(&server, room, "moq").await, &mp4);
    let tab_args =
        json!({"base": server.base, "room": room, "token": viewer_token(&server, room, "tab").await, "peer": identity});
    let (played, tab) = tokio::join!(finish(player, Duration::from_secs(60)), chromium::run("listen.mjs", tab_args));
    stop_moq_sub(sub, &mp4).await;

    assert!(played.0, "ffmpeg could not play the phone over RTMP: {}", played.1);
    let probe = ffprobe(&flv, &["-show_entries", "stream=codec_type,codec_name"]).await;
    assert_eq!(probe["streams"][0]["codec_name"], "aac", "{probe}");
    let rtmp_hz = recorded_tone(&flv).await;
    assert!((rtmp_hz - f64::from(HZ)).abs() <= 3.0, "RTMP player hears {rtmp_hz} Hz");
    let moq_hz = recorded_tone(&mp4).await;
    assert!((moq_hz - f64::from(HZ)).abs() <= 3.0, "moq-sub hears {moq_hz} Hz");
    let tab_hz = tab["heard"]["hz"].as_f64().unwrap_or_default();
    assert!((tab_hz - f64::from(HZ)).abs() <= 3.0, "the room tab hears {tab_hz} Hz: {tab}");
    println!("phone -> RTMP {rtmp_hz:.1} Hz, MoQ {moq_hz:.1} Hz, room tab {tab_hz:.1} Hz");
    sipp.finish().await.assert_ok("alice");
}

#[tokio::test]
async fn a_browser_room_tab_is_read_by_moq_sub_and_heard_by_a_phone() {
    const HZ: f64 = 1000.0;
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let room = "tab-source";
    let wav = tone_wav(server.dir(), HZ, 48_000, 5.0);
    let token = server.token(room, "tab", json!({"publish": true, "subscribe": true})).await;
    let args = json!({"base": server.base, "room": room, "token": token, "hold_ms": 9_000, "fake_audio": wav});
    let browser = tokio::spawn(chromium::run("publish.mjs", args));
    wait_for_peer(&server, room, "tab", |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;

    let mp4 = server.dir().join("tab-over-moq.mp4");
    let sub = moq_sub(&server, room, "tab", &viewer_token(&server, room, "moq").await, &mp4);
    let (sipp, ears) = phone(&server, room, "ears", 300, 5.0).await;
    let sipp_result = sipp.finish().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_moq_sub(sub, &mp4).await;
    browser.await.expect("browser task");

    let (decoded, changes) = pictures(&mp4).await;
    assert!(decoded >= 60 && changes * 2 > decoded, "moq-sub: {decoded} pictures, {changes} changes");
    let moq_hz = recorded_tone(&mp4).await;
    assert!((moq_hz - HZ).abs() <= 3.0, "moq-sub hears {moq_hz} Hz");
    sipp_result.assert_ok("ears");
    let phone_hz = dominant_hz(&heard(&ears));
    assert!((phone_hz - HZ).abs() <= 5.0, "the phone hears {phone_hz} Hz, not the tab's {HZ} Hz");
    println!("room tab -> moq-sub {decoded} pictures {moq_hz:.1} Hz; -> phone {phone_hz:.1} Hz");
}

#[tokio::test]
async fn an_rtmp_publisher_with_b_frames_is_seen_and_heard_by_a_room_tab_and_in_sync_by_rtmp_and_moq_players() {
    const HZ: u32 = 660;
    let server = TestServer::start().await;
    let room = "rtmp-source";
    // x264 with its default B-frames, as OBS sends: browsers' WebRTC decoders take none, so the
    // room tab gets the stream re-encoded without them; the RTMP and MoQ players get it as sent.
    let (_ffmpeg, obs) = flashing_into_rtmp(&server, room, HZ, &["-bf", "2", "-g", "25"]).await;
    let video = obs["tracks"].as_array().unwrap().iter().find(|t| t["kind"] == "video").cloned().unwrap();
    assert_eq!(video["params"]["reorders"], true, "the track is known to carry B-frames: {video}");

    let flv = server.dir().join("rtmp-over-rtmp.flv");
    let rtmp_token = viewer_token(&server, room, "rtmp").await;
    let player = ffmpeg_pull(&format!("{}/{room}/obs?token={rtmp_token}", server.service("rtmp")), 5, &flv);
    let mp4 = server.dir().join("rtmp-over-moq.mp4");
    let sub = moq_sub(&server, room, "obs", &viewer_token(&server, room, "moq").await, &mp4);
    let tab_args = json!({"base": server.base, "room": room, "token": viewer_token(&server, room, "tab").await, "peer": "obs", "video": true});
    let (played, tab) = tokio::join!(finish(player, Duration::from_secs(60)), chromium::run("listen.mjs", tab_args));
    stop_moq_sub(sub, &mp4).await;

    let tab_hz = tab["heard"]["hz"].as_f64().unwrap_or_default();
    assert!((tab_hz - f64::from(HZ)).abs() <= 3.0, "the room tab hears {tab_hz} Hz: {tab}");
    assert!(tab["decoded"].as_u64().unwrap_or(0) >= 20, "the room tab decodes the RTMP video: {tab}");
    let text = metrics(&server).await;
    let transcoded = metric(&text, "junction_transcode_cpu_microseconds_total{from=\"h264\"}").unwrap_or(0.0);
    assert!(transcoded > 0.0, "the room tab's copy was re-encoded without B-frames");
    assert!(played.0, "ffmpeg could not play the RTMP publisher: {}", played.1);
    let mut figures = Vec::new();
    for (file, who) in [(&flv, "RTMP player"), (&mp4, "moq-sub")] {
        let (decoded, changes) = pictures(file).await;
        assert!(decoded >= 60 && changes * 3 > decoded, "{who}: {decoded} pictures, {changes} changes");
        let hz = recorded_tone(file).await;
        assert!((hz - f64::from(HZ)).abs() <= 3.0, "{who} hears {hz} Hz");
        let sync = lipsync::assert_recording_sync(file, who).await;
        figures.push(format!("{who} {decoded} pictures {hz:.1} Hz, beep {sync:+.0} ms from flash"));
    }
    println!("RTMP -> room tab {tab_hz:.1} Hz, {} frames in 2 s; {}", tab["decoded"], figures.join("; "));
}
