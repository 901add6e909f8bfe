//! Room components end to end: a `file` component plays an MP3 (made by ffmpeg, 660 Hz,
//! looping) into a room — a sipp phone hears it through the mixer, a WHEP viewer (the `webrtc`
//! crate) decodes its Opus track, a Chromium tab on the room page hears the tone —; an Ogg Opus file plays once and its component stops
//! `finished`; webhooks report both; the API's errors; a SIGKILLed server starts the running
//! component again from its state store, and deleting it takes its peer out of the room. An RTSP
//! camera (GStreamer's RTSP server) is decoded by a WHEP viewer and heard by a phone, and its
//! component reconnects after the camera restarts.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::sip::{OPEN_DIAL_IN, heard, pcmu_call, phone_voice, uac_args};
use crate::support::audio::assert_tone;
use crate::support::chromium;
use crate::support::sip::{RtpRecorder, Sipp, dominant_hz, free_port};
use crate::support::webrtc_client::{ClientCodec, ClientOptions, MediaKind, WhepViewer};
use crate::support::x264::frame_md5s;
use crate::support::{TestServer, eventually};
use crate::webhooks::{Receiver, config as webhook_config, serve};

/// A tone file made by ffmpeg with `codec` (libmp3lame, libopus).
fn tone_file(path: &Path, freq: u32, seconds: f64, codec: &str) {
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:sample_rate=48000:duration={seconds}"))
        .args(["-ac", "1", "-c:a", codec])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}

/// A talk made by ffmpeg: `testsrc` (30 fps, B-frames) and a `freq` Hz tone, `seconds` long,
/// in `container` (mp4: H.264 + AAC; webm: VP8 + Opus).
fn talk_file(path: &Path, freq: u32, seconds: u32, container: &str) {
    let codecs: &[&str] = match container {
        "mp4" => &["-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "2", "-g", "30", "-c:a", "aac"],
        _ => &["-c:v", "libvpx", "-deadline", "realtime", "-g", "30", "-c:a", "libopus"],
    };
    let status = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"])
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={freq}:sample_rate=48000"))
        .args(["-t", &seconds.to_string()])
        .args(codecs)
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}

async fn component(server: &TestServer, room: &str, id: &str) -> (u16, Value) {
    server.call(Method::GET, &format!("/v1/rooms/{room}/components/{id}"), None).await
}

async fn wait_component(server: &TestServer, room: &str, id: &str, state: &str) -> Value {
    eventually(&format!("component {id} {state}"), Duration::from_secs(15), || async {
        let (_, body) = component(server, room, id).await;
        (body["state"] == state).then_some(body)
    })
    .await
}

#[tokio::test]
async fn a_file_component_plays_for_phones_and_viewers_reports_itself_and_survives_a_restart() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let receiver = Receiver::default();
    let hook = serve(&receiver).await;
    let server = TestServer::start_with(&format!("{OPEN_DIAL_IN}\n{}", webhook_config(&hook)), &[]).await;
    let dir = server.dir().to_path_buf();
    let (mp3, ogg) = (dir.join("hold.mp3"), dir.join("chime.ogg"));
    tone_file(&mp3, 660, 3.0, "libmp3lame");
    tone_file(&ogg, 880, 1.5, "libopus");

    // The API's refusals: each names the field.
    let post = |body: Value| server.call(Method::POST, "/v1/rooms/lobby/components", Some(body));
    let music = json!({"type": "file", "url": format!("file://{}", mp3.display()), "identity": "music", "loop": true});
    for (body, status, field) in [
        (json!({"url": "file:///x"}), 422, "type"),
        (json!({"type": "hologram"}), 422, "type"),
        (json!({"type": "file", "identity": "music"}), 422, "url"),
        (json!({"type": "file", "url": "http://insecure.example/a.mp3", "identity": "music"}), 422, "url"),
        (json!({"type": "file", "url": "file:///no/such/file.mp3", "identity": "music"}), 422, "url"),
        (
            json!({"type": "file", "url": format!("file://{}", mp3.display()), "identity": "bad identity!"}),
            422,
            "identity",
        ),
        (
            json!({"type": "file", "url": format!("file://{}", mp3.display()), "identity": "m", "volume": 3}),
            422,
            "volume",
        ),
    ] {
        let (got, error) = post(body.clone()).await;
        assert_eq!(got, status, "{body} -> {error}");
        assert!(error["error"]["message"].as_str().unwrap_or_default().contains(field), "{body} -> {error}");
    }
    let malformed = server
        .api(Method::POST, "/v1/rooms/lobby/components")
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // Music on hold, looping: 201, then running.
    let (status, created) = post(music).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("CO_"), "{created}");
    assert_eq!((created["type"].as_str(), created["loop"].as_bool()), (Some("file"), Some(true)));
    wait_component(&server, "lobby", &id, "running").await;

    // A phone in the room hears it through the mixer; a WHEP viewer decodes the track.
    let ears = RtpRecorder::start().await;
    let phone =
        Sipp::start(&dir, "dave", &pcmu_call("dave", ears.port, String::new(), 4500), &uac_args(&server, "lobby", &[]));
    let (viewer, pcm) = phone_voice(&server, "lobby", "music").await;
    assert_tone(&pcm, 1, 48_000, 660.0, 2.0);
    viewer.close().await;
    phone.finish().await.assert_ok("dave");
    assert!((dominant_hz(&heard(&ears)) - 660.0).abs() <= 5.0, "the phone hears the file");

    // A browser tab on the room page hears it too (Chromium's Web Audio analyser on the track).
    let listener = server.token("lobby", "listener", json!({"publish": false, "subscribe": true})).await;
    let tab =
        chromium::run("listen.mjs", json!({"base": server.base, "room": "lobby", "token": listener, "peer": "music"}))
            .await;
    let heard_hz = tab["heard"]["hz"].as_f64().unwrap_or_default();
    assert!((heard_hz - 660.0).abs() <= 3.0, "the tab hears {heard_hz} Hz: {tab}");
    assert!(tab["heard"]["energy"].as_f64().unwrap_or_default() > 0.0, "decoded audio energy: {tab}");
    assert_eq!(tab["error"], Value::Null, "{tab}");

    // A chime played once stops by itself.
    let chime = json!({"type": "file", "url": format!("file://{}", ogg.display()), "identity": "chime"});
    let (status, created) = post(chime).await;
    assert_eq!(status, 201, "{created}");
    let chime_id = created["id"].as_str().unwrap().to_owned();
    let stopped = wait_component(&server, "lobby", &chime_id, "stopped").await;
    assert_eq!(stopped["reason"], "finished", "{stopped}");
    let (_, list) = server.call(Method::GET, "/v1/rooms/lobby/components", None).await;
    assert_eq!(list["components"].as_array().unwrap().len(), 2, "{list}");

    // Webhooks: both started; the chime finished.
    let events = eventually("component webhooks", Duration::from_secs(10), || async {
        let deliveries = receiver.deliveries.lock().await;
        let events: Vec<(String, String)> = deliveries
            .iter()
            .filter(|(_, e)| e["event"].as_str().unwrap_or_default().starts_with("component_"))
            .map(|(_, e)| (e["event"].as_str().unwrap().to_owned(), e["component"]["id"].as_str().unwrap().to_owned()))
            .collect();
        (events.len() >= 3).then_some(events)
    })
    .await;
    for expected in [("component_started", &id), ("component_started", &chime_id), ("component_finished", &chime_id)] {
        assert!(events.iter().any(|(e, i)| e == expected.0 && i == expected.1), "{expected:?} in {events:?}");
    }

    // SIGKILL: the running component comes back from the state store; the finished one does not.
    let server = server.kill_and_restart().await;
    let again = wait_component(&server, "lobby", &id, "running").await;
    assert_eq!(again["identity"], "music");
    assert_eq!(component(&server, "lobby", &chime_id).await.0, 404);
    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/lobby/components/{id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(component(&server, "lobby", &id).await.0, 404);
    assert_eq!(server.call(Method::DELETE, &format!("/v1/rooms/lobby/components/{id}"), None).await.0, 404);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_video_file_plays_its_pictures_and_its_sound_and_loops_in_step() {
    let server = TestServer::start().await;
    let dir = server.dir().to_path_buf();
    let (mp4, webm) = (dir.join("talk.mp4"), dir.join("talk.webm"));
    talk_file(&mp4, 440, 2, "mp4");
    talk_file(&webm, 550, 2, "webm");

    let talk = json!({"type": "file", "url": format!("file://{}", mp4.display()), "identity": "talk", "loop": true});
    let (status, created) = server.call(Method::POST, "/v1/rooms/hall/components", Some(talk)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    wait_component(&server, "hall", &id, "running").await;
    let (_, peers) = server.call(Method::GET, "/v1/rooms/hall/peers", None).await;
    let tracks = peers["peers"][0]["tracks"].as_array().cloned().unwrap_or_default();
    let video = tracks.iter().find(|t| t["kind"] == "video").unwrap_or_else(|| panic!("a video track: {peers}"));
    assert_eq!((video["codec"].as_str(), video["params"]["width"].as_u64()), (Some("h264"), Some(320)), "{video}");
    assert!(tracks.iter().any(|t| t["kind"] == "audio" && t["codec"] == "opus"), "{peers}");

    // A WHEP viewer decodes the pictures for four seconds (across the 2 s file's loop) while
    // another hears the tone.
    let (pictures, (listener, pcm)) =
        tokio::join!(decoded_pictures(&server, "hall", "talk", 4), phone_voice(&server, "hall", "talk"));
    listener.close().await;
    // 120 pictures in 4 s, less the wait for the first keyframe: a file cannot make one on
    // request, so the viewer may wait up to one GOP (30 frames); a loop that broke would leave
    // at most 60.
    assert!(pictures >= 90, "{pictures} pictures in 4 s of a 30 fps file (GOP 30) that loops every 2 s");
    assert_tone(&pcm, 1, 48_000, 440.0, 2.0);

    // WebM: VP8 passes through as VP8.
    let clip = json!({"type": "file", "url": format!("file://{}", webm.display()), "identity": "clip"});
    let (status, created) = server.call(Method::POST, "/v1/rooms/hall/components", Some(clip)).await;
    assert_eq!(status, 201, "{created}");
    let clip_id = created["id"].as_str().unwrap().to_owned();
    wait_component(&server, "hall", &clip_id, "running").await;
    let (_, peers) = server.call(Method::GET, "/v1/rooms/hall/peers", None).await;
    let clip = peers["peers"].as_array().unwrap().iter().find(|p| p["identity"] == "clip").cloned().unwrap();
    assert!(clip["tracks"].as_array().unwrap().iter().any(|t| t["codec"] == "vp8"), "{clip}");
    let stopped = wait_component(&server, "hall", &clip_id, "stopped").await;
    assert_eq!(stopped["reason"], "finished", "the 2 s clip ends by itself: {stopped}");
    server.call(Method::DELETE, &format!("/v1/rooms/hall/components/{id}"), None).await;
    server.wait_for_no_peers().await;
}

/// A one-file HTTPS server on 127.0.0.1 (a self-signed certificate, written to `ca` for the
/// server under test to trust through `SSL_CERT_FILE`): `/<name>` is `body`, anything else 404.
async fn https_file_server(ca: &Path, name: &'static str, body: Vec<u8>) -> u16 {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
    std::fs::write(ca, certified.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key.into())
        .expect("TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let found = String::from_utf8_lossy(&request).starts_with(&format!("GET /{name} "));
                let head = if found {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
                };
                let _ = tls.write_all(head.as_bytes()).await;
                if found {
                    let _ = tls.write_all(&body).await;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_file_fetched_over_https_plays_and_a_missing_one_fails_naming_the_status() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let scratch = tempfile::tempdir().unwrap();
    let mp3 = scratch.path().join("remote.mp3");
    tone_file(&mp3, 770, 3.0, "libmp3lame");
    let ca = scratch.path().join("ca.pem");
    let port = https_file_server(&ca, "hold.mp3", std::fs::read(&mp3).unwrap()).await;
    let server = TestServer::start_with_env("", &[("SSL_CERT_FILE", ca.to_str().unwrap())]).await;

    let url = format!("https://127.0.0.1:{port}/hold.mp3");
    let body = json!({"type": "file", "url": url, "identity": "remote", "loop": true});
    let (status, created) = server.call(Method::POST, "/v1/rooms/annex/components", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    wait_component(&server, "annex", &id, "running").await;
    let (listener, pcm) = phone_voice(&server, "annex", "remote").await;
    listener.close().await;
    assert_tone(&pcm, 1, 48_000, 770.0, 2.0);

    let missing = json!({"type": "file", "url": format!("https://127.0.0.1:{port}/gone.mp3"), "identity": "gone"});
    let (status, created) = server.call(Method::POST, "/v1/rooms/annex/components", Some(missing)).await;
    assert_eq!(status, 201, "{created}");
    let failed = wait_component(&server, "annex", created["id"].as_str().unwrap(), "failed").await;
    assert!(failed["reason"].as_str().unwrap_or_default().contains("404"), "{failed}");
    server.call(Method::DELETE, &format!("/v1/rooms/annex/components/{id}"), None).await;
    server.wait_for_no_peers().await;
}

/// GStreamer's RTSP server as an IP camera on `port` (see support/rtsp_camera.py); killed on drop.
async fn camera(port: u16, freq: u32) -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/e2e/support/rtsp_camera.py");
    let child = tokio::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([port.to_string(), freq.to_string()])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 with gir1.2-gst-rtsp-server-1.0");
    eventually("the camera listening", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    child
}

/// Decoded pictures a WHEP viewer of `identity` gets in `seconds`.
pub(crate) async fn decoded_pictures(server: &TestServer, room: &str, identity: &str, seconds: u64) -> usize {
    let token = server.token(room, "watcher", json!({"publish": false, "subscribe": true})).await;
    let query = format!("?identity={identity}");
    let mut viewer = WhepViewer::connect(&server.base, room, &token, &query, ClientOptions::new(&[ClientCodec::H264]))
        .await
        .expect("WHEP viewer");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < deadline {
        if let Some(frame) = viewer.next_frame_of(MediaKind::Video, Duration::from_secs(2)).await {
            received.extend_from_slice(&frame.payload);
        }
    }
    viewer.close().await;
    let file = server.dir().join(format!("{identity}-{}.h264", received.len()));
    std::fs::write(&file, &received).unwrap();
    frame_md5s(&file).await.len()
}

#[tokio::test]
async fn an_rtsp_camera_reaches_a_viewer_and_a_phone_and_comes_back_after_it_restarts() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestServer::start_with(OPEN_DIAL_IN, &[]).await;
    let dir = server.dir().to_path_buf();
    let port = free_port();
    let cam = camera(port, 550).await;

    let body = json!({"type": "rtsp", "url": format!("rtsp://127.0.0.1:{port}/cam"), "identity": "camera"});
    let bad = json!({"type": "rtsp", "url": "http://127.0.0.1/cam", "identity": "camera"});
    let (status, error) = server.call(Method::POST, "/v1/rooms/gate/components", Some(bad)).await;
    assert_eq!(status, 422, "{error}");
    let (status, created) = server.call(Method::POST, "/v1/rooms/gate/components", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    wait_component(&server, "gate", &id, "running").await;

    // A WHEP viewer decodes the camera's H.264; a phone hears its 550 Hz G.711 through the mix,
    // and the viewer's Opus (transcoded from G.711) carries it too.
    let ears = RtpRecorder::start().await;
    let phone = Sipp::start(
        &dir,
        "guard",
        &pcmu_call("guard", ears.port, String::new(), 4500),
        &uac_args(&server, "gate", &[]),
    );
    let pictures = decoded_pictures(&server, "gate", "camera", 3).await;
    assert!(pictures >= 50, "{pictures} pictures decoded in 3 s");
    let (viewer, pcm) = phone_voice(&server, "gate", "camera").await;
    assert_tone(&pcm, 1, 48_000, 550.0, 2.0);
    viewer.close().await;
    phone.finish().await.assert_ok("guard");
    assert!((dominant_hz(&heard(&ears)) - 550.0).abs() <= 5.0, "the phone hears the camera");

    // The camera restarts: the component says it reconnects, then media flows again.
    drop(cam);
    let waiting = wait_component(&server, "gate", &id, "starting").await;
    assert!(waiting["reason"].as_str().unwrap_or_default().starts_with("reconnecting"), "{waiting}");
    let _cam = camera(port, 550).await;
    wait_component(&server, "gate", &id, "running").await;
    let pictures = decoded_pictures(&server, "gate", "camera", 3).await;
    assert!(pictures >= 50, "{pictures} pictures decoded in 3 s after the camera came back");

    let (status, _) = server.call(Method::DELETE, &format!("/v1/rooms/gate/components/{id}"), None).await;
    assert_eq!(status, 204);
    server.wait_for_no_peers().await;
}
