//! Media over QUIC against the stock draft-18 tools from crates.io: moq-clock-ietf publishes into
//! a room and subscribes from it (setup, announce, subscribe, objects, groups); moq-pub, fed
//! H.264 by ffmpeg, publishes into a room and moq-sub reads the peer back through the engine,
//! frame for frame; bad input gets the draft's error codes and the server carries on.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use moq_transport::coding::{Encode, KeyValuePairs, TrackNamespace};
use moq_transport::serve::{ServeError, Track, TrackReaderMode, Tracks};
use moq_transport::setup::{AuthorizationToken, ParameterType, Setup};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::TestServer;
use crate::support::moq::{
    MoqTarget, auth_token_arg, catalog_where, forge_token, quic, raw_close, raw_session, token, tool, wait_for_peer,
    watch_catalog, webtransport_close, webtransport_session,
};
use crate::support::players::stop_moq_sub;
pub(crate) use crate::support::players::{cmaf_into_moq_pub, spawn};
use crate::support::x264::frame_md5s;

/// Seconds since the Unix epoch of a UTC `YYYY-MM-DD HH:MM:SS`.
fn parse_utc(text: &str) -> Option<i64> {
    let (date, time) = text.trim().split_once(' ')?;
    let d: Vec<i64> = date.split('-').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [y, m, day] = <[i64; 3]>::try_from(d).ok()?;
    let [hh, mm, ss] = <[i64; 3]>::try_from(t).ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[tokio::test]
async fn stock_clock_publishes_into_a_room_and_subscribes_from_it() {
    let server = TestServer::start().await;
    let target = MoqTarget::of(&server);
    let ca = target.ca.to_str().unwrap().to_owned();
    let clock = tool("moq-clock-ietf");

    // The publisher speaks WebTransport and presents its token in SETUP.
    let publish_token = token(&server, "lobby", "clock-pub", true, false).await;
    let _publisher = spawn(
        &clock,
        &[
            "--publish",
            "--namespace",
            "lobby/clock",
            "--tls-root",
            &ca,
            "--auth-token",
            &auth_token_arg(&publish_token),
            &target.https("/lobby"),
        ],
        Stdio::null(),
        Stdio::null(),
        &server.dir().join("clock-pub.log"),
    );
    wait_for_peer(&server, "lobby", "clock-pub", |p| p["transport"] == "moq").await;

    // The subscriber speaks raw QUIC and carries its token in the URL. Until the publisher's
    // PUBLISH_NAMESPACE is through, its SUBSCRIBE is refused and it exits: try again.
    let subscribe_token = token(&server, "lobby", "clock-sub", false, true).await;
    let url = target.moqt(&format!("/lobby?jwt={subscribe_token}"));
    let mut times = Vec::new();
    for _attempt in 0..10 {
        let mut subscriber = spawn(
            &clock,
            &["--namespace", "lobby/clock", "--tls-root", &ca, &url],
            Stdio::null(),
            Stdio::piped(),
            &server.dir().join("clock-sub.log"),
        );
        let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
        while times.len() < 4 {
            match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    times.push(parse_utc(&line).unwrap_or_else(|| panic!("not a clock value: {line:?}")))
                }
                _ => break,
            }
        }
        if times.len() >= 4 {
            let peer = wait_for_peer(&server, "lobby", "clock-sub", |_| true).await;
            assert_eq!(peer["transport"], "moq");
            assert_eq!(peer["grants"]["publish"], false);
            break;
        }
        times.clear();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(times.len() >= 4, "the subscriber printed no clock values; logs:\n{}", server.logs());
    // The clock's values are sane (now, give or take) and advance.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(times.iter().all(|t| (now - t).abs() < 120), "clock values far from now ({now}): {times:?}");
    assert!(
        times.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] <= 2),
        "clock values do not advance by seconds: {times:?}"
    );
    assert!(times.last() > times.first(), "clock values do not advance: {times:?}");

    drop(_publisher);
    server.wait_for_no_peers().await;
}

/// Runs ffmpeg to completion; panics with its stderr on failure.
async fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let output = Command::new("ffmpeg").args(["-v", "error"]).args(args).output().await.expect("ffmpeg");
    assert!(output.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

#[tokio::test]
async fn moq_pub_h264_goes_through_the_engine_and_moq_sub_reads_it_back() {
    let server = TestServer::start().await;
    let target = MoqTarget::of(&server);
    let ca = target.ca.to_str().unwrap().to_owned();
    let dir = server.dir().to_owned();

    // A 320x240 H.264 source with a keyframe every second; its decoded frames are the reference.
    let source = dir.join("source.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-t",
        "30",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "25",
        "-tune",
        "zerolatency",
        source.to_str().unwrap(),
    ])
    .await;
    let reference = frame_md5s(&source).await;
    assert_eq!(reference.len(), 750);

    // A MoQ subscriber follows the room catalog from the start.
    let watcher_token = token(&server, "studio", "watcher", false, true).await;
    let (watcher, mut catalogs) = watch_catalog(&target, &format!("/studio?jwt={watcher_token}"), "studio").await;
    let empty = catalog_where(&mut catalogs, "an empty room", |c| c["version"] == 1).await;
    assert_eq!(empty["tracks"], serde_json::json!([]), "{empty}");

    // ffmpeg paces the file out as CMAF, one fragment per frame, into stock moq-pub.
    let cam_token = token(&server, "studio", "cam", true, false).await;
    let (packager, _moq_pub) = cmaf_into_moq_pub(
        &["-i", source.to_str().unwrap(), "-c", "copy"],
        &ca,
        "studio/cam-feed",
        &target.https(&format!("/studio?jwt={cam_token}")),
        &dir.join("moq-pub.log"),
    );

    // The publisher is a peer of the room with an H.264 track, like any other publisher.
    let cam = wait_for_peer(&server, "studio", "cam", |p| p["tracks"].as_array().is_some_and(|t| !t.is_empty())).await;
    assert_eq!(cam["transport"], "moq");
    let track = &cam["tracks"][0];
    assert_eq!((track["codec"].as_str(), track["kind"].as_str()), (Some("h264"), Some("video")));
    assert_eq!((track["params"]["width"].as_u64(), track["params"]["height"].as_u64()), (Some(320), Some(240)));

    // The room catalog now lists the peer and its track, with the codec parameters.
    let listed = catalog_where(&mut catalogs, "cam's H.264 track", |c| {
        c["tracks"].as_array().is_some_and(|t| {
            t.iter().any(|t| t["selectionParams"]["codec"].as_str().is_some_and(|c| c.starts_with("avc1.")))
        })
    })
    .await;
    let track = &listed["tracks"][0];
    let namespace = track["namespace"].as_str().or(listed["commonTrackFields"]["namespace"].as_str());
    assert_eq!(
        (namespace, track["name"].as_str(), track["initTrack"].as_str()),
        (Some("studio/cam"), Some("1.m4s"), Some("0.mp4")),
        "{listed}"
    );
    assert_eq!(track["selectionParams"]["width"], 320, "{listed}");
    assert_eq!(track["selectionParams"]["height"], 240, "{listed}");
    assert!(
        listed["peers"].as_array().unwrap().iter().any(|p| p["identity"] == "cam" && p["transport"] == "moq"),
        "{listed}"
    );

    // Stock moq-sub reads the peer `studio/cam` — muxed by Junction from engine frames.
    let view_token = token(&server, "studio", "viewer", false, true).await;
    let received = dir.join("received.mp4");
    let moq_sub = spawn(
        &tool("moq-sub"),
        &["--name", "studio/cam", "--catalog", "--tls-root", &ca, &target.https(&format!("/studio?jwt={view_token}"))],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&received).unwrap()),
        &dir.join("moq-sub.log"),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_moq_sub(moq_sub, &received).await;

    let probe = Command::new("ffprobe")
        .args(["-v", "quiet", "-show_streams", "-count_frames", "-of", "json"])
        .arg(&received)
        .output()
        .await
        .expect("ffprobe");
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
    let stream = &probe["streams"][0];
    let logs = || std::fs::read_to_string(dir.join("moq-sub.log")).unwrap_or_default();
    assert_eq!(stream["codec_name"], "h264", "ffprobe: {probe}\nmoq-sub:\n{}", logs());
    assert_eq!((stream["width"].as_u64(), stream["height"].as_u64()), (Some(320), Some(240)));

    // Every decoded frame is the source's, in order, from a keyframe on: a late subscriber
    // starts at the newest group, and nothing is lost or altered on the way.
    let got = frame_md5s(&received).await;
    assert!(got.len() >= 75, "only {} frames decoded in 6 s", got.len());
    let start = reference.iter().position(|md5| *md5 == got[0]).expect("first received frame is a source frame");
    assert_eq!(start % 25, 0, "the first frame received (source frame {start}) is not a keyframe");
    assert_eq!(&reference[start..start + got.len()], &got[..], "received frames differ from the source");

    // When the publisher goes, so does its track from the catalog.
    drop(_moq_pub);
    drop(packager);
    catalog_where(&mut catalogs, "cam gone", |c| {
        c["tracks"] == serde_json::json!([])
            && c["peers"].as_array().is_some_and(|p| p.iter().all(|p| p["identity"] != "cam"))
    })
    .await;
    watcher.abort();
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_draft_codes_and_the_server_carries_on() {
    let server = TestServer::start_with("[rooms]\nauto_create = false\n[moq]\nhandshake_timeout_s = 2\n", &[]).await;
    let target = MoqTarget::of(&server);
    let (status, _) = server.call(reqwest::Method::POST, "/v1/rooms", Some(serde_json::json!({"name": "lobby"}))).await;
    assert_eq!(status, 201);

    // A connection that never sends SETUP is closed at the handshake deadline.
    let connection = quic(&target, b"moqt-18").await.unwrap();
    let silent_since = tokio::time::Instant::now();
    let (code, reason) = raw_close(&connection).await;
    assert_eq!(code, 0x11, "CONTROL_MESSAGE_TIMEOUT: {reason}");
    let waited = silent_since.elapsed();
    assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6), "closed after {waited:?}");

    // Wrong ALPN: the TLS handshake fails with no_application_protocol (alert 120 = 0x178).
    let err = quic(&target, b"moqt-99").await.expect_err("a foreign ALPN is refused");
    match &err {
        moq_transport::session::transport::quinn::quinn::ConnectionError::ConnectionClosed(close) => {
            assert_eq!(u64::from(close.error_code), 0x178, "{err}")
        }
        other => panic!("expected a TLS alert, got {other:?}"),
    }

    // Missing, forged and expired tokens (raw QUIC).
    let (connection, _setup) = raw_session(&target, "/lobby", Vec::new()).await;
    let (code, reason) = raw_close(&connection).await;
    assert_eq!(code, 0x2, "UNAUTHORIZED: {reason}");
    assert!(reason.contains("no client token"), "{reason}");

    let forged = token(&server, "lobby", "mallory", true, true).await.replace('.', ".x");
    let (connection, _setup) = raw_session(&target, &format!("/lobby?jwt={forged}"), Vec::new()).await;
    let (code, reason) = raw_close(&connection).await;
    assert!(code == 0x2 || code == 0x16, "UNAUTHORIZED or MALFORMED_AUTH_TOKEN, got {code:#x}: {reason}");

    let expired = forge_token("lobby", "late", -10);
    let (connection, _setup) = raw_session(&target, &format!("/lobby?jwt={expired}"), Vec::new()).await;
    assert_eq!(raw_close(&connection).await.0, 0x18, "EXPIRED_AUTH_TOKEN");

    // A token for another room, presented in SETUP.
    let elsewhere = token(&server, "lobby", "wanderer", true, true).await;
    let setup_token = vec![AuthorizationToken::new(0, elsewhere.into_bytes())];
    let (connection, _setup) = raw_session(&target, "/other", setup_token).await;
    let (code, reason) = raw_close(&connection).await;
    assert_eq!(code, 0x2, "{reason}");
    assert!(reason.contains("lobby"), "{reason}");

    // Unknown room (rooms are not auto-created here) and a malformed path, over WebTransport.
    let ghost = forge_token("ghost", "visitor", 600);
    let (session, _setup) = webtransport_session(&target, &format!("/ghost?jwt={ghost}")).await;
    let (code, reason) = webtransport_close(&session).await;
    assert_eq!(code, 0x8, "INVALID_PATH: {reason}");
    assert!(reason.contains("ghost"), "{reason}");
    let good = token(&server, "lobby", "walker", true, true).await;
    let (session, _setup) = webtransport_session(&target, &format!("/lobby/deeper?jwt={good}")).await;
    assert_eq!(webtransport_close(&session).await.0, 0x9, "MALFORMED_PATH");

    // Malformed control messages: garbage instead of SETUP, and garbage after a valid SETUP.
    let connection = quic(&target, b"moqt-18").await.unwrap();
    let mut control = connection.open_uni().await.unwrap();
    control.write_all(&[0x2f, 0x00, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    control.finish().unwrap();
    assert_eq!(raw_close(&connection).await.0, 0x3, "PROTOCOL_VIOLATION");

    let connection = quic(&target, b"moqt-18").await.unwrap();
    let mut control = connection.open_uni().await.unwrap();
    let mut params = KeyValuePairs::default();
    params.set_bytesvalue(ParameterType::Path.into(), format!("/lobby?jwt={good}").into_bytes());
    let mut setup = bytes::BytesMut::new();
    Setup { params }.encode(&mut setup).unwrap();
    control.write_all(&setup).await.unwrap();
    // A control message of an unknown type, then a truncated one.
    control.write_all(&[0x3e, 0x00, 0x02, 0xaa, 0xbb, 0x03, 0xff, 0xff]).await.unwrap();
    let (code, reason) = raw_close(&connection).await;
    assert_eq!(code, 0x3, "PROTOCOL_VIOLATION: {reason}");

    // Meanwhile the server serves well-formed sessions: the room catalog of `lobby`.
    let (_connection, setup) = raw_session(&target, &format!("/lobby?jwt={good}"), Vec::new()).await;
    let (session, _publisher, mut subscriber) = setup.expect("SETUP");
    let driver = tokio::spawn(session.run());
    let (writer, reader) = Track::new(TrackNamespace::from_utf8_path("lobby"), ".catalog").produce();
    let subscription = tokio::spawn(async move { subscriber.subscribe(writer).await });
    let TrackReaderMode::Subgroups(mut groups) = reader.mode().await.unwrap() else { panic!("subgroups") };
    let mut group = tokio::time::timeout(Duration::from_secs(5), groups.next()).await.unwrap().unwrap().unwrap();
    let catalog: serde_json::Value = serde_json::from_slice(&group.read_next().await.unwrap().unwrap()).unwrap();
    assert_eq!(catalog["version"], 1);
    assert_eq!(catalog["tracks"], serde_json::json!([]));
    subscription.abort();
    driver.abort();
    drop(_connection);

    server.wait_for_no_peers().await;
    assert_eq!(server.health().await["status"], "ok");
}

#[tokio::test]
async fn requests_outside_the_grants_or_the_room_are_refused_and_the_session_carries_on() {
    let server = TestServer::start_with("[moq]\nmax_namespaces_per_session = 1\n", &[]).await;
    let target = MoqTarget::of(&server);

    // Subscribe-only: PUBLISH_NAMESPACE is refused with UNAUTHORIZED.
    let viewer = token(&server, "lobby", "viewer", false, true).await;
    let (_connection, setup) = raw_session(&target, &format!("/lobby?jwt={viewer}"), Vec::new()).await;
    let (session, mut publisher, mut subscriber) = setup.expect("SETUP");
    let driver = tokio::spawn(session.run());
    let (_writer, _request, reader) = Tracks::new(TrackNamespace::from_utf8_path("lobby/mine")).produce();
    let refused = tokio::time::timeout(Duration::from_secs(5), publisher.publish_namespace(reader)).await.unwrap();
    assert!(
        matches!(refused, Err(moq_transport::session::SessionError::Serve(ServeError::Closed(0x1)))),
        "{refused:?}"
    );

    // Unknown peers and tracks are DOES_NOT_EXIST; another room's namespace is UNAUTHORIZED.
    for (namespace, name) in [("lobby/nobody", "0.mp4"), ("lobby", "video"), ("lobby/x/y", "z")] {
        let (writer, _reader) = Track::new(TrackNamespace::from_utf8_path(namespace), name).produce();
        let result = tokio::time::timeout(Duration::from_secs(5), subscriber.subscribe(writer)).await.unwrap();
        assert!(matches!(result, Err(ServeError::NotFoundWithId(..))), "{namespace}/{name}: {result:?}");
    }
    let (writer, _reader) = Track::new(TrackNamespace::from_utf8_path("kitchen"), ".catalog").produce();
    let result = tokio::time::timeout(Duration::from_secs(5), subscriber.subscribe(writer)).await.unwrap();
    assert!(matches!(result, Err(ServeError::Closed(0x1))), "{result:?}");

    // Publish-only: SUBSCRIBE is refused with UNAUTHORIZED.
    let camera = token(&server, "lobby", "camera", true, false).await;
    let (_camera_connection, setup) = raw_session(&target, &format!("/lobby?jwt={camera}"), Vec::new()).await;
    let (camera_session, camera_publisher, mut camera_subscriber) = setup.expect("SETUP");
    let camera_driver = tokio::spawn(camera_session.run());
    let (writer, _reader) = Track::new(TrackNamespace::from_utf8_path("lobby"), ".catalog").produce();
    let result = tokio::time::timeout(Duration::from_secs(5), camera_subscriber.subscribe(writer)).await.unwrap();
    assert!(matches!(result, Err(ServeError::Closed(0x1))), "{result:?}");

    // One namespace per session here (`moq.max_namespaces_per_session = 1`): the second is
    // refused with EXCESSIVE_LOAD while the first stays announced.
    let (_first_writer, _first_request, first) = Tracks::new(TrackNamespace::from_utf8_path("lobby/one")).produce();
    let mut announcer = camera_publisher.clone();
    let first_announce = tokio::spawn(async move { announcer.publish_namespace(first).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first_announce.is_finished(), "the first namespace is served: {first_announce:?}");
    let (_second_writer, _second_request, second) = Tracks::new(TrackNamespace::from_utf8_path("lobby/two")).produce();
    let mut announcer = camera_publisher.clone();
    let refused = tokio::time::timeout(Duration::from_secs(5), announcer.publish_namespace(second)).await.unwrap();
    assert!(
        matches!(refused, Err(moq_transport::session::SessionError::Serve(ServeError::Closed(0x9)))),
        "{refused:?}"
    );
    first_announce.abort();

    // The viewer's session is still up: the room catalog now lists... nobody's tracks, but is there.
    let (writer, reader) = Track::new(TrackNamespace::from_utf8_path("lobby"), ".catalog").produce();
    let subscription = tokio::spawn(async move { subscriber.subscribe(writer).await });
    let TrackReaderMode::Subgroups(mut groups) = reader.mode().await.unwrap() else { panic!("subgroups") };
    let group = tokio::time::timeout(Duration::from_secs(5), groups.next()).await.unwrap().unwrap();
    assert!(group.is_some());
    let peers = server.call(reqwest::Method::GET, "/v1/rooms/lobby", None).await.1;
    assert_eq!(peers["room"]["num_peers"], 2, "{peers}");

    subscription.abort();
    driver.abort();
    camera_driver.abort();
    drop(_connection);
    drop(_camera_connection);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn an_rtmp_publisher_is_read_by_stock_moq_sub_as_h264_with_b_frames_and_an_aac_tone() {
    let server = TestServer::start().await;
    let target = MoqTarget::of(&server);
    let ca = target.ca.to_str().unwrap().to_owned();
    let dir = server.dir().to_owned();

    // ffmpeg pushes OBS-like H.264 (High, two B-frames) and a 660 Hz AAC tone over RTMP.
    let body = serde_json::json!({"kind": "rtmp", "room": "stage", "identity": "obs"});
    let (status, ingress) = server.call(reqwest::Method::POST, "/v1/ingress", Some(body)).await;
    assert_eq!(status, 201, "{ingress}");
    let push_url = format!("{}/{}", ingress["url"].as_str().unwrap(), ingress["stream_key"].as_str().unwrap());
    let _push = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100"])
        .args(["-t", "20", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-tune", "zerolatency"])
        .args(["-bf", "2", "-g", "30", "-c:a", "aac", "-f", "flv", &push_url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ffmpeg");
    wait_for_peer(&server, "stage", "obs", |p| p["tracks"].as_array().is_some_and(|t| t.len() == 2)).await;

    // Stock moq-sub reads the RTMP peer as the MoQ broadcast `stage/obs`.
    let view_token = token(&server, "stage", "viewer", false, true).await;
    let received = dir.join("received.mp4");
    let moq_sub = spawn(
        &tool("moq-sub"),
        &["--name", "stage/obs", "--tls-root", &ca, &target.moqt(&format!("/stage?jwt={view_token}"))],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&received).unwrap()),
        &dir.join("moq-sub.log"),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_moq_sub(moq_sub, &received).await;

    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "quiet",
            "-of",
            "json",
            "-show_streams",
            "-show_entries",
            "frame=media_type,best_effort_timestamp",
        ])
        .arg(&received)
        .output()
        .await
        .expect("ffprobe");
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
    let logs = || std::fs::read_to_string(dir.join("moq-sub.log")).unwrap_or_default();
    let streams = probe["streams"].as_array().unwrap_or_else(|| panic!("ffprobe: {probe}\n{}", logs()));
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").expect("an audio stream");
    assert_eq!((video["codec_name"].as_str(), video["profile"].as_str()), (Some("h264"), Some("High")));
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!((audio["codec_name"].as_str(), audio["sample_rate"].as_str()), (Some("aac"), Some("44100")));

    // The B-frames kept their presentation times: decoded pictures come out in strictly
    // increasing time, about 30 a second.
    let frames = probe["frames"].as_array().unwrap();
    let video_times: Vec<i64> = frames
        .iter()
        .filter(|f| f["media_type"] == "video")
        .filter_map(|f| f["best_effort_timestamp"].as_i64())
        .collect();
    assert!(video_times.len() >= 120, "{} pictures in 6 s", video_times.len());
    assert!(video_times.windows(2).all(|w| w[0] < w[1]), "pictures out of order: {video_times:?}");

    // The audio is the tone.
    let pcm = Command::new("ffmpeg")
        .args(["-v", "quiet", "-i"])
        .arg(&received)
        .args(["-vn", "-ac", "1", "-ar", "16000", "-f", "s16le", "-"])
        .output()
        .await
        .expect("ffmpeg");
    let samples: Vec<i16> = pcm.stdout.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    assert!(samples.len() >= 16_000 * 4, "{} samples", samples.len());
    crate::support::audio::assert_tone(&samples, 1, 16_000, 660.0, 2.0);

    drop(_push);
    server.wait_for_no_peers().await;
}

/// Encodes `seconds` of a 320x240 Baseline test pattern with a keyframe a second and returns
/// (its H.264 access units in Annex B, the MD5 of each decoded frame).
async fn baseline_h264(dir: &Path, seconds: u32) -> (Vec<bytes::Bytes>, Vec<String>) {
    let (file, units) = crate::support::x264::baseline_access_units(dir, "source", seconds, 25).await;
    let reference = frame_md5s(&file).await;
    (units, reference)
}

/// Asserts `got` is a run of `reference` starting at a keyframe (every 25th frame).
fn assert_contiguous_from_keyframe(reference: &[String], got: &[String], what: &str) {
    assert!(!got.is_empty(), "{what}: nothing decoded");
    let start = reference.iter().position(|md5| *md5 == got[0]).unwrap_or_else(|| panic!("{what}: unknown frame"));
    assert_eq!(start % 25, 0, "{what}: first frame (source frame {start}) is not a keyframe");
    assert!(start + got.len() <= reference.len(), "{what}: more frames than the source");
    assert_eq!(&reference[start..start + got.len()], got, "{what}: frames differ from the source");
}

#[tokio::test]
async fn moq_pub_frames_reach_a_whep_viewer() {
    use crate::support::webrtc_client::{ClientCodec, ClientOptions, MediaKind, WhepViewer};

    let server = TestServer::start().await;
    let target = MoqTarget::of(&server);
    let ca = target.ca.to_str().unwrap().to_owned();
    let dir = server.dir().to_owned();

    // A Baseline source, paced out as CMAF by ffmpeg into stock moq-pub.
    let (_, reference) = baseline_h264(&dir, 20).await;
    let source = dir.join("source.mp4");
    ffmpeg(&[
        "-f",
        "h264",
        "-r",
        "25",
        "-i",
        dir.join("source.h264").to_str().unwrap(),
        "-c",
        "copy",
        source.to_str().unwrap(),
    ])
    .await;
    let cam_token = token(&server, "studio", "cam", true, false).await;
    let (packager, _moq_pub) = cmaf_into_moq_pub(
        &["-i", source.to_str().unwrap(), "-c", "copy"],
        &ca,
        "studio/feed",
        &target.moqt(&format!("/studio?jwt={cam_token}")),
        &dir.join("moq-pub.log"),
    );
    wait_for_peer(&server, "studio", "cam", |p| p["tracks"].as_array().is_some_and(|t| !t.is_empty())).await;

    // An independent WebRTC stack (webrtc-rs) watches the room over WHEP.
    let view_token = token(&server, "studio", "webrtc-viewer", false, true).await;
    let mut viewer =
        WhepViewer::connect(&server.base, "studio", &view_token, "", ClientOptions::new(&[ClientCodec::H264]))
            .await
            .expect("WHEP");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Some(frame) = viewer.next_frame_of(MediaKind::Video, Duration::from_secs(3)).await {
            received.extend_from_slice(&frame.payload);
        }
    }
    let file = dir.join("whep.h264");
    std::fs::write(&file, &received).unwrap();
    let got = frame_md5s(&file).await;
    assert!(got.len() >= 75, "the WHEP viewer decoded {} frames in 5 s", got.len());
    assert_contiguous_from_keyframe(&reference, &got, "WHEP viewer of a MoQ publisher");

    viewer.delete().await.unwrap();
    drop(_moq_pub);
    drop(packager);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_whip_publisher_is_read_by_stock_moq_sub() {
    use crate::support::webrtc_client::{ClientCodec, ClientOptions, WhipPublisher};

    let server = TestServer::start().await;
    let target = MoqTarget::of(&server);
    let ca = target.ca.to_str().unwrap().to_owned();
    let dir = server.dir().to_owned();
    let (units, reference) = baseline_h264(&dir, 20).await;

    // An independent WebRTC stack (webrtc-rs) publishes real H.264 over WHIP, at 25 fps.
    let publish_token = token(&server, "stage", "whip-cam", true, false).await;
    let publisher =
        WhipPublisher::connect(&server.base, "stage", &publish_token, ClientOptions::new(&[ClientCodec::H264]))
            .await
            .expect("WHIP");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(40));
        for unit in units {
            tick.tick().await;
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if publisher.send_video(unit, Duration::from_millis(40)).await.is_err() {
                break;
            }
        }
        publisher
    });
    let peer =
        wait_for_peer(&server, "stage", "whip-cam", |p| p["tracks"].as_array().is_some_and(|t| !t.is_empty())).await;
    assert_eq!(peer["transport"], "whip");

    // Stock moq-sub reads the WHIP peer as `stage/whip-cam`.
    let view_token = token(&server, "stage", "moq-viewer", false, true).await;
    let received = dir.join("received.mp4");
    let moq_sub = spawn(
        &tool("moq-sub"),
        &["--name", "stage/whip-cam", "--tls-root", &ca, &target.https(&format!("/stage?jwt={view_token}"))],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&received).unwrap()),
        &dir.join("moq-sub.log"),
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop_moq_sub(moq_sub, &received).await;

    let probe = Command::new("ffprobe")
        .args(["-v", "quiet", "-show_streams", "-of", "json"])
        .arg(&received)
        .output()
        .await
        .expect("ffprobe");
    let probe: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap_or_default();
    let stream = &probe["streams"][0];
    let logs = std::fs::read_to_string(dir.join("moq-sub.log")).unwrap_or_default();
    assert_eq!(stream["codec_name"], "h264", "ffprobe: {probe}\nmoq-sub:\n{logs}");
    assert_eq!((stream["width"].as_u64(), stream["height"].as_u64()), (Some(320), Some(240)));
    let got = frame_md5s(&received).await;
    assert!(got.len() >= 75, "moq-sub's output decoded to {} frames in 6 s", got.len());
    assert_contiguous_from_keyframe(&reference, &got, "moq-sub reading a WHIP publisher");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let publisher = sender.await.unwrap();
    assert_eq!(publisher.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}
