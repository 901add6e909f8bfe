//! The `recording` component (`"layout": "tracks"`) end to end: an independent WebRTC stack
//! (the `webrtc` crate) publishes libx264's flashing test pattern and a libopus tone beeping with
//! the flash over WHIP, a sipp phone talks G.711 into the same room, and the recording writes a
//! file per track (H.264 in fragmented MP4, Opus in live WebM) plus a manifest. The server is SIGKILLed while it records: ffprobe and
//! ffmpeg (nobody here wrote them) decode every file it left — pictures that move, each tone at its
//! frequency — and the manifest's start times put the beeps of the audio file on the flashes of
//! the video file within 40 ms. The restarted server starts the recording again into the same
//! manifest and copies what the crash left to S3 (`s3s-fs`, read back over the S3 API); the
//! API's refusals name their field. A Chromium room tab publishing VP8 (ramping its resolution
//! up, as browsers do) and a 1 kHz microphone is recorded to one file per track, each closed when
//! the tab's tracks end, the VP8 and the Opus in WebM decoded by ffmpeg.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::hls::publishes;
use crate::rtmp::ffprobe;
use crate::rtmp_webrtc::{FPS, TONE_HZ, flashing, publish};
use crate::sip::{OPEN_DIAL_IN, pcmu_call, tone, uac_args};
use crate::support::baresip::tone_wav;
use crate::support::chromium;
use crate::support::lipsync::{beeps, flashes, paired_offsets};
use crate::support::moq::wait_for_peer;
use crate::support::players::{pictures, recorded_tone};
use crate::support::s3::{BUCKET, S3Server};
use crate::support::sip::{RtpRecorder, Sipp, play};
use crate::support::webrtc_client::{ClientOptions, WhipPublisher};
use crate::support::{TestServer, eventually, x264};

/// How far apart the manifest may put a flash and its beep.
const LINE_UP_MS: f64 = 40.0;
const PHONE_HZ: u32 = 440;

async fn component(server: &TestServer, room: &str, id: &str) -> Value {
    server.call(Method::GET, &format!("/v1/rooms/{room}/components/{id}"), None).await.1
}

async fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest.json")).expect("manifest JSON")
}

/// The manifest's entry for `peer`'s `kind` file, and the file's path.
fn entry(manifest: &Value, dir: &Path, peer: &str, kind: &str) -> (Value, PathBuf) {
    let found = manifest["files"]
        .as_array()
        .and_then(|files| files.iter().find(|f| f["peer"] == peer && f["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} file of {peer} in {manifest}"))
        .clone();
    let path = dir.join(found["file"].as_str().expect("file name"));
    (found, path)
}

#[tokio::test]
async fn a_tracks_recording_of_a_whip_publisher_and_a_phone_decodes_lines_up_and_survives_a_sigkill() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let s3 = S3Server::start().await;
    let server = TestServer::start_with(&format!("{OPEN_DIAL_IN}\n{}", s3.config("rec/")), &[]).await;
    let room = "studio";
    let dir = server.dir().to_path_buf();
    let (_, video) = x264::baseline_access_units_of(&dir, "pattern", &flashing(), 12, FPS).await;

    // The API's refusals name the field.
    for (body, field) in [
        (json!({"type": "recording", "layout": "mosaic"}), "layout"),
        (json!({"type": "recording", "peer": "no such/peer"}), "peer"),
        (json!({"type": "recording", "format": "mkv"}), "format"),
    ] {
        let (status, error) =
            server.call(Method::POST, &format!("/v1/rooms/{room}/components"), Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {error}");
        assert!(error["error"]["message"].as_str().unwrap_or_default().contains(field), "{body} -> {error}");
    }

    // A WHIP publisher (flash and beep together, every second) and a phone (a steady tone).
    let token = server.token(room, "cam", json!({"publish": true, "subscribe": false})).await;
    let publisher =
        WhipPublisher::connect(&server.base, room, &token, ClientOptions::h264_opus()).await.expect("WHIP publisher");
    let publishing = tokio::spawn(async move {
        publish(&publisher, &video).await;
        publisher
    });
    let ears = RtpRecorder::start().await;
    let phone = Sipp::start(
        &dir,
        "alice",
        &pcmu_call("alice", ears.port, play(&[tone(&dir, PHONE_HZ, 10.0)], 0), 10_500),
        &uac_args(&server, room, &[]),
    );
    eventually("the publisher's two tracks and the phone's", Duration::from_secs(15), || async {
        let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
        let tracks = |identity: &str| {
            body["peers"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["identity"] == identity)
                .map_or(0, |p| p["tracks"].as_array().map_or(0, Vec::len))
        };
        (tracks("cam") == 2 && tracks("sip:alice") == 1).then_some(())
    })
    .await;

    let (status, created) =
        server.call(Method::POST, &format!("/v1/rooms/{room}/components"), Some(json!({"type": "recording"}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["layout"], "tracks", "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let recording = PathBuf::from(created["path"].as_str().expect("the recording's directory"));
    assert!(recording.starts_with(&dir), "recordings go under data_dir: {created}");
    eventually("the recording running", Duration::from_secs(10), || async {
        (component(&server, room, &id).await["state"] == "running").then_some(())
    })
    .await;
    let (status, peers) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    assert_eq!(status, 200);
    let listed = peers["peers"].as_array().expect("peers");
    assert!(
        !listed.iter().any(|p| p["identity"].as_str().unwrap_or_default().starts_with("recorder")),
        "the recorder is not a peer of the room: {peers}"
    );

    // Seven seconds of media, then SIGKILL while every file is being written.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let written = manifest(&recording).await;
    let server = server.kill_and_restart().await;
    let files = written["files"].as_array().expect("files");
    assert_eq!(files.len(), 3, "one file per track: {written}");
    assert!(files.iter().all(|f| f.get("end_unix_ms").is_none()), "no file was closed: {written}");

    let (video_entry, video_file) = entry(&written, &recording, "cam", "video");
    let (audio_entry, audio_file) = entry(&written, &recording, "cam", "audio");
    let (phone_entry, phone_file) = entry(&written, &recording, "sip:alice", "audio");
    assert_eq!((video_entry["codec"].as_str(), audio_entry["codec"].as_str()), (Some("h264"), Some("opus")));
    assert_eq!(phone_entry["codec"], "opus", "{phone_entry}");
    assert_eq!(phone_entry["source_codec"], "pcmu", "the phone's G.711, recorded as the engine's Opus");

    // Every file the SIGKILL left decodes: H.264 in fragmented MP4, Opus in live WebM.
    for (file, container) in [(&video_file, "mp4"), (&audio_file, "webm"), (&phone_file, "webm")] {
        assert_eq!(file.extension().and_then(|e| e.to_str()), Some(container), "{}", file.display());
        let probe = ffprobe(file, &["-show_entries", "stream=codec_name:format=format_name,duration"]).await;
        assert!(probe["format"]["format_name"].as_str().unwrap_or_default().contains(container), "{probe}");
    }
    let (decoded, changes) = pictures(&video_file).await;
    assert!(decoded >= 5 * FPS as usize, "{decoded} pictures in {}", video_file.display());
    assert!(changes * 2 >= decoded, "the pictures move: {changes} changes in {decoded}");
    let heard = recorded_tone(&audio_file).await;
    assert!((heard - TONE_HZ).abs() <= 3.0, "the publisher's file holds {heard} Hz");
    let heard = recorded_tone(&phone_file).await;
    assert!((heard - f64::from(PHONE_HZ)).abs() <= 5.0, "the phone's file holds {heard} Hz");

    // The manifest lines the video and audio files up: beeps fall on flashes.
    let start = |entry: &Value| entry["start_unix_ms"].as_f64().expect("start_unix_ms") / 1000.0;
    let flashed: Vec<f64> = flashes(&video_file).await.iter().map(|t| t + start(&video_entry)).collect();
    let beeped: Vec<f64> = beeps(&audio_file).await.iter().map(|t| t + start(&audio_entry)).collect();
    let offsets = paired_offsets(&flashed, &beeped);
    assert!(offsets.len() >= 4, "flashes {flashed:?} and beeps {beeped:?} pair up");
    let median = offsets[offsets.len() / 2];
    assert!(median.abs() <= LINE_UP_MS, "beep {median:+.0} ms from its flash by the manifest: {offsets:?}");
    println!(
        "recording: {decoded} pictures, beep {median:+.1} ms from flash by the manifest ({} pairs)",
        offsets.len()
    );

    // The restarted server records again into the same manifest and copies the files the crash
    // left to S3, each marked in the manifest, which follows them there.
    eventually("the recording running again", Duration::from_secs(15), || async {
        (component(&server, room, &id).await["state"] == "running").then_some(())
    })
    .await;
    let prefix = format!("rec/{room}/{id}");
    let copied = eventually("the files copied to S3 and the manifest saying so", Duration::from_secs(30), || async {
        let manifest: Value = serde_json::from_slice(&s3.get(&format!("{prefix}/manifest.json")).await?).ok()?;
        let files = manifest["files"].as_array()?;
        (files.len() == 3 && files.iter().all(|f| f["object"].is_string())).then_some(manifest)
    })
    .await;
    for (local, listed) in written["files"].as_array().unwrap().iter().zip(copied["files"].as_array().unwrap()) {
        let name = local["file"].as_str().unwrap();
        assert_eq!(listed["object"], format!("s3://{BUCKET}/{prefix}/{name}"), "{copied}");
        let object = s3.get(&format!("{prefix}/{name}")).await.expect("the object");
        assert_eq!(object, std::fs::read(recording.join(name)).unwrap(), "{name} in S3 is the file on disk");
    }
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{room}/components/{id}"), None).await;
    assert_eq!(status, 204);
    publishing.abort();
    drop(phone);
}

#[tokio::test]
async fn a_browser_tab_publishing_vp8_is_recorded_to_one_closed_file_per_track() {
    const HZ: f64 = 1000.0;
    let server = TestServer::start().await;
    let room = "tab-rec";
    let wav = tone_wav(server.dir(), HZ, 48_000, 5.0);
    let token = server.token(room, "tab", json!({"publish": true, "subscribe": true})).await;
    let args = json!({"base": server.base, "room": room, "token": token, "hold_ms": 7_000, "fake_audio": wav});
    let browser = tokio::spawn(chromium::run("publish.mjs", args));
    wait_for_peer(&server, room, "tab", |p| publishes(p, "vp8")).await;
    let body = json!({"type": "recording", "peer": "tab"});
    let (status, created) = server.call(Method::POST, &format!("/v1/rooms/{room}/components"), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let recording = PathBuf::from(created["path"].as_str().unwrap());
    browser.await.expect("the publishing tab");
    // The tab is gone (its session would wait for a reconnection first): its tracks end.
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/{room}/peers/tab"), None).await;
    assert!(status == 204 || status == 404, "kicking the tab: {status}");

    // Both files are closed, one per track (the resolution ramp stays in one).
    let closed = |manifest: &Value| {
        let files = manifest["files"].as_array().cloned().unwrap_or_default();
        files.len() == 2 && files.iter().all(|f| f["end_unix_ms"].is_f64())
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let written = loop {
        let manifest = manifest(&recording).await;
        if closed(&manifest) {
            break manifest;
        }
        assert!(Instant::now() < deadline, "both files closed, one per track: {manifest}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (video_entry, video_file) = entry(&written, &recording, "tab", "video");
    let (_, audio_file) = entry(&written, &recording, "tab", "audio");
    assert_eq!(video_entry["codec"], "vp8", "{written}");
    for file in [&video_file, &audio_file] {
        let probe = ffprobe(file, &["-show_entries", "format=format_name"]).await;
        assert!(probe["format"]["format_name"].as_str().unwrap_or_default().contains("webm"), "{probe}");
    }
    let (decoded, changes) = pictures(&video_file).await;
    assert!(decoded >= 60, "{decoded} VP8 pictures decoded from {}", video_file.display());
    assert!(changes * 2 >= decoded, "the pictures move: {changes} changes in {decoded}");
    let heard = recorded_tone(&audio_file).await;
    assert!((heard - HZ).abs() <= 3.0, "the tab's file holds {heard} Hz");
    let sizes = ffprobe(&video_file, &["-show_entries", "frame=width", "-select_streams", "v:0"]).await;
    let widths: std::collections::BTreeSet<u64> =
        sizes["frames"].as_array().into_iter().flatten().filter_map(|f| f["width"].as_u64()).collect();
    println!("room tab (VP8) recorded: {decoded} pictures, widths {widths:?}, {heard:.1} Hz");
}
