//! Video codec bridging with real clients on both sides: a Chromium tab forced to VP8 is played
//! as H.264 by ffmpeg over RTMP and by stock `moq-sub` — through one shared transcoder, its
//! microphone's tone (a WAV fed to Chromium's fake device) arriving as AAC; in `auto`
//! rooms an unforced Chromium tab is steered to H.264 while an RTMP player waits, and nothing is
//! transcoded; a Chromium player that offers only VP8 watches an ffmpeg RTMP publisher's H.264.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::rtmp::{ffmpeg_pull, ffmpeg_push_sources, ffprobe, finish, ingress};
use crate::support::audio::{decode_file_audio, dominant_frequency};
use crate::support::baresip::tone_wav;
use crate::support::browser::{metric, metrics};
use crate::support::x264::frame_md5s;
use crate::support::{TestServer, chromium, eventually};

/// The tracks `identity` publishes in `room`, as the REST API lists them.
async fn tracks(server: &TestServer, room: &str, identity: &str) -> Vec<Value> {
    let (_, body) = server.call(reqwest::Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    let peers = body["peers"].as_array().cloned().unwrap_or_default();
    let peer = peers.into_iter().find(|p| p["identity"] == identity);
    peer.and_then(|p| p["tracks"].as_array().cloned()).unwrap_or_default()
}

async fn video_codec_of(server: &TestServer, room: &str, identity: &str) -> Option<String> {
    let tracks = tracks(server, room, identity).await;
    let video = tracks.iter().find(|t| t["kind"] == "video")?;
    video["codec"].as_str().map(str::to_owned)
}

async fn transcodes(server: &TestServer) -> f64 {
    metric(&metrics(server).await, "junction_video_transcodes").expect("junction_video_transcodes in /metrics")
}

/// Checks a recording holds decodable H.264 pictures that change (Chromium's fake camera
/// animates); returns how many were decoded.
async fn assert_moving_h264(file: &Path, at_least: usize, what: &str) -> usize {
    let probe = ffprobe(file, &["-show_entries", "stream=codec_type,codec_name,width,height"]).await;
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let video =
        streams.iter().find(|s| s["codec_type"] == "video").unwrap_or_else(|| panic!("{what}: no video: {probe}"));
    assert_eq!(video["codec_name"], "h264", "{what}: {probe}");
    let md5s = frame_md5s(file).await;
    assert!(md5s.len() >= at_least, "{what}: {} pictures decoded, wanted {at_least}", md5s.len());
    let mut distinct = md5s.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() * 2 > md5s.len(),
        "{what}: the picture hardly moves ({} distinct of {})",
        distinct.len(),
        md5s.len()
    );
    md5s.len()
}

/// The tone the tabs' fake microphones play.
const TAB_HZ: f64 = 1000.0;

/// Checks a recording's audio is the tab's microphone tone (Opus from the tab, AAC here).
async fn assert_tone(file: &Path, what: &str) {
    let samples = decode_file_audio(file, 16_000).await;
    let settled = &samples[samples.len().min(8_000)..];
    let found = dominant_frequency(settled, 1, 16_000).unwrap_or(0.0);
    assert!((found - TAB_HZ).abs() <= 3.0, "{what}: the tab's {TAB_HZ} Hz tone, found {found:.1} Hz");
}

#[tokio::test]
async fn a_vp8_browser_tab_is_played_as_h264_over_rtmp_and_moq_through_one_transcoder() {
    let server = TestServer::start().await;
    let room = "bridge";
    let publish_token = server.token(room, "cam", json!({"publish": true, "subscribe": false})).await;
    let wav = tone_wav(server.dir(), TAB_HZ, 48_000, 5.0);
    let args = json!({"base": server.base, "room": room, "token": publish_token, "codec": "vp8", "hold_ms": 14_000, "fake_audio": wav});
    let browser = tokio::spawn(chromium::run("publish_whip.mjs", args));
    eventually("the tab's VP8 video track", Duration::from_secs(45), || async {
        (video_codec_of(&server, room, "cam").await.as_deref() == Some("vp8")).then_some(())
    })
    .await;
    assert_eq!(transcodes(&server).await, 0.0, "nothing transcodes before a viewer needs it");

    // ffmpeg over RTMP playback and stock moq-sub (which reads only avc1/mp4a tracks: it asks for
    // H.264 and AAC in its connect URL) at once.
    let rtmp_token = server.token(room, "rtmp-player", json!({"publish": false, "subscribe": true})).await;
    let flv = server.dir().join("vp8-as-h264.flv");
    let player = ffmpeg_pull(&format!("{}/{room}/cam?token={rtmp_token}", server.service("rtmp")), 4, &flv);
    let moq_token = server.token(room, "moq-player", json!({"publish": false, "subscribe": true})).await;
    let mp4 = server.dir().join("vp8-as-h264-moq.mp4");
    let moq_log = mp4.with_extension("log");
    let moq_sub = crate::support::players::moq_sub(&server, room, "cam", &moq_token, &mp4);

    // Both viewers attach to one H.264 variant of the track: one transcoder, never two.
    let mut seen = Vec::new();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        seen.push(transcodes(&server).await);
    }
    assert!(seen.contains(&1.0) && seen.iter().all(|n| *n <= 1.0), "running transcoders over 6 s: {seen:?}");
    let (played, stderr) = finish(player, Duration::from_secs(40)).await;
    assert!(played, "ffmpeg could not play the VP8 tab over RTMP: {stderr}");
    crate::support::players::stop_moq_sub(moq_sub, &mp4).await;

    let rtmp_pictures = assert_moving_h264(&flv, 45, "RTMP playback").await;
    assert_tone(&flv, "RTMP playback").await;
    let moq_log_text = || std::fs::read_to_string(&moq_log).unwrap_or_default();
    let probe = ffprobe(&mp4, &["-show_entries", "stream=codec_type,codec_name"]).await;
    assert!(
        probe["streams"].as_array().is_some_and(|s| s.iter().any(|s| s["codec_name"] == "aac")),
        "moq-sub got the tab's Opus as AAC: {probe}\nmoq-sub:\n{}",
        moq_log_text()
    );
    let moq_pictures = assert_moving_h264(&mp4, 45, "moq-sub").await;
    assert_tone(&mp4, "moq-sub").await;
    println!("VP8 tab -> H.264: {rtmp_pictures} pictures over RTMP, {moq_pictures} over MoQ, one transcoder");

    let published = browser.await.expect("browser task");
    assert!(
        published["second"].as_array().unwrap().iter().all(|s| s["codec"] == "video/VP8"),
        "the tab sent VP8 throughout: {published}"
    );
    eventually("the transcoder to stop with its last viewer", Duration::from_secs(20), || async {
        (transcodes(&server).await == 0.0).then_some(())
    })
    .await;
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn in_auto_rooms_an_unforced_browser_tab_is_steered_to_h264_while_an_rtmp_player_waits() {
    let server = TestServer::start().await;
    let room = "steered";
    // The RTMP player connects first and waits for `cam`: the room now has a viewer that takes
    // only H.264.
    let rtmp_token = server.token(room, "rtmp-player", json!({"publish": false, "subscribe": true})).await;
    let flv = server.dir().join("steered.flv");
    let player = ffmpeg_pull(&format!("{}/{room}/cam?token={rtmp_token}", server.service("rtmp")), 4, &flv);
    eventually("the RTMP player in the room", Duration::from_secs(15), || async {
        let (_, body) = server.call(reqwest::Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
        body["peers"].as_array()?.iter().any(|p| p["identity"] == "rtmp-player").then_some(())
    })
    .await;

    let publish_token = server.token(room, "cam", json!({"publish": true, "subscribe": true})).await;
    let wav = tone_wav(server.dir(), TAB_HZ, 48_000, 5.0);
    let args = json!({"base": server.base, "room": room, "token": publish_token, "hold_ms": 8_000, "fake_audio": wav});
    let browser = tokio::spawn(chromium::run("publish.mjs", args));
    eventually("the tab's video track", Duration::from_secs(45), || async {
        video_codec_of(&server, room, "cam").await
    })
    .await;
    assert_eq!(video_codec_of(&server, room, "cam").await.as_deref(), Some("h264"), "steered to H.264");
    let (played, stderr) = finish(player, Duration::from_secs(60)).await;
    assert!(played, "ffmpeg could not play the tab over RTMP: {stderr}");
    assert_eq!(transcodes(&server).await, 0.0, "H.264 from the tab needs no transcoder");
    let pictures = assert_moving_h264(&flv, 45, "RTMP playback").await;
    assert_tone(&flv, "RTMP playback").await;
    let published = browser.await.expect("browser task");
    assert!(
        published["second"].as_array().unwrap().iter().all(|s| s["framesEncoded"].as_u64() > Some(0)),
        "{published}"
    );
    println!("auto room: the tab sent H.264, {pictures} pictures played over RTMP, 0 transcoders");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_browser_player_without_h264_watches_an_rtmp_publisher_in_vp8() {
    let server = TestServer::start().await;
    let (key, url) = ingress(&server, "vp8-viewer", "obs").await;
    let mut ffmpeg = ffmpeg_push_sources(
        &format!("{url}/{key}"),
        "testsrc=size=640x360:rate=30",
        "sine=frequency=440:sample_rate=48000",
        60,
        &["-tune", "zerolatency", "-g", "30"],
    );
    eventually("the RTMP publisher's H.264", Duration::from_secs(20), || async {
        (video_codec_of(&server, "vp8-viewer", "obs").await.as_deref() == Some("h264")).then_some(())
    })
    .await;
    let view_token = server.token("vp8-viewer", "player", json!({"publish": false, "subscribe": true})).await;
    let args = json!({"base": server.base, "room": "vp8-viewer", "viewToken": view_token, "viewCodec": "vp8"});
    let result = chromium::run("whip_whep.mjs", args).await;
    let (first, second) = (&result["first"], &result["second"]);
    let video = |sample: &Value| sample.as_array().unwrap().iter().find(|s| s["kind"] == "video").cloned().unwrap();
    let (before, after) = (video(first), video(second));
    assert_eq!(after["codec"], "video/VP8", "the player decodes VP8: {result}");
    let decoded = after["framesDecoded"].as_u64().unwrap() - before["framesDecoded"].as_u64().unwrap();
    assert!(decoded >= 30, "{decoded} VP8 frames decoded in 2 s: {result}");
    assert_eq!((after["frameWidth"].as_u64(), after["frameHeight"].as_u64()), (Some(640), Some(360)));
    let text = metrics(&server).await;
    let transcoded = metric(&text, "junction_transcode_cpu_microseconds_total{from=\"h264\"}").unwrap_or(0.0);
    assert!(transcoded > 0.0, "an H.264->VP8 transcoder ran: {transcoded} µs");
    println!("RTMP H.264 -> VP8-only player: {decoded} frames in 2 s, transcoder CPU {:.0} ms", transcoded / 1000.0);
    let _ = ffmpeg.kill().await;
    server.wait_for_no_peers().await;
}

/// A tab that decodes only H.264 (`?receive=h264`) in a room that keeps its publishers' VP8
/// watches a three-layer simulcast tab through one transcoder, and forcing each layer in turn
/// gives it that layer's picture size: the transcoder reads the layer its viewer asks for.
#[tokio::test]
async fn a_tab_that_decodes_only_h264_gets_each_simulcast_layer_it_asks_for_transcoded() {
    let server = TestServer::start().await;
    let room = "sim-h264";
    let (status, body) =
        server.call(reqwest::Method::POST, "/v1/rooms", Some(json!({"name": room, "video_codec": "vp8"}))).await;
    assert_eq!(status, 201, "{body}");
    let tokens = [server.token(room, "cam", json!({})).await, server.token(room, "tile", json!({})).await];
    let result =
        chromium::run("simulcast.mjs", json!({"base": server.base, "room": room, "tokens": tokens, "receive": "h264"}))
            .await;
    let failed = |what: String| -> String { format!("{what}: {result}\nserver log:\n{}", server.logs()) };
    let layers = result["layers"].as_array().unwrap_or_else(|| panic!("{}", failed("no layers".into())));
    assert_eq!(layers.len(), 3, "{}", failed("three layers".into()));
    let widths: Vec<u64> = layers.iter().map(|l| l["width"].as_u64().unwrap_or(0)).collect();
    assert!(widths[0] < widths[1] && widths[1] < widths[2], "{}", failed(format!("layer sizes {widths:?}")));
    for layer in layers {
        assert_eq!(layer["codec"], "video/H264", "{}", failed(format!("transcoded: {layer}")));
        assert_eq!(layer["stillWidth"], layer["width"], "{}", failed(format!("the layer holds: {layer}")));
        assert!(layer["after"].as_u64() > layer["before"].as_u64(), "{}", failed(format!("decoding: {layer}")));
    }
    assert_eq!(result["errors"], json!([null, null]));
    server.wait_for_no_peers().await;
}

/// `video.max_transcodes` bounds the video transcoders: with one allowed, a MoQ session asking
/// for H.264 gets the first VP8 publisher's video transcoded, and its request for a second VP8
/// publisher's video is refused with MoQ's `NOT_SUPPORTED` (0x3); the REST API's metrics show one
/// transcoder throughout.
#[tokio::test]
async fn past_video_max_transcodes_a_moq_subscriber_is_refused_with_not_supported() {
    use moq_transport::coding::TrackNamespace;
    use moq_transport::serve::{ServeError, Track};

    use crate::support::moq::{raw_session, wait_for_peer};
    use crate::support::webrtc_client::{ClientCodec, ClientOptions, WhipPublisher, synthetic};

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestServer::start_with("[video]\nmax_transcodes = 1\n", &[]).await;
    let room = "limited";
    let mut publishers = Vec::new();
    for name in ["one", "two"] {
        let token = server.token(room, name, json!({"publish": true, "subscribe": false})).await;
        let options = ClientOptions::new(&[ClientCodec::Vp8]);
        let publisher = WhipPublisher::connect(&server.base, room, &token, options).await.expect("WHIP publisher");
        for index in 0..5 {
            publisher.send_video(synthetic::vp8_frame(index, index == 0), Duration::from_millis(33)).await.unwrap();
        }
        wait_for_peer(&server, room, name, |p| p["tracks"].as_array().is_some_and(|t| !t.is_empty())).await;
        publishers.push(publisher);
    }

    let target = crate::support::moq::MoqTarget::of(&server);
    let viewer = server.token(room, "viewer", json!({"publish": false, "subscribe": true})).await;
    let (_connection, setup) = raw_session(&target, &format!("/{room}?jwt={viewer}&video=h264"), Vec::new()).await;
    let (session, _publisher, subscriber) = setup.expect("SETUP");
    let _driver = tokio::spawn(session.run());
    let subscribe = |peer: &str| {
        let mut subscriber = subscriber.clone();
        let (writer, reader) = Track::new(TrackNamespace::from_utf8_path(&format!("{room}/{peer}")), "1.m4s").produce();
        async move {
            let answer = tokio::time::timeout(Duration::from_secs(3), subscriber.subscribe(writer)).await;
            drop(reader);
            answer
        }
    };
    // The first publisher's video: its transcoder runs (the subscription stays open).
    assert!(subscribe("one").await.is_err(), "the first subscription is served, not answered with an error");
    assert_eq!(transcodes(&server).await, 1.0);
    // The second: refused, naming the limit in the log; still one transcoder.
    let refused = subscribe("two").await.expect("answered in time");
    // moq-transport's client reads the 0x3 of REQUEST_ERROR as "not implemented".
    let not_supported = match &refused {
        Err(ServeError::Closed(code)) => *code == 0x3,
        Err(ServeError::NotImplemented(what)) => what.contains("code=3"),
        _ => false,
    };
    assert!(not_supported, "NOT_SUPPORTED expected: {refused:?}");
    assert_eq!(transcodes(&server).await, 1.0);
    assert!(server.logs().contains("video.max_transcodes (1)"), "the refusal names the limit");
    drop(publishers);
}
