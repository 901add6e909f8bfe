//! RTMP meets WebRTC with real clients on both sides: ffmpeg pulls, over RTMP playback, what an
//! independent WebRTC stack (the `webrtc` crate) publishes over WHIP — libx264's H.264 as sent and
//! a libopus tone as AAC through the engine's Opus->AAC variant — and real Chromium plays an
//! ffmpeg RTMP ingest through the `/whep.html` page. (RTMP into a WHEP viewer of the `webrtc`
//! crate is `whep_rtmp`.)

use std::time::Duration;

use bytes::Bytes;
use junction_audio::codec::tone;
use serde_json::{Value, json};

use crate::rtmp::{ffmpeg_pull, ffmpeg_push_sources, ffprobe, finish, ingress, numbers};
use crate::support::audio::decode_file_audio;
use crate::support::webrtc_client::{ClientOptions, WhipPublisher};
use crate::support::{TestServer, chromium, eventually, lipsync, x264};

pub(crate) const TONE_HZ: f64 = 880.0;
pub(crate) const FPS: u32 = 30;

/// The test pattern at [`FPS`], white during the first half of every second (with the tone of
/// [`publish`]).
pub(crate) fn flashing() -> String {
    format!("testsrc=size=320x240:rate={FPS},drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.5)'")
}

/// Publishes `video` at 30 fps and a libopus `TONE_HZ` tone in 20 ms packets, in real time; the
/// tone sounds during the first half of every second, when the video (lipsync's flash) is white.
pub(crate) async fn publish(publisher: &WhipPublisher, video: &[Bytes]) {
    let mut encoder = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Audio).expect("opus");
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let frame = Duration::from_micros(1_000_000 / u64::from(FPS));
    let (mut audio_sent, mut video_sent) = (0usize, 0usize);
    for tick in 0usize.. {
        ticker.tick().await;
        let now_ms = tick * 10;
        if video_sent >= video.len() {
            break;
        }
        while audio_sent * 20 <= now_ms {
            let pcm: Vec<i16> = (0..960)
                .map(|i| {
                    let t = (audio_sent * 960 + i) as f64 / 48_000.0;
                    let gate = if t.fract() < 0.5 { 8_000.0 } else { 0.0 };
                    (gate * (std::f64::consts::TAU * TONE_HZ * t).sin()) as i16
                })
                .collect();
            let packet = encoder.encode_vec(&pcm, 4_000).expect("encode");
            publisher.send_audio(Bytes::from(packet), Duration::from_millis(20)).await.expect("send audio");
            audio_sent += 1;
        }
        while video_sent < video.len() && video_sent * 1000 / FPS as usize <= now_ms {
            publisher.send_video(video[video_sent].clone(), frame).await.expect("send video");
            video_sent += 1;
        }
    }
}

#[tokio::test]
async fn ffmpeg_plays_a_whip_publisher_over_rtmp_as_h264_and_aac() {
    const PLAY_SECONDS: u32 = 3;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (_, video) = x264::baseline_access_units_of(server.dir(), "pattern", &flashing(), 6, FPS).await;
    assert_eq!(video.len(), 6 * FPS as usize);

    let viewer_token = server.token("bridge", "rtmp-player", json!({"publish": false, "subscribe": true})).await;
    let out = server.dir().join("whip-playback.flv");
    let player = ffmpeg_pull(&format!("{rtmp}/bridge/camera?token={viewer_token}"), PLAY_SECONDS, &out);
    let token = server.token("bridge", "camera", json!({"publish": true, "subscribe": false})).await;
    let publisher = WhipPublisher::connect(&server.base, "bridge", &token, ClientOptions::h264_opus())
        .await
        .expect("WHIP publisher");
    let (_, (played, stderr)) = tokio::join!(publish(&publisher, &video), finish(player, Duration::from_secs(40)));
    assert!(played, "ffmpeg could not play the WHIP publisher: {stderr}");

    let probe = ffprobe(
        &out,
        &[
            "-show_entries",
            "stream=codec_type,codec_name,width,height,sample_rate:format=duration",
            "-show_entries",
            "packet=codec_type,pts,dts,flags",
        ],
    )
    .await;
    let streams = probe["streams"].as_array().expect("streams");
    let kind = |k: &str| streams.iter().find(|s| s["codec_type"] == k).cloned().unwrap_or(Value::Null);
    let (video_stream, audio_stream) = (kind("video"), kind("audio"));
    assert_eq!(video_stream["codec_name"], "h264", "{probe}");
    assert_eq!((video_stream["width"].as_u64(), video_stream["height"].as_u64()), (Some(320), Some(240)));
    assert_eq!(audio_stream["codec_name"], "aac", "the Opus reaches RTMP as AAC: {probe}");
    let duration: f64 = probe["format"]["duration"].as_str().unwrap_or("0").parse().unwrap();
    assert!((f64::from(PLAY_SECONDS) - 0.5..f64::from(PLAY_SECONDS) + 0.75).contains(&duration), "duration {duration}");
    let packets = probe["packets"].as_array().expect("packets");
    let video_dts = numbers(packets, "video", "dts");
    assert!(video_dts.windows(2).all(|w| w[0] < w[1]), "video decode times increase: {video_dts:?}");
    let first = packets.iter().find(|p| p["codec_type"] == "video").expect("a video packet");
    assert!(first["flags"].as_str().unwrap_or("").starts_with('K'), "playback starts at a keyframe: {first}");
    let audio_pts = numbers(packets, "audio", "pts");
    assert!(audio_pts.windows(2).all(|w| w[0] < w[1]), "audio times increase");

    let counted =
        ffprobe(&out, &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]).await;
    let decoded: u32 = counted["streams"][0]["nb_read_frames"].as_str().unwrap_or("0").parse().unwrap();
    assert!(decoded >= (PLAY_SECONDS - 1) * FPS, "{decoded} pictures decoded");
    assert_eq!(decoded as usize, video_dts.len(), "every video packet decodes to a picture");

    let samples = decode_file_audio(&out, 16_000).await;
    let found = tone::dominant_frequency_i16(&samples, 1, 16_000).expect("audible audio");
    assert!((found - TONE_HZ).abs() <= 3.0, "the WHIP publisher's tone, found {found} Hz");
    let sync = lipsync::assert_recording_sync(&out, "RTMP player").await;
    println!("WHIP -> RTMP: {decoded} pictures, {:.2} s, tone {found:.1} Hz, beep {sync:+.0} ms from flash", duration);

    assert_eq!(publisher.delete().await.expect("DELETE"), 200);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn chromium_plays_an_rtmp_ingest_through_whep_html() {
    let server = TestServer::start().await;
    let (key, url) = ingress(&server, "broadcast", "obs").await;
    let mut ffmpeg = ffmpeg_push_sources(
        &format!("{url}/{key}"),
        "testsrc=size=640x360:rate=30",
        &format!("sine=frequency={TONE_HZ}:sample_rate=48000"),
        90,
        &["-tune", "zerolatency", "-g", "30"],
    );
    eventually("the RTMP publisher's two tracks", Duration::from_secs(20), || async {
        let (_, body) = server.call(reqwest::Method::GET, "/v1/rooms/broadcast/peers", None).await;
        let peers = body["peers"].as_array()?.clone();
        peers
            .iter()
            .any(|p| p["identity"] == "obs" && p["tracks"].as_array().is_some_and(|t| t.len() == 2))
            .then_some(())
    })
    .await;

    let view_token = server.token("broadcast", "browser", json!({"publish": false, "subscribe": true})).await;
    let result =
        chromium::run("whip_whep.mjs", json!({"base": server.base, "room": "broadcast", "viewToken": view_token}))
            .await;
    let stat = |round: &str, kind: &str| {
        result[round].as_array().and_then(|s| s.iter().find(|r| r["kind"] == kind)).cloned().unwrap_or(Value::Null)
    };
    let (before, after) = (stat("first", "video"), stat("second", "video"));
    let decoded = (before["framesDecoded"].as_u64().unwrap_or(0), after["framesDecoded"].as_u64().unwrap_or(0));
    assert!(decoded.0 > 0 && decoded.1 > decoded.0 + 10, "Chromium keeps decoding the RTMP video: {result}");
    assert_eq!(after["codec"], "video/H264", "{result}");
    assert_eq!((after["frameWidth"].as_u64(), after["frameHeight"].as_u64()), (Some(640), Some(360)));
    let audio = (stat("first", "audio")["packets"].as_u64(), stat("second", "audio")["packets"].as_u64());
    assert!(matches!(audio, (Some(a), Some(b)) if b > a), "Chromium receives the audio track: {result}");
    assert_eq!(stat("second", "audio")["codec"], "audio/opus", "AAC reaches the browser as Opus");
    println!("RTMP -> Chromium: {} -> {} frames decoded in 2 s", decoded.0, decoded.1);

    let _ = ffmpeg.kill().await;
    server.wait_for_no_peers().await;
}
