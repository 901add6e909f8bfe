//! SRT ingest end to end. Real ffmpeg (libsrt inside) pushes `testsrc` + a 660 Hz sine as
//! H.264 (High, B-frames) and AAC in MPEG-TS to the URL `POST /v1/ingress {"kind": "srt"}`
//! hands out. A WHEP viewer (the `webrtc` crate) decodes its pictures (ffmpeg) and its audio
//! (Opus, transcoded from the AAC: the tone); real ffmpeg plays the peer back over RTMP, and
//! ffprobe and ffmpeg's decoders check codecs, timestamps, decoded pictures, audio/video
//! alignment and the tone. Refusals are
//! checked the way an encoder sees them: libsrt's connect fails at the handshake with SRT's
//! reject code, and nobody joins the room.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::components::decoded_pictures;
use crate::rtmp::{TONE_HZ, check_playback, ffmpeg_pull, ffmpeg_push_as, finish};
use crate::sip::phone_voice;
use crate::support::audio::OpusToPcm;
use crate::support::audio::assert_tone;
use crate::support::webrtc_client::{ClientOptions, MediaKind, SenderReportSeen, WhepViewer};
use crate::support::{TestServer, eventually};

const PUSH_SECONDS: u32 = 10;
const PLAY_SECONDS: u32 = 4;
const PASSPHRASE: &str = "correct-horse-battery";

/// Creates an ingress of `kind`; returns (stream key, encoder URL).
async fn ingress(server: &TestServer, kind: &str, room: &str, identity: &str) -> (String, String) {
    let body = json!({"kind": kind, "room": room, "identity": identity});
    let (status, value) = server.call(Method::POST, "/v1/ingress", Some(body)).await;
    assert_eq!(status, 201, "{value}");
    (value["stream_key"].as_str().unwrap().to_owned(), value["url"].as_str().unwrap().to_owned())
}

/// ffmpeg pushing the test pattern and tone as MPEG-TS over SRT (B-frames as OBS's x264 sends).
fn ffmpeg_srt_push(url: &str, seconds: u32) -> Child {
    ffmpeg_push_as(url, seconds, "mpegts")
}

/// Pushes for a second; returns whether ffmpeg got through and what it said.
async fn try_push(url: &str) -> (bool, String) {
    finish(ffmpeg_srt_push(url, 1), Duration::from_secs(30)).await
}

async fn peer(server: &TestServer, room: &str, identity: &str) -> Option<Value> {
    let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    body["peers"].as_array()?.iter().find(|p| p["identity"] == identity).cloned()
}

async fn with_two_tracks(server: &TestServer, room: &str, identity: &str) -> Value {
    eventually("the encoder's two tracks", Duration::from_secs(20), || async {
        peer(server, room, identity).await.filter(|p| p["tracks"].as_array().is_some_and(|t| t.len() == 2))
    })
    .await
}

/// The counter `junction_srt_refused_total{reason}` from /metrics.
async fn refused(server: &TestServer, reason: &str) -> f64 {
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find(|l| l.starts_with("junction_srt_refused_total") && l.contains(&format!("reason=\"{reason}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ffmpeg_over_srt_reaches_an_rtmp_viewer_as_h264_and_aac_in_step() {
    let server = TestServer::start().await;
    let srt = server.service("srt").to_owned();
    let rtmp = server.service("rtmp").to_owned();
    let (key, url) = ingress(&server, "srt", "stage", "encoder").await;
    assert_eq!(url, format!("{srt}?streamid={key}"), "the ingress URL is complete: the key is the stream id");

    // An encrypting encoder is refused by a server without a passphrase, before any stream.
    let (pushed, said) = try_push(&format!("{url}&passphrase={PASSPHRASE}")).await;
    assert!(!pushed, "an encrypted stream to a plain listener is refused");
    assert!(said.contains("Password required or unexpected"), "libsrt hears SRT_REJ_UNSECURE: {said}");
    assert_eq!(refused(&server, "unexpected_passphrase").await, 1.0);

    let token = server.token("stage", "rtmp-viewer", json!({"publish": false, "subscribe": true})).await;
    let out = server.dir().join("playback.flv");
    let player = ffmpeg_pull(&format!("{rtmp}/stage/encoder?token={token}"), PLAY_SECONDS, &out);
    eventually("the player in the room", Duration::from_secs(10), || async {
        peer(&server, "stage", "rtmp-viewer").await.map(|_| ())
    })
    .await;
    let publisher = ffmpeg_srt_push(&url, PUSH_SECONDS);

    let encoder = with_two_tracks(&server, "stage", "encoder").await;
    assert_eq!(encoder["transport"], "srt");
    let tracks = encoder["tracks"].as_array().unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").expect("video track");
    let audio = tracks.iter().find(|t| t["kind"] == "audio").expect("audio track");
    assert_eq!(video["codec"], "h264");
    let fmtp = video["params"]["fmtp"].as_str().unwrap();
    assert!(fmtp.starts_with("profile-level-id=64") && fmtp.ends_with(";packetization-mode=1"), "High profile: {fmtp}");
    assert_eq!((audio["codec"].as_str(), audio["params"]["clock_rate"].as_u64()), (Some("aac"), Some(44_100)));
    assert_eq!(audio["params"]["channels"], 1, "lavfi's sine is mono");

    // WHEP viewers: one decodes the pictures, one the audio (Opus from the engine's AAC variant).
    let (pictures, (listener, pcm)) =
        tokio::join!(decoded_pictures(&server, "stage", "encoder", 3), phone_voice(&server, "stage", "encoder"));
    listener.close().await;
    assert!(pictures >= 60, "{pictures} distinct pictures decoded by the WHEP viewer in 3 s (30 fps testsrc)");
    assert_tone(&pcm, 1, 48_000, TONE_HZ, 2.0);

    let (played, stderr) = finish(player, Duration::from_secs(40)).await;
    assert!(played, "ffmpeg could not play: {stderr}");
    let (pushed, stderr) = finish(publisher, Duration::from_secs(40)).await;
    assert!(pushed, "ffmpeg could not push over SRT: {stderr}");

    // Audio and video keep the encoder's alignment: the player's clocks start within a frame
    // or two of each other, as the transport stream stamped them.
    let av_offset_ms = check_playback(&out, PLAY_SECONDS).await;
    println!("SRT -> RTMP: first audio {av_offset_ms} ms after first video");
    assert!(av_offset_ms.abs() < 500, "audio and video {av_offset_ms} ms apart");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn bad_stream_ids_and_passphrases_are_refused_at_the_handshake_and_garbage_costs_nothing() {
    let server = TestServer::start_with(&format!("[srt]\npassphrase = {PASSPHRASE:?}\n"), &[]).await;
    let srt = server.service("srt").to_owned();
    let (key, url) = ingress(&server, "srt", "stage", "encoder").await;
    let (rtmp_key, _) = ingress(&server, "rtmp", "stage", "obs").await;
    let secret = format!("passphrase={PASSPHRASE}");

    // Garbage and truncated packets at the SRT port first: they are dropped, nothing else.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = srt.trim_start_matches("srt://");
    for i in 0..2000u32 {
        let mut datagram = i.to_be_bytes().repeat(1 + (i % 64) as usize);
        datagram[0] |= 0x80; // a control packet
        socket.send_to(&datagram, target).await.unwrap();
    }

    let refusals = [
        (format!("{srt}?streamid=sk_not_a_key&{secret}"), "an unknown stream key"),
        (format!("{srt}?streamid={rtmp_key}&{secret}"), "an RTMP ingress's key"),
        (format!("{srt}?streamid=#!::r={key},m=request&{secret}"), "a request to play"),
        (url.clone(), "no passphrase"),
        (format!("{url}&passphrase=wrong-horse-battery"), "a wrong passphrase"),
    ];
    for (refused_url, what) in &refusals {
        let (pushed, said) = try_push(refused_url).await;
        assert!(!pushed, "{what} is refused");
        assert!(said.contains("Connection") || said.contains("rror"), "{what}: ffmpeg says {said}");
        assert!(peer(&server, "stage", "encoder").await.is_none(), "{what}: nobody joined");
    }
    assert_eq!(refused(&server, "unauthorized").await, 2.0);
    assert_eq!(refused(&server, "bad_mode").await, 1.0);
    assert_eq!(refused(&server, "passphrase_missing").await, 1.0);
    let logs = server.logs();
    assert!(logs.contains("password required or unexpected"), "no passphrase: SRT_REJ_UNSECURE");
    assert!(logs.contains("wrong password"), "a wrong passphrase: SRT_REJ_BADSECRET");
    assert!(logs.contains("SRT handshake refused") && logs.matches("SRT handshake refused").count() >= 5);

    // The right passphrase with the encoder's own key length (AES-256; ours is AES-128) publishes.
    let publisher = ffmpeg_srt_push(&format!("{url}&{secret}&pbkeylen=32"), 30);
    let encoder = with_two_tracks(&server, "stage", "encoder").await;
    assert_eq!(encoder["transport"], "srt");

    // Deleting the ingress ends the stream that uses it.
    let ingresses = server.call(Method::GET, "/v1/ingress", None).await.1;
    let id = ingresses["ingress"].as_array().unwrap().iter().find(|i| i["kind"] == "srt").unwrap()["id"].clone();
    let (status, _) = server.call(Method::DELETE, &format!("/v1/ingress/{}", id.as_str().unwrap()), None).await;
    assert_eq!(status, 204);
    eventually("the encoder gone", Duration::from_secs(10), || async {
        peer(&server, "stage", "encoder").await.is_none().then_some(())
    })
    .await;
    let (pushed, _) = finish(publisher, Duration::from_secs(40)).await;
    assert!(!pushed, "ffmpeg's stream was closed under it");
    server.wait_for_no_peers().await;
}

/// The sender's time (seconds, NTP) of an RTP timestamp of `ssrc`, through the last sender
/// report of that stream that maps anything — as a receiver synchronises streams.
fn sender_time(reports: &[SenderReportSeen], ssrc: u32, rtp_timestamp: u32, clock_rate: u32) -> Option<f64> {
    let report = reports.iter().rev().find(|r| r.ssrc == ssrc && r.packet_count > 0)?;
    let since = f64::from(rtp_timestamp.wrapping_sub(report.rtp_time) as i32) / f64::from(clock_rate);
    Some(report.ntp_seconds() + since)
}

/// Lip sync through a transport stream. ffmpeg's TS muxer sends audio up to 0.7 s after the
/// video of the same time (435 ms measured with its defaults); a WHEP viewer lines streams up by
/// their RTCP sender reports, which come from each frame's `arrival`, so the ingest stamps frames
/// with the instant their media time reached the server (transports/srt/src/ingest.rs). Checked
/// with content: a white flash and a 1 kHz beep start together every second at the source; at
/// the viewer the flash frames (decoded by ffmpeg, mean luma) and the beep onsets (decoded
/// Opus) are placed on the sender's clock through the sender reports, and they must coincide
/// within 40 ms, the bar WHEP viewers of RTMP publishers are held to (whep_rtmp.rs).
#[tokio::test]
async fn a_whep_viewer_of_an_srt_publisher_gets_flash_and_beep_together() {
    let server = TestServer::start().await;
    let (_, url) = ingress(&server, "srt", "sync", "encoder").await;
    let token = server.token("sync", "viewer", json!({"subscribe": true, "publish": false})).await;
    let mut viewer =
        WhepViewer::connect(&server.base, "sync", &token, "", ClientOptions::h264_opus()).await.expect("WHEP view");
    let publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i"])
        .arg("color=c=black:s=320x240:r=30,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.1)'")
        .args(["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000,volume=volume=0:enable='gte(mod(t,1),0.1)'"])
        .args(["-t", "7", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-bf", "0", "-g", "30"])
        .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-f", "mpegts", &url])
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg");
    let mut frames = Vec::new();
    while let Some(frame) = viewer.next_frame(Duration::from_secs(8)).await {
        frames.push(frame);
        if frames.len() > 800 {
            break;
        }
    }
    drop(publisher);
    let reports = viewer.sender_reports();

    // Flashes: the sender time of each video frame whose picture turns white.
    let video: Vec<_> = frames.iter().filter(|f| f.kind() == MediaKind::Video).collect();
    let stream: Vec<u8> = video.iter().flat_map(|f| f.payload.iter().copied()).collect();
    let file = server.dir().join("sync.h264");
    std::fs::write(&file, &stream).unwrap();
    let decoded = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&file)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-s", "320x240", "-"])
        .output()
        .await
        .expect("ffmpeg decodes");
    let lumas: Vec<f64> = decoded
        .stdout
        .chunks(320 * 240)
        .map(|p| p.iter().map(|v| f64::from(*v)).sum::<f64>() / p.len() as f64)
        .collect();
    assert_eq!(lumas.len(), video.len(), "every access unit decodes to one picture");
    let flashes: Vec<f64> = (1..lumas.len())
        .filter(|&i| lumas[i] > 128.0 && lumas[i - 1] <= 128.0)
        .filter_map(|i| sender_time(&reports, video[i].ssrc, video[i].rtp_timestamp, 90_000))
        .collect();

    // Beeps: the sender time of each Opus packet where the tone starts.
    let audio: Vec<_> = frames.iter().filter(|f| f.kind() == MediaKind::Audio).collect();
    let mut decoder = OpusToPcm::new(1);
    let mut loud_before = false;
    let mut beeps = Vec::new();
    for packet in &audio {
        let mut pcm = Vec::new();
        decoder.decode(&packet.payload, &mut pcm).expect("Opus decodes");
        let rms = (pcm.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / pcm.len().max(1) as f64).sqrt();
        // The onset inside the packet: the first sample well above silence.
        let onset = pcm.iter().position(|s| s.unsigned_abs() > 2000).unwrap_or(0) as f64 / 48_000.0;
        let loud = rms > 1000.0;
        if loud
            && !loud_before
            && let Some(time) = sender_time(&reports, packet.ssrc, packet.rtp_timestamp, 48_000)
        {
            beeps.push(time + onset);
        }
        loud_before = loud;
    }
    assert!(flashes.len() >= 4 && beeps.len() >= 4, "flashes {flashes:?}, beeps {beeps:?}");
    let mut offsets: Vec<f64> = flashes
        .iter()
        .filter_map(|flash| beeps.iter().map(|beep| (beep - flash) * 1000.0).find(|ms| ms.abs() < 500.0))
        .collect();
    offsets.sort_by(f64::total_cmp);
    assert!(offsets.len() >= 4, "flashes {flashes:?} and beeps {beeps:?} pair up");
    let median = offsets[offsets.len() / 2];
    println!("SRT -> WHEP: beep minus flash on the sender's clock {median:+.1} ms (all: {offsets:.0?})");
    assert!(median.abs() <= 40.0, "audio and video {median:+.1} ms apart for the viewer");
    let _ = viewer.delete().await;
    server.wait_for_no_peers().await;
}
